// reformer_bench: scoring throughput of a random-weight Reformer of a published shape, next to
// oneDNN's f32 matmul rate measured in the same process, interleaved with the model runs (the
// machine's speed drifts, so the per-round ratio is the figure that counts).
//
//   reformer_bench --case enwik8 --tokens 16384 [--threads 2] [--rounds 3] [--tile 4096]
//                  [--budget-mib 256] [--max-seconds S] [--json]
//   reformer_bench --probe [--threads 2] [--rounds 3]   (the matmul probe alone: one line of JSON;
//                  tools/bench/forward_bench.py runs it around each `reformer-cli forward`)
//
// Cases: enwik8 (google/reformer-enwik8 shape), cp (google/reformer-crime-and-punishment shape).
// Output: per round model seconds, tokens/s, achieved GFLOP/s (FLOP/token of
// docs/engine-numerics.md §12.1), matmul GFLOP/s (M=4096, K=1024, N=1024 f32, pre-packed) and
// their ratio; then medians, min/max of the ratio, and the process's peak RSS. Run each case in
// its own process for a meaningful RSS.
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/base/flags.h"
#include "engine/base/openmp_env.h"
#include "engine/dnnl/matmul.h"
#include "engine/model/config.h"
#include "engine/model/engine_api.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Case {
  const char* name;
  const char* config_json;
  double flop_per_token;  // docs/engine-numerics.md §12.1 (2 x multiply-adds)
};

const Case kCases[] = {
    {"enwik8",
     R"({"attn_layers": ["local","local","lsh","local","local","local","lsh","local","local","local","lsh","local"],
        "hidden_size": 1024, "num_attention_heads": 8, "attention_head_size": 128, "feed_forward_size": 4096,
        "vocab_size": 258, "is_decoder": true, "hidden_act": "relu", "layer_norm_eps": 1e-12,
        "lsh_attn_chunk_length": 256, "local_attn_chunk_length": 128, "lsh_num_chunks_before": 1,
        "lsh_num_chunks_after": 0, "local_num_chunks_before": 1, "local_num_chunks_after": 0,
        "num_hashes": 4, "num_buckets": 512, "axial_pos_embds": true, "axial_pos_shape": [128, 512],
        "axial_pos_embds_dim": [256, 768], "max_position_embeddings": 65536, "pad_token_id": 0})",
     337.6e6},
    {"cp",
     R"({"attn_layers": ["local","lsh","local","lsh","local","lsh"],
        "hidden_size": 256, "num_attention_heads": 2, "attention_head_size": 64, "feed_forward_size": 512,
        "vocab_size": 320, "is_decoder": true, "hidden_act": "relu", "layer_norm_eps": 1e-12,
        "lsh_attn_chunk_length": 64, "local_attn_chunk_length": 64, "lsh_num_chunks_before": 1,
        "lsh_num_chunks_after": 0, "local_num_chunks_before": 1, "local_num_chunks_after": 0,
        "num_hashes": 1, "num_buckets": [64, 128], "axial_pos_embds": true, "axial_pos_shape": [512, 1024],
        "axial_pos_embds_dim": [64, 192], "max_position_embeddings": 524288, "pad_token_id": 0})",
     5.32e6},
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double PeakRssMiB() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

// oneDNN f32 matmul GFLOP/s at M=4096, K=1024, N=1024 (buffers freed after, so they do not add
// to the model's peak RSS).
double MatmulProbe(reformer::DnnlContext* ctx, int iters) {
  const int64_t M = 4096, K = 1024, N = 1024;
  std::vector<float> a(M * K), w(N * K), c(M * N);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& x : a) x = u(rng);
  for (float& x : w) x = u(rng);
  reformer::PackedWeight pw = reformer::PackedWeight::FromLinear(w.data(), K, 0, 0, K, N);
  reformer::MatmulCall mc;
  mc.With(pw);
  mc.m = M;
  mc.src = a.data();
  mc.lda = K;
  mc.dst = c.data();
  mc.ldc = N;
  (void)ctx->Matmul(mc);  // warm-up (primitive creation)
  auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) (void)ctx->Matmul(mc);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  return 2.0 * M * K * N * iters / s / 1e9;
}

