"""The RSS-under-load check: the server's RSS must not grow over the steady load (README.md, "Resources").

Two comparisons of the steady load's last third with what came before it (rss_flat): its peak with
the highest RSS before it -- the warm-up (which sends the largest requests at once) and the first
third (the batch shapes the scheduler actually forms from steady traffic, and the allocator's arenas
sized for them) -- and its median with the first third's median. Each within +growth. Why not the warm-up's peak alone: which batches the scheduler
forms depends on its flags (e.g. --batch_fill_tokens bounds batches of several documents), so no
fixed warm-up is sure to reach the largest working set steady traffic can form; a reference that
depends on the batching policy is no reference. Growth between the first and the last third is what
a leak produces whatever the policy: memory kept per request grows with the requests served, so the
last third exceeds the first by the leak's rate times two thirds of the steady time.

Pure functions only (no I/O): tests/soak/soak_rss_test.py checks them, including that a leaking
series fails.
"""


def thirds(points):
    """Splits (time, rss) points, in time order, into the first, middle and last third by time."""
    if not points:
        return [], [], []
    t0, t1 = points[0][0], points[-1][0]
    a, b = t0 + (t1 - t0) / 3, t0 + 2 * (t1 - t0) / 3
    return ([p for p in points if p[0] < a], [p for p in points if a <= p[0] < b],
            [p for p in points if p[0] >= b])


DRIFT_MIN_STEADY_S = 600  # the median check needs thirds of minutes (see rss_flat)


def median(values):
    v = sorted(values)
    return 0 if not v else v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def rss_flat(warmup, steady, growth):
    """Whether the RSS stayed flat over the steady load: (peak_ok, drift_ok, drift_enforced, figures).

    warmup, steady: (time, rss bytes) samples of the warm-up and of the steady load, in time order.
    - peak: the last third's peak within +growth of the highest RSS before it (warm-up, first third).
      A warm-up spike raises this reference, so a slow leak can hide under it for a while;
    - drift: the last third's median within +growth of the first third's. Medians ignore the spikes
      of the biggest batches, so a leak shows whatever the warm-up reached. Under load a third's
      median moves with which requests happened to run (a 16K-token batch holds ~100 MiB for
      seconds), so this is enforced only when each third lasts minutes (DRIFT_MIN_STEADY_S).
    figures: the parts of both, the limits and the slope of the steady samples in MiB per minute."""
    first, middle, last = thirds(steady)
    warm_peak = max((v for _, v in warmup), default=0)
    first_peak = max((v for _, v in first), default=0)
    ref = max(warm_peak, first_peak)
    last_peak = max((v for _, v in last), default=0)
    first_med, last_med = median([v for _, v in first]), median([v for _, v in last])
    figures = {"warmup_peak": warm_peak, "first_third_peak": first_peak, "reference": ref,
               "middle_third_peak": max((v for _, v in middle), default=0), "last_third_peak": last_peak,
               "steady_peak": max((v for _, v in steady), default=0), "limit": (1 + growth) * ref,
               "first_third_median": first_med, "last_third_median": last_med,
               "median_limit": (1 + growth) * first_med, "slope_mib_per_min": slope(steady)}
    peak_ok = ref > 0 and bool(last) and last_peak <= figures["limit"]
    drift_ok = first_med > 0 and bool(last) and last_med <= figures["median_limit"]
    enforced = bool(steady) and steady[-1][0] - steady[0][0] >= DRIFT_MIN_STEADY_S
    return peak_ok, drift_ok, enforced, figures


def slope(points):
    """Least-squares slope of (time s, bytes) points in MiB per minute (0 with fewer than 2 points)."""
    if len(points) < 2:
        return 0.0
    t0 = points[0][0]
    xs, ys = [t - t0 for t, _ in points], [v / 2**20 for _, v in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var
