// The oneDNN f32 matmul probe the benchmarks set their figures against (docs/engine-numerics.md
// §12): pre-packed weights, M x 1024 x 1024, one warm-up call (primitive creation), then `iters`
// timed calls on the calling thread's OpenMP team. Its buffers live for one call only, so they do
// not add to a model's peak RSS.
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

#include "engine/dnnl/matmul.h"

namespace reformer::bench {

// CPU time of the process (all threads): on a shared machine wall time includes waiting for a core.
inline double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct ProbeRate {
  double wall = 0;  // GFLOP per wall-clock second
  double cpu = 0;   // GFLOP per CPU-second of the process
};

inline ProbeRate MatmulProbe(DnnlContext* ctx, int64_t m, int iters) {
  const int64_t K = 1024, N = 1024;
  std::vector<float> a(m * K), w(N * K), c(m * N);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& x : a) x = u(rng);
  for (float& x : w) x = u(rng);
  const PackedWeight pw = PackedWeight::FromLinear(w.data(), K, 0, 0, K, N);
  MatmulCall mc;
  mc.With(pw);
  mc.m = m;
  mc.src = a.data();
  mc.lda = K;
  mc.dst = c.data();
  mc.ldc = N;
  (void)ctx->Matmul(mc);
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = ProcessCpuSeconds();
  for (int i = 0; i < iters; ++i) (void)ctx->Matmul(mc);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cs = ProcessCpuSeconds() - c0;
  const double gflop = 2.0 * m * K * N * iters / 1e9;
  return {gflop / s, gflop / cs};
}

}  // namespace reformer::bench
