// reformer_bench: scoring throughput of a random-weight Reformer of a published shape, next to
// oneDNN's f32 matmul rate measured in the same process, interleaved with the model runs (the
// machine's speed drifts, so the per-round ratio is the figure that counts).
//
//   reformer_bench --case enwik8 --tokens 16384 [--threads 2] [--rounds 3] [--tile 4096]
//                  [--budget-mib 256] [--max-seconds S] [--json] [--compute_type float32,int8,...]
//   reformer_bench --probe [--threads 2] [--rounds 3]   (the matmul probe alone: one line of JSON;
//                  tools/bench/forward_bench.py runs it around each `reformer-cli forward`)
//
// Cases: enwik8 (google/reformer-enwik8 shape), cp (google/reformer-crime-and-punishment shape).
// Output: per round model seconds, tokens/s, achieved GFLOP/s (FLOP/token of
// docs/engine-numerics.md §12.1), matmul GFLOP/s (M=4096, K=1024, N=1024 f32, pre-packed) and
// their ratio; then medians, min/max of the ratio, and the process's peak RSS. Run each case in
// its own process for a meaningful RSS.
// Several compute types (--compute_type float32,bfloat16,int8) run interleaved in every round,
// each with its own model; "speed-up" is the first type's time over each type's, per round.
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

#include "absl/strings/str_split.h"
#include "engine/base/cpu_features.h"
#include "engine/base/flags.h"
#include "engine/base/openmp_env.h"
#include "engine/dnnl/matmul.h"
#include "engine/model/config.h"
#include "engine/model/engine_api.h"
#include "engine/model/forward.h"
#include "tools/bench/matmul_probe.h"

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

// oneDNN f32 matmul GFLOP/s at M=4096, K=1024, N=1024 (tools/bench/matmul_probe.h).
double MatmulProbe(reformer::DnnlContext* ctx, int iters) {
  return reformer::bench::MatmulProbe(ctx, 4096, iters).wall;
}

struct Args {
  std::string case_name = "cp";
  int64_t tokens = 4096;
  int threads = 2, rounds = 3;
  int64_t tile = 4096;
  int64_t budget_mib = 256;
  double max_seconds = 0;  // > 0: cancel a forward after this long (peak-RSS runs on slow machines)
  bool json = false, probe_only = false;
  std::string compute_type = "float32";
  std::vector<std::string> compute_types;  // compute_type split at commas
};

void RegisterFlags(Args* o, reformer::FlagSet* f) {
  f->Add("case", &o->case_name, "Model shape: enwik8 (google/reformer-enwik8) or cp (crime-and-punishment).")
      .OneOf({"enwik8", "cp"});
  f->Add("tokens", &o->tokens, "Tokens in the one document scored per round.").Min(1);
  f->Add("threads", &o->threads, "OpenMP threads of the session and the matmul probe.").Range(1, 1024);
  f->Add("rounds", &o->rounds, "Rounds (each: probe, every compute type's forward, probe).").Range(1, 1000);
  f->Add("tile", &o->tile, "Session token tile (rows per dense matmul).").Min(1);
  f->Add("budget-mib", &o->budget_mib, "Session workspace budget in MiB.").Min(1);
  f->Add("max-seconds", &o->max_seconds, "Cancel a forward after this long (0 = never).").MinReal(0).Meta("S");
  f->Add("json", &o->json, "One JSON line per compute type with the medians instead of text.");
  f->Add("probe", &o->probe_only, "Only oneDNN's f32 matmul rate, --rounds times (one JSON line); no model.");
  f->Add("compute_type", &o->compute_type,
         "Compute types run interleaved in every round, comma-separated: float32, bfloat16, int8, auto "
         "(docs/isa.md).")
      .Meta("TYPE[,TYPE...]");
}

// One compute type's model and session, and its per-round results.
struct Variant {
  std::string requested;
  std::shared_ptr<const reformer::ReformerModel> model;
  std::unique_ptr<reformer::Session> session;
  double build_s = 0;
  std::vector<double> seconds, gflops, ratio, speedup;
  double mean_logprob = 0;
};

bool MakeVariant(const reformer::ReformerConfig& config, const Args& a, const std::string& type, Variant* v) {
  auto req = reformer::ParseComputeType(type);
  if (!req.ok()) {
    std::fprintf(stderr, "%s\n", std::string(req.status().message()).c_str());
    return false;
  }
  reformer::LoadOptions lo;
  lo.compute_type = *req;
  auto t0 = Clock::now();
  auto model = reformer::ReformerModel::CreateRandom(config, 1234, lo);
  if (!model.ok()) {
    std::fprintf(stderr, "model (%s): %s\n", type.c_str(), std::string(model.status().message()).c_str());
    return false;
  }
  v->requested = type;
  v->model = *model;
  v->build_s = std::chrono::duration<double>(Clock::now() - t0).count();
  reformer::SessionOptions so;
  so.num_threads = a.threads;
  so.tile_rows = a.tile;
  so.workspace_budget_bytes = static_cast<size_t>(a.budget_mib) << 20;
  auto session = reformer::Session::Create(v->model, so);
  if (!session.ok()) {
    std::fprintf(stderr, "session: %s\n", std::string(session.status().message()).c_str());
    return false;
  }
  v->session = std::move(session).value();
  return true;
}