struct BenchOptions {
  std::string case_name = "cp";
  int64_t tokens = 4096;
  int threads = 2;
  int rounds = 3;
  int64_t tile = 4096;
  int64_t budget_mib = 256;
  double max_seconds = 0;  // > 0: cancel a forward after this long (peak-RSS runs on slow machines)
  bool json = false;
  bool probe = false;  // only the matmul probe (one JSON line)
};

void RegisterFlags(BenchOptions* o, reformer::FlagSet* f) {
  f->Add("case", &o->case_name, "Model shape: enwik8 (google/reformer-enwik8) or cp (crime-and-punishment).")
      .OneOf({"enwik8", "cp"});
  f->Add("tokens", &o->tokens, "Tokens in the one document scored per round.").Min(1);
  f->Add("threads", &o->threads, "OpenMP threads of the session and the matmul probe.").Range(1, 1024);
  f->Add("rounds", &o->rounds, "Rounds (each: probe, model forward, probe).").Range(1, 1000);
  f->Add("tile", &o->tile, "Session token tile (rows per dense matmul).").Min(1);
  f->Add("budget-mib", &o->budget_mib, "Session workspace budget in MiB.").Min(1);
  f->Add("max-seconds", &o->max_seconds, "Cancel a forward after this long (0 = never).").MinReal(0).Meta("S");
  f->Add("json", &o->json, "One JSON line with the medians instead of text.");
  f->Add("probe", &o->probe, "Only oneDNN's f32 matmul rate, --rounds times (one JSON line); no model.");
}

}  // namespace

