#!/usr/bin/python3
"""The soak's RSS-under-load check (tools/soak/soak_rss.py) on made-up 1-second samples: a leaking
server must fail it, whatever its warm-up reached; a flat one must pass it, also when the steady
load's batches are bigger than the warm-up's (or smaller).
Usage: soak_rss_test.py SOURCE_DIR
"""
import os
import random
import sys
import unittest

SOURCE = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("REFORMER_SOURCE_DIR", ".")
sys.path.insert(0, os.path.join(SOURCE, "tools", "soak"))

import soak_proc  # noqa: E402
import soak_rss  # noqa: E402

MiB = 2**20


def series(t0, seconds, base_mib, leak_mib_per_s=0.0, peaks=(), seed=1):
    """1-second samples: `base_mib` with +-3 MiB noise, a leak, and (second, +MiB) spikes of batches."""
    rng = random.Random(seed)
    spikes = dict(peaks)
    return [(t0 + i, int((base_mib + rng.uniform(-3, 3) + leak_mib_per_s * i + spikes.get(i, 0)) * MiB))
            for i in range(seconds)]


class RssFlatTest(unittest.TestCase):
    def test_flat_server_passes(self):
        warm = series(0, 15, 200, peaks=[(5, 40)])
        steady = series(15, 45, 200, peaks=[(3, 30), (20, 35), (40, 35)])
        peak_ok, drift_ok, _, f = soak_rss.rss_flat(warm, steady, 0.10)
        self.assertTrue(peak_ok and drift_ok, f)

    def test_steady_batches_above_the_warmups_pass(self):
        # A batching policy whose steady batches are bigger than anything the warm-up formed (the
        # warm-up's peak 205 MiB, steady peaks 240-250 MiB all through): no growth, so no failure.
        warm = series(0, 15, 200)
        steady = series(15, 45, 200, peaks=[(2, 40), (12, 45), (25, 50), (41, 48)])
        peak_ok, drift_ok, _, f = soak_rss.rss_flat(warm, steady, 0.10)
        self.assertTrue(peak_ok and drift_ok, f)
        self.assertGreater(f["last_third_peak"], 1.10 * f["warmup_peak"])  # the old check would fail

    def test_leaking_server_fails(self):
        # 1 MiB per second on 200 MiB: +30 MiB over the last two thirds of a 45-second steady load.
        warm = series(0, 15, 200, peaks=[(5, 20)])
        steady = series(15, 45, 200, leak_mib_per_s=1.0)
        peak_ok, drift_ok, enforced, f = soak_rss.rss_flat(warm, steady, 0.10)
        self.assertFalse(peak_ok, f)
        self.assertFalse(enforced)  # 45 s: the median check is information only
        self.assertGreater(f["slope_mib_per_min"], 50)

    def test_slow_leak_over_a_long_run_fails(self):
        # 30 minutes: 0.05 MiB/s (3 MiB a minute) on 300 MiB is +56 MiB between the first and last
        # thirds. The warm-up's burst (+60 MiB) hides it from the peak comparison; the medians show it.
        warm = series(0, 120, 300, peaks=[(10, 60)])
        steady = series(120, 1680, 300, leak_mib_per_s=0.05, peaks=[(100, 20), (900, 20)])
        peak_ok, drift_ok, enforced, f = soak_rss.rss_flat(warm, steady, 0.10)
        self.assertTrue(peak_ok, f)
        self.assertTrue(enforced)
        self.assertFalse(drift_ok, f)

    def test_flat_long_run_with_spiky_thirds_passes(self):
        # 30 minutes flat, the biggest batches only in the last third: the peak stays under the
        # warm-up's burst and the medians do not move.
        warm = series(0, 120, 300, peaks=[(10, 60)])
        steady = series(120, 1680, 300, peaks=[(1200 + 7 * i, 45) for i in range(40)])
        peak_ok, drift_ok, enforced, f = soak_rss.rss_flat(warm, steady, 0.10)
        self.assertTrue(peak_ok and drift_ok and enforced, f)

    def test_leak_hidden_under_a_warmup_spike_fails(self):
        # The warm-up's spike is the reference, the leak must outgrow it by 10 %: it does here.
        warm = series(0, 15, 200, peaks=[(5, 30)])
        steady = series(15, 45, 200, leak_mib_per_s=2.0)
        self.assertFalse(soak_rss.rss_flat(warm, steady, 0.10)[0])
        self.assertFalse(soak_rss.rss_flat(warm, steady, 0.10)[1])

    def test_no_samples_fail(self):
        for warm, steady in (([], []), (series(0, 5, 100), [])):
            peak_ok, drift_ok, _, _ = soak_rss.rss_flat(warm, steady, 0.10)
            self.assertFalse(peak_ok or drift_ok)

    def test_thirds_split_by_time(self):
        first, middle, last = soak_rss.thirds([(t, t) for t in range(9)])
        self.assertEqual([t for t, _ in first], [0, 1, 2])
        self.assertEqual([t for t, _ in middle], [3, 4, 5])
        self.assertEqual([t for t, _ in last], [6, 7, 8])


class MallocStatsTest(unittest.TestCase):
    """--malloc_stats reads the totals of glibc's malloc_stats() printout back from the server log."""

    def test_totals_of_the_last_printout(self):
        text = ("Arena 0:\nsystem bytes     =    1372160\nin use bytes     =     667296\n"
                "Arena 1:\nsystem bytes     =   20312064\nin use bytes     =    1730736\n"
                "Total (incl. mmap):\nsystem bytes     =   21684224\nin use bytes     =    2398032\n"
                "max mmap regions =          3\nmax mmap bytes   =   14655488\n")
        self.assertEqual(soak_proc.parse_malloc_stats(text),
                         {"system": 21684224, "in_use": 2398032, "mmap_regions_max": 3,
                          "mmap_bytes_max": 14655488, "arenas": 2})

    def test_nothing_printed(self):
        self.assertEqual(soak_proc.parse_malloc_stats("I server: ready\n"), {})


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