// oneDNN's implementation of the case's widest matmul in each variant's type (FFN in: [tile, H] x [H, F]).
std::string ImplInfo(reformer::DnnlContext* ctx, const Variant& v, int64_t tile) {
  const reformer::PackedWeight& w = v.model->packed().layers[0].ff_in;
  reformer::MatmulCall mc;
  mc.With(w);
  mc.m = tile;
  mc.lda = w.k();
  mc.ldc = w.n();
  auto info = ctx->MatmulImplInfo(mc);
  return info.ok() ? *info : std::string("?");
}

// --probe: the matmul probe alone, one line of JSON.
int ProbeOnly(const Args& a) {
  auto ctx = reformer::DnnlContext::Create();
  if (!ctx.ok()) return 1;
  std::vector<double> rates;
  for (int r = 0; r < a.rounds; ++r) rates.push_back(MatmulProbe(ctx->get(), 4));
  std::printf("{\"matmul_gflops_median\":%.2f,\"matmul_gflops_min\":%.2f,\"matmul_gflops_max\":%.2f,\"threads\":%d}\n",
              Median(rates), *std::min_element(rates.begin(), rates.end()),
              *std::max_element(rates.begin(), rates.end()), a.threads);
  return 0;
}

// One round: the matmul probe, every variant's forward in turn, the probe again. Returns false
// on an error; `*cancelled` when --max-seconds stopped a forward.
bool RunRound(const Args& a, const Case& cs, reformer::DnnlContext* ctx, const std::vector<absl::Span<const int32_t>>& docs,
              int r, std::vector<Variant>* vars, bool* cancelled) {
  const double mm_before = MatmulProbe(ctx, 4);
  std::vector<double> secs;
  for (Variant& v : *vars) {
    std::vector<reformer::DocumentOutput> out;
    auto t0 = Clock::now();
    reformer::CancelFn cancel;
    if (a.max_seconds > 0)
      cancel = [&] { return std::chrono::duration<double>(Clock::now() - t0).count() > a.max_seconds; };
    absl::Status st = v.session->RunDocuments(docs, reformer::kOutputTokenLogprobs, &out, cancel);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (absl::IsCancelled(st)) {
      std::printf("round %d (%s): cancelled after %.1f s (--max-seconds); workspace high-water %.0f MiB, peak RSS so "
                  "far %.0f MiB\n", r, v.requested.c_str(), s, v.session->workspace_high_water_bytes() / 1048576.0,
                  PeakRssMiB());
      *cancelled = true;
      return true;
    }
    if (!st.ok()) {
      std::fprintf(stderr, "forward: %s\n", std::string(st.message()).c_str());
      return false;
    }
    double sum = 0;
    for (float x : out[0].token_logprobs) sum += x;
    v.mean_logprob = sum / std::max<int64_t>(1, a.tokens - 1);
    secs.push_back(s);
  }
  const double mm = 0.5 * (mm_before + MatmulProbe(ctx, 4));
  for (size_t i = 0; i < vars->size(); ++i) {
    Variant& v = (*vars)[i];
    const double gf = cs.flop_per_token * a.tokens / secs[i] / 1e9;
    v.seconds.push_back(secs[i]);
    v.gflops.push_back(gf);
    v.ratio.push_back(gf / mm);
    v.speedup.push_back(secs[0] / secs[i]);
    if (!a.json)
      std::printf("round %d %s: model %.2f s (%.0f tokens/s, %.1f GFLOP/s), matmul %.1f GFLOP/s (before %.1f), ratio "
                  "%.3f, speed-up vs %s %.2fx\n", r, reformer::ComputeTypeName(v.model->compute_type()), secs[i],
                  a.tokens / secs[i], gf, mm, mm_before, gf / mm, (*vars)[0].requested.c_str(), secs[0] / secs[i]);
  }
  return true;
}