int main(int argc, char** argv) {
  reformer::EnsurePassiveOpenMpWait(argv);
  BenchOptions o;
  reformer::FlagSet flags("reformer_bench [flags]",
                          "Scoring throughput of a random-weight Reformer of a published shape next to oneDNN's "
                          "f32 matmul rate measured in the same process (see the file comment).");
  RegisterFlags(&o, &flags);
  if (std::optional<int> exit_code = flags.ParseOrExit(argc, argv)) return *exit_code;
  const int64_t tokens = o.tokens, tile = o.tile;
  const int threads = o.threads, rounds = o.rounds;
  const size_t budget_mib = static_cast<size_t>(o.budget_mib);
  const double max_seconds = o.max_seconds;
  const bool json = o.json, probe_only = o.probe;
  const Case* cs = nullptr;
  for (const Case& c : kCases)
    if (o.case_name == c.name) cs = &c;
  omp_set_num_threads(threads);
  if (probe_only) {
    auto ctx = reformer::DnnlContext::Create();
    if (!ctx.ok()) return 1;
    std::vector<double> rates;
    for (int r = 0; r < rounds; ++r) rates.push_back(MatmulProbe(ctx->get(), 4));
    std::printf("{\"matmul_gflops_median\":%.2f,\"matmul_gflops_min\":%.2f,\"matmul_gflops_max\":%.2f,\"threads\":%d}\n",
                Median(rates), *std::min_element(rates.begin(), rates.end()),
                *std::max_element(rates.begin(), rates.end()), threads);
    return 0;
  }
  auto config = reformer::ReformerConfig::FromJson(cs->config_json, cs->name);
  if (!config.ok()) {
    std::fprintf(stderr, "config: %s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  auto t_build = Clock::now();
  auto model = reformer::ReformerModel::CreateRandom(*config, 1234);
  if (!model.ok()) {
    std::fprintf(stderr, "model: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  const double build_s = std::chrono::duration<double>(Clock::now() - t_build).count();
  reformer::SessionOptions so;
  so.num_threads = threads;
  so.tile_rows = tile;
  so.workspace_budget_bytes = budget_mib << 20;
  auto session = reformer::Session::Create(*model, so);
  if (!session.ok()) {
    std::fprintf(stderr, "session: %s\n", std::string(session.status().message()).c_str());
    return 1;
  }
  auto ctx = reformer::DnnlContext::Create();
  if (!ctx.ok()) return 1;

  std::vector<int32_t> ids(tokens);
  std::mt19937 rng(7);
  for (auto& x : ids) x = static_cast<int32_t>(2 + rng() % (config->vocab_size - 2));
  std::vector<absl::Span<const int32_t>> docs = {ids};
  const size_t est = reformer::EstimatePeakWorkingBytes(*config, {tokens}, reformer::kOutputTokenLogprobs, so);

  if (!json)
    std::printf("case %s, %ld tokens, %d threads, tile %ld, OMP_WAIT_POLICY=%s, weights %.0f MiB (built in "
                "%.1f s), estimated working set %.0f MiB\n",
                cs->name, static_cast<long>(tokens), threads, static_cast<long>(tile),
                std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "(default)",
                (*model)->weight_bytes() / 1048576.0, build_s, est / 1048576.0);
  std::vector<double> model_s, model_gf, mm_gf, ratio;
  double logprob_sum = 0;
  for (int r = 0; r < rounds; ++r) {
    const double mm_before = MatmulProbe(ctx->get(), 4);
    std::vector<reformer::DocumentOutput> out;
    auto t0 = Clock::now();
    reformer::CancelFn cancel;
    if (max_seconds > 0)
      cancel = [&] { return std::chrono::duration<double>(Clock::now() - t0).count() > max_seconds; };
    absl::Status st = (*session)->RunDocuments(docs, reformer::kOutputTokenLogprobs, &out, cancel);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (absl::IsCancelled(st)) {
      std::printf("round %d: cancelled after %.1f s (--max-seconds); workspace high-water %.0f MiB, "
                  "peak RSS so far %.0f MiB\n",
                  r, s, (*session)->workspace_high_water_bytes() / 1048576.0, PeakRssMiB());
      return 0;
    }
    if (!st.ok()) {
      std::fprintf(stderr, "forward: %s\n", std::string(st.message()).c_str());
      return 1;
    }
    const double mm_after = MatmulProbe(ctx->get(), 4);
    logprob_sum = 0;
    for (float x : out[0].token_logprobs) logprob_sum += x;
    const double gf = cs->flop_per_token * tokens / s / 1e9;
    const double mm = 0.5 * (mm_before + mm_after);
    model_s.push_back(s);
    model_gf.push_back(gf);
    mm_gf.push_back(mm);
    ratio.push_back(gf / mm);
    if (!json)
      std::printf("round %d: model %.2f s (%.0f tokens/s, %.1f GFLOP/s), matmul %.1f GFLOP/s (before %.1f, after "
                  "%.1f), ratio %.3f\n",
                  r, s, tokens / s, gf, mm, mm_before, mm_after, gf / mm);
  }
  const double med_s = Median(model_s);
  const double rmin = *std::min_element(ratio.begin(), ratio.end());
  const double rmax = *std::max_element(ratio.begin(), ratio.end());
  if (json) {
    std::printf(
        "{\"case\":\"%s\",\"tokens\":%ld,\"threads\":%d,\"tile\":%ld,\"rounds\":%d,\"median_s\":%.3f,"
        "\"tokens_per_s\":%.1f,\"model_gflops_median\":%.2f,\"matmul_gflops_median\":%.2f,"
        "\"ratio_of_medians\":%.3f,\"ratio_median\":%.3f,\"ratio_min\":%.3f,\"ratio_max\":%.3f,\"peak_rss_mib\":%.0f,"
        "\"estimated_working_mib\":%.0f,\"weights_mib\":%.0f,\"mean_logprob\":%.4f,\"omp_wait_policy\":\"%s\"}\n",
        cs->name, static_cast<long>(tokens), threads, static_cast<long>(tile), rounds, med_s, tokens / med_s,
        Median(model_gf), Median(mm_gf), Median(model_gf) / Median(mm_gf), Median(ratio), rmin, rmax, PeakRssMiB(),
        est / 1048576.0,
        (*model)->weight_bytes() / 1048576.0, logprob_sum / std::max<int64_t>(1, tokens - 1),
        std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "");
  } else {
    std::printf("workspace high-water %.0f MiB\n", (*session)->workspace_high_water_bytes() / 1048576.0);
    std::printf("median: %.2f s, %.0f tokens/s, model %.1f GFLOP/s, matmul %.1f GFLOP/s, ratio of medians %.3f "
                "(per-round ratios: median %.3f, min %.3f, max %.3f); peak RSS %.0f MiB\n",
                med_s, tokens / med_s, Median(model_gf), Median(mm_gf), Median(model_gf) / Median(mm_gf),
                Median(ratio), rmin, rmax, PeakRssMiB());
  }
  return 0;
}