int RunRounds(const Args& a, const Case& cs, reformer::DnnlContext* ctx,
              const std::vector<absl::Span<const int32_t>>& docs, size_t est, std::vector<Variant>* vars) {
  std::vector<double> mm_gf;
  for (int r = 0; r < a.rounds; ++r) {
    bool cancelled = false;
    if (!RunRound(a, cs, ctx, docs, r, vars, &cancelled)) return 1;
    if (cancelled) return 0;
    mm_gf.push_back((*vars)[0].gflops.back() / (*vars)[0].ratio.back());
  }
  for (const Variant& v : *vars) {
    const double med_s = Median(v.seconds);
    const double rmin = *std::min_element(v.ratio.begin(), v.ratio.end());
    const double rmax = *std::max_element(v.ratio.begin(), v.ratio.end());
    const char* type = reformer::ComputeTypeName(v.model->compute_type());
    if (a.json) {
      std::printf("{\"case\":\"%s\",\"tokens\":%ld,\"threads\":%d,\"tile\":%ld,\"rounds\":%d,\"compute_type\":\"%s\","
                  "\"isa\":\"%s\",\"median_s\":%.3f,\"tokens_per_s\":%.1f,\"model_gflops_median\":%.2f,"
                  "\"matmul_gflops_median\":%.2f,\"ratio_of_medians\":%.3f,\"ratio_median\":%.3f,\"ratio_min\":%.3f,"
                  "\"ratio_max\":%.3f,\"speedup_median\":%.3f,\"peak_rss_mib\":%.0f,\"estimated_working_mib\":%.0f,"
                  "\"weights_mib\":%.0f,\"mean_logprob\":%.4f}\n",
                  cs.name, static_cast<long>(a.tokens), a.threads, static_cast<long>(a.tile), a.rounds, type,
                  reformer::EngineIsaSummary().c_str(), med_s, a.tokens / med_s, Median(v.gflops), Median(mm_gf),
                  Median(v.gflops) / Median(mm_gf), Median(v.ratio), rmin, rmax, Median(v.speedup), PeakRssMiB(),
                  est / 1048576.0, v.model->weight_bytes() / 1048576.0, v.mean_logprob);
    } else {
      std::printf("%s median: %.2f s, %.0f tokens/s, model %.1f GFLOP/s, matmul %.1f GFLOP/s, ratio of medians %.3f "
                  "(per-round ratios: median %.3f, min %.3f, max %.3f), speed-up vs %s %.2fx (median of rounds), "
                  "weights %.0f MiB, mean log-prob %.4f; workspace high-water %.0f MiB\n",
                  type, med_s, a.tokens / med_s, Median(v.gflops), Median(mm_gf), Median(v.gflops) / Median(mm_gf),
                  Median(v.ratio), rmin, rmax, (*vars)[0].requested.c_str(), Median(v.speedup),
                  v.model->weight_bytes() / 1048576.0, v.mean_logprob,
                  v.session->workspace_high_water_bytes() / 1048576.0);
    }
  }
  if (!a.json) std::printf("peak RSS %.0f MiB (whole process, all compute types)\n", PeakRssMiB());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  reformer::EnsurePassiveOpenMpWait(argv);
  Args a;
  reformer::FlagSet flags("reformer_bench [flags]",
                          "Scoring throughput of a random-weight Reformer of a published shape next to oneDNN's "
                          "f32 matmul rate measured in the same process (see the file comment).");
  RegisterFlags(&a, &flags);
  if (std::optional<int> exit_code = flags.ParseOrExit(argc, argv)) return *exit_code;
  a.compute_types = absl::StrSplit(a.compute_type, ',');
  const Case* cs = nullptr;
  for (const Case& c : kCases)
    if (a.case_name == c.name) cs = &c;
  omp_set_num_threads(a.threads);
  if (a.probe_only) return ProbeOnly(a);
  auto config = reformer::ReformerConfig::FromJson(cs->config_json, cs->name);
  if (!config.ok()) {
    std::fprintf(stderr, "config: %s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  std::vector<Variant> vars(a.compute_types.size());
  for (size_t i = 0; i < vars.size(); ++i)
    if (!MakeVariant(*config, a, a.compute_types[i], &vars[i])) return 1;
  auto ctx = reformer::DnnlContext::Create();
  if (!ctx.ok()) return 1;

  std::vector<int32_t> ids(a.tokens);
  std::mt19937 rng(7);
  for (auto& x : ids) x = static_cast<int32_t>(2 + rng() % (config->vocab_size - 2));
  std::vector<absl::Span<const int32_t>> docs = {ids};
  reformer::SessionOptions so;
  so.tile_rows = a.tile;
  so.workspace_budget_bytes = static_cast<size_t>(a.budget_mib) << 20;
  so.num_threads = a.threads;
  const size_t est = reformer::EstimatePeakWorkingBytes(*vars[0].model, {a.tokens}, reformer::kOutputTokenLogprobs, so);
  if (!a.json) {
    std::printf("case %s, %ld tokens, %d threads, tile %ld, OMP_WAIT_POLICY=%s, CPU: %s; %s; estimated working set "
                "%.0f MiB\n",
                cs->name, static_cast<long>(a.tokens), a.threads, static_cast<long>(a.tile),
                std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "(default)",
                reformer::HostCpu().Summary().c_str(), reformer::EngineIsaSummary().c_str(), est / 1048576.0);
    for (const Variant& v : vars)
      std::printf("  compute type %s -> %s: weights %.0f MiB (built in %.1f s), FFN matmul impl %s\n",
                  v.requested.c_str(), reformer::ComputeTypeName(v.model->compute_type()),
                  v.model->weight_bytes() / 1048576.0, v.build_s, ImplInfo(ctx->get(), v, a.tile).c_str());
  }
  return RunRounds(a, *cs, ctx->get(), docs, est, &vars);
}
