// reformer_generate_bench: generation speed (docs/generation.md "Speed"), a program, not a test.
//
//   reformer_generate_bench [--case default|cp|enwik8] [--model DIR] [--contexts 1024,4096]
//       [--steps 32] [--streams 1,4,16,64] [--stream-context 1024] [--threads 2] [--rounds 3]
//       [--tile 4096] [--mode cached|recompute] [--compute_type float32|bfloat16|int8|auto]
//       [--interleave 61440]
//
// Per context length T (random prompt of T tokens), in every round: the Score time of the prompt
// (Session::RunDocuments with token logprobs, as the server's Score runs it), then its time to
// first token (Decoder::Prefill: the same forward filling the cache, the LM head on the last
// position only), then the median time of `steps` single-sequence steps. Figures are per-round
// ratios (TTFT / Score; step(T) / step(first T)) and their medians: the machine's speed drifts,
// ratios measured side by side do not. Then aggregate tokens/s of one batched step over N streams
// of `stream-context` tokens each, and its speed-up over one stream (all counts in every round,
// framed by a oneDNN matmul probe; the model's FLOPs per token against the probe's rate). With --interleave T: a T-token
// prompt prefilled while the first --streams count of streams step inside the pass (the longest
// wait between two of their tokens).
//
// --case default loads models/default (or --model DIR); cp / enwik8 are random-weight models of
// the published shapes (the same configs as reformer_bench).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/base/compute_type.h"
#include "engine/base/openmp_env.h"
#include "engine/dnnl/matmul.h"
#include "engine/model/decoder.h"
#include "tools/bench/matmul_probe.h"

namespace {

using Clock = std::chrono::steady_clock;
using reformer::DecodeMode;
using reformer::DecodeState;

const char kCp[] = R"({"attn_layers": ["local","lsh","local","lsh","local","lsh"],
  "hidden_size": 256, "num_attention_heads": 2, "attention_head_size": 64, "feed_forward_size": 512,
  "vocab_size": 320, "is_decoder": true, "hidden_act": "relu", "lsh_attn_chunk_length": 64,
  "local_attn_chunk_length": 64, "num_hashes": 1, "num_buckets": [64, 128], "axial_pos_embds": true,
  "axial_pos_shape": [512, 1024], "axial_pos_embds_dim": [64, 192], "max_position_embeddings": 524288})";
const char kEnwik8[] = R"({"attn_layers": ["local","local","lsh","local","local","local","lsh","local","local","local","lsh","local"],
  "hidden_size": 1024, "num_attention_heads": 8, "attention_head_size": 128, "feed_forward_size": 4096,
  "vocab_size": 258, "is_decoder": true, "hidden_act": "relu", "lsh_attn_chunk_length": 256,
  "local_attn_chunk_length": 128, "num_hashes": 4, "num_buckets": 512, "axial_pos_embds": true,
  "axial_pos_shape": [128, 512], "axial_pos_embds_dim": [256, 768], "max_position_embeddings": 65536})";

double Seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// CPU time of the process (all threads): on a shared machine wall time includes waiting for a core.
constexpr auto CpuSeconds = &reformer::bench::ProcessCpuSeconds;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

std::vector<int64_t> ParseList(const std::string& s) {
  std::vector<int64_t> out;
  for (absl::string_view p : absl::StrSplit(s, ',')) {
    int64_t v;
    if (!absl::SimpleAtoi(p, &v) || v <= 0) {
      std::fprintf(stderr, "bad list '%s'\n", s.c_str());
      std::exit(2);
    }
    out.push_back(v);
  }
  return out;
}

void Check(const absl::Status& st, const char* what) {
  if (st.ok()) return;
  std::fprintf(stderr, "%s: %s\n", what, std::string(st.message()).c_str());
  std::exit(1);
}

struct Options {
  std::string case_name = "default", model_dir = "models/default", mode = "cached", compute_type = "float32";
  std::vector<int64_t> contexts = {1024, 4096}, streams = {1, 4, 16, 64}, interleave;
  int64_t steps = 32, stream_context = 1024, tile = 4096;
  int threads = 2, rounds = 3;
};

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value (see the header of tools/bench/generate_bench.cc)\n", a.c_str());
      std::exit(2);
    }
    const std::string v = argv[++i];
    if (a == "--case") o.case_name = v;
    else if (a == "--model") o.model_dir = v;
    else if (a == "--mode") o.mode = v;
    else if (a == "--compute_type") o.compute_type = v;
    else if (a == "--contexts") o.contexts = v == "none" ? std::vector<int64_t>{} : ParseList(v);
    else if (a == "--streams") o.streams = ParseList(v);
    else if (a == "--steps") o.steps = ParseList(v)[0];
    else if (a == "--interleave") o.interleave = ParseList(v);
    else if (a == "--stream-context") o.stream_context = ParseList(v)[0];
    else if (a == "--tile") o.tile = ParseList(v)[0];
    else if (a == "--threads") o.threads = static_cast<int>(ParseList(v)[0]);
    else if (a == "--rounds") o.rounds = static_cast<int>(ParseList(v)[0]);
    else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      std::exit(2);
    }
  }
  return o;
}

std::vector<int32_t> RandomIds(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = static_cast<int32_t>(3 + rng() % (vocab - 3));
  return v;
}

// oneDNN f32 matmul at M=1024, K=1024, N=1024 on `threads` threads: the machine's matmul rate in
// the same run (tools/bench/matmul_probe.h; reformer_bench runs it at M=4096), the yardstick of the
// step's FLOP rate. GFLOP per wall-second and per CPU-second of the process (the latter robust to
// waiting for a core).
using reformer::bench::ProbeRate;
ProbeRate MatmulProbe(reformer::DnnlContext* ctx, int threads) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  const ProbeRate r = reformer::bench::MatmulProbe(ctx, 1024, 6);
  omp_set_num_threads(before);
  return r;
}

// FLOPs of one cached decoding step of one sequence, counted from the config (docs/generation.md
// §8): the dense products (projections, attention output, feed-forward, LM head over 2H -> V), the
// LSH hashing of the query, and the attention of the new query against a full window (scores and
// weighted sum, dh multiply-adds each per key). LayerNorm, softmax and sampling are left out (O(H + V)).
struct StepFlops {
  double dense = 0, attention = 0;
  double total() const { return dense + attention; }
};
StepFlops FlopsPerToken(const reformer::ReformerConfig& c) {
  const double H = c.hidden_size, A = c.all_head_size(), F = c.feed_forward_size, dh = c.attention_head_size;
  StepFlops f;
  for (reformer::AttnType t : c.attn_layers) {
    const bool lsh = t == reformer::AttnType::kLsh;
    f.dense += 2 * H * A * (lsh ? 2 : 3) + 2 * A * H + 2 * 2 * H * F;
    const double keys = lsh ? c.num_hashes * c.lsh_attn_chunk_length * (1 + c.lsh_num_chunks_before + c.lsh_num_chunks_after)
                            : c.local_attn_chunk_length * (1 + c.local_num_chunks_before);
    f.attention += c.num_attention_heads * 2 * 2 * dh * keys;
    if (lsh) f.attention += c.num_attention_heads * 2 * dh * c.num_hashes * (c.rotation_size() / 2.0);
  }
  f.dense += 2 * 2 * H * c.vocab_size;
  return f;
}

struct Timing {
  double score_s, ttft_s, step_ms;
  double score_cpu_s, ttft_cpu_s;  // process CPU time (robust to waiting for a core)
};

// One round at one context length: Score, TTFT, median step.
Timing MeasureContext(const Options& o, reformer::Session* session, reformer::Decoder* dec,
                      const reformer::ReformerModel& model, int64_t t, uint32_t seed) {
  const std::vector<int32_t> ids = RandomIds(t, model.config().vocab_size, seed);
  Timing r{};
  std::vector<reformer::DocumentOutput> out;
  auto t0 = Clock::now();
  double c0 = CpuSeconds();
  Check(session->RunDocuments({ids}, reformer::kOutputTokenLogprobs, &out), "score");
  r.score_s = Seconds(t0);
  r.score_cpu_s = CpuSeconds() - c0;
  out.clear();
  const DecodeMode mode = o.mode == "recompute" ? DecodeMode::kRecompute : DecodeMode::kCached;
  auto st = DecodeState::Create(model, ids, o.steps + 1, mode);
  Check(st.status(), "state");
  DecodeState* s = st->get();
  std::vector<float> logits(model.config().vocab_size);
  float* dst = logits.data();
  t0 = Clock::now();
  c0 = CpuSeconds();
  Check(dec->Prefill({&s, 1}, {&dst, 1}), "prefill");
  r.ttft_s = Seconds(t0);
  r.ttft_cpu_s = CpuSeconds() - c0;
  std::vector<double> steps;
  for (int64_t k = 0; k < o.steps; ++k) {
    const int32_t tok = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    t0 = Clock::now();
    Check(dec->Step({&s, 1}, {&tok, 1}, {&dst, 1}), "step");
    steps.push_back(Seconds(t0) * 1e3);
  }
  r.step_ms = Median(steps);
  return r;
}

// Tokens/s of batched steps over n streams of `context` tokens.
double MeasureStreams(const Options& o, reformer::Decoder* dec, const reformer::ReformerModel& model, int64_t n,
                      double* cpu_per_step_ms) {
  const int64_t V = model.config().vocab_size;
  std::vector<std::unique_ptr<DecodeState>> states;
  std::vector<DecodeState*> ptrs;
  std::vector<std::vector<float>> logits(n, std::vector<float>(V));
  std::vector<float*> dst;
  for (int64_t i = 0; i < n; ++i) {
    auto st = DecodeState::Create(model, RandomIds(o.stream_context, V, 100 + i), o.steps + 1, DecodeMode::kCached);
    Check(st.status(), "state");
    states.push_back(std::move(st).value());
    ptrs.push_back(states.back().get());
    dst.push_back(logits[i].data());
  }
  Check(dec->Prefill(absl::MakeSpan(ptrs), absl::MakeSpan(dst)), "prefill");
  std::vector<int32_t> toks(n, 5);
  const auto t0 = Clock::now();
  const double cpu0 = CpuSeconds();
  for (int64_t k = 0; k < o.steps; ++k) Check(dec->Step(absl::MakeSpan(ptrs), toks, absl::MakeSpan(dst)), "step");
  *cpu_per_step_ms = (CpuSeconds() - cpu0) / o.steps * 1e3;
  return static_cast<double>(n * o.steps) / Seconds(t0);
}

// A prompt of t tokens prefilled while `n` running streams (of stream-context tokens) step inside
// the pass, paced as the generation service paces them (server/inference/generation_service.cc:
// a step when as long as the last step took has passed since it ended). Prints the prefill time,
// the steps taken, and the longest wait of the streams between two tokens; beside it the longest
// wait had they stepped only between layers.
void MeasureInterleave(const Options& o, reformer::Decoder* dec, const reformer::ReformerModel& model, int64_t t,
                       int64_t n) {
  const int64_t V = model.config().vocab_size;
  std::vector<std::unique_ptr<DecodeState>> states;
  std::vector<DecodeState*> ptrs;
  std::vector<std::vector<float>> logits(n + 1, std::vector<float>(V));
  std::vector<float*> dst;
  const int64_t room = model.config().context_length() - o.stream_context;  // new tokens the streams may take
  for (int64_t i = 0; i < n; ++i) {
    auto st = DecodeState::Create(model, RandomIds(o.stream_context, V, 200 + i), room, DecodeMode::kCached);
    Check(st.status(), "state");
    states.push_back(std::move(st).value());
    ptrs.push_back(states.back().get());
    dst.push_back(logits[i].data());
  }
  Check(dec->Prefill(absl::MakeSpan(ptrs), absl::MakeSpan(dst)), "prefill");
  auto big = DecodeState::Create(model, RandomIds(t, V, 7), 2, DecodeMode::kCached);
  Check(big.status(), "state");
  DecodeState* b = big->get();
  float* bd = logits[n].data();
  std::vector<int32_t> toks(n, 5);
  Clock::time_point last_end = Clock::now(), layer_start = last_end;
  double last_step = 0, max_gap = 0, max_layer = 0;
  int64_t steps = 0, layer = -1;
  const auto t0 = Clock::now();
  Check(dec->Prefill({&b, 1}, {&bd, 1}, nullptr,
                     [&](int64_t li) -> absl::Status {
                       const auto now = Clock::now();
                       if (li != layer) {
                         max_layer = std::max(max_layer, std::chrono::duration<double>(now - layer_start).count());
                         layer_start = now;
                         layer = li;
                       }
                       if (std::chrono::duration<double>(now - last_end).count() < last_step) return absl::OkStatus();
                       max_gap = std::max(max_gap, std::chrono::duration<double>(now - last_end).count());
                       if (steps + 1 >= room) return absl::OkStatus();
                       Check(dec->Step(absl::MakeSpan(ptrs), toks, absl::MakeSpan(dst)), "step");
                       ++steps;
                       last_step = Seconds(now);
                       last_end = Clock::now();
                       return absl::OkStatus();
                     }),
        "prefill");
  const double total = Seconds(t0);
  max_gap = std::max(max_gap, std::chrono::duration<double>(Clock::now() - last_end).count());
  max_layer = std::max(max_layer, std::chrono::duration<double>(Clock::now() - layer_start).count());
  std::printf("interleave, prompt %ld beside %ld streams: prefill %.3f s, %ld steps of the streams inside it, "
              "longest wait between two of their tokens %.3f s (between layers only: %.3f s)\n",
              static_cast<long>(t), static_cast<long>(n), total, static_cast<long>(steps), max_gap, max_layer);
}

}  // namespace

// Aggregate tokens/s over every --streams count, the counts interleaved within each round and the
// round framed by the matmul probe (2 threads and 1 thread), so ratios compare figures taken side by
// side. The step's FLOP rate is set against the probe: a one-stream step runs on one thread.
void MeasureAllStreams(const Options& o, reformer::Decoder* dec, const reformer::ReformerModel& model) {
  // One oneDNN context per thread count: a primitive keeps the thread count it was created with.
  auto ctx = reformer::DnnlContext::Create();
  Check(ctx.status(), "dnnl context");
  auto ctx1 = reformer::DnnlContext::Create();
  Check(ctx1.status(), "dnnl context");
  const StepFlops fl = FlopsPerToken(model.config());
  std::printf("FLOPs per token (cached step, full windows): %.3f M (dense %.3f M, attention and hashing %.3f M)\n",
              fl.total() / 1e6, fl.dense / 1e6, fl.attention / 1e6);
  const size_t ns = o.streams.size();
  std::vector<std::vector<double>> rate(ns), cpu(ns), ratio(ns);
  std::vector<double> probe2, probe1, probe1_cpu;
  for (int r = 0; r < o.rounds; ++r) {
    const ProbeRate p2a = MatmulProbe(ctx->get(), o.threads), p1a = MatmulProbe(ctx1->get(), 1);
    std::vector<double> rr(ns);
    for (size_t i = 0; i < ns; ++i) {
      double c = 0;
      rr[i] = MeasureStreams(o, dec, model, o.streams[i], &c);
      rate[i].push_back(rr[i]);
      cpu[i].push_back(c);
      ratio[i].push_back(rr[i] / rr[0]);
    }
    const ProbeRate p2b = MatmulProbe(ctx->get(), o.threads), p1b = MatmulProbe(ctx1->get(), 1);
    probe2.push_back(0.5 * (p2a.wall + p2b.wall));
    probe1.push_back(0.5 * (p1a.wall + p1b.wall));
    probe1_cpu.push_back(0.5 * (p1a.cpu + p1b.cpu));
    std::printf("round %d: matmul probe %.1f GFLOP/s (%d threads), %.1f (1 thread; %.1f per CPU-second);", r,
                probe2.back(), o.threads, probe1.back(), probe1_cpu.back());
    for (size_t i = 0; i < ns; ++i)
      std::printf(" %ld streams %.0f tok/s (x%.2f, CPU %.3f ms/step);", static_cast<long>(o.streams[i]), rr[i],
                  ratio[i].back(), cpu[i].back());
    std::printf("\n");
  }
  const double p2 = Median(probe2), p1 = Median(probe1_cpu);
  std::printf("median matmul probe: %.1f GFLOP/s on %d threads, %.1f on 1 (%.1f per CPU-second)\n", p2, o.threads,
              Median(probe1), p1);
  for (size_t i = 0; i < ns; ++i) {
    const double n = static_cast<double>(o.streams[i]);
    const double cpu_gflops = fl.total() * n / (Median(cpu[i]) * 1e-3) / 1e9;  // per CPU-second
    std::printf("streams %3ld x %ld tokens: %.0f tokens/s (x%.2f of %ld stream, median of per-round ratios); "
                "process CPU %.3f ms per step = %.3f ms per token; %.1f GFLOP per CPU-second = %.3f of the "
                "1-thread probe's GFLOP per CPU-second; wall %.1f GFLOP/s = %.3f of the %d-thread probe\n",
                static_cast<long>(o.streams[i]), static_cast<long>(o.stream_context), Median(rate[i]),
                Median(ratio[i]), static_cast<long>(o.streams[0]), Median(cpu[i]), Median(cpu[i]) / n, cpu_gflops,
                cpu_gflops / p1, fl.total() * Median(rate[i]) / 1e9, fl.total() * Median(rate[i]) / 1e9 / p2,
                o.threads);
  }
}

int main(int argc, char** argv) {
  reformer::EnsurePassiveOpenMpWait(argv);
  const Options o = Parse(argc, argv);
  omp_set_num_threads(o.threads);
  absl::StatusOr<std::shared_ptr<const reformer::ReformerModel>> model;
  reformer::LoadOptions lo;
  auto type = reformer::ParseComputeType(o.compute_type);
  Check(type.status(), "--compute_type");
  lo.compute_type = *type;
  if (o.case_name == "default") {
    model = reformer::ReformerModel::Load(o.model_dir, lo);
  } else {
    auto c = reformer::ReformerConfig::FromJson(o.case_name == "cp" ? kCp : kEnwik8, o.case_name);
    Check(c.status(), "config");
    model = reformer::ReformerModel::CreateRandom(*c, 1234, lo);
  }
  Check(model.status(), "model");
  reformer::SessionOptions so;
  so.num_threads = o.threads;
  so.tile_rows = o.tile;
  auto session = reformer::Session::Create(*model, so);
  Check(session.status(), "session");
  reformer::DecoderOptions dopt;
  dopt.num_threads = o.threads;
  dopt.tile_rows = o.tile;
  auto dec = reformer::Decoder::Create(*model, dopt);
  Check(dec.status(), "decoder");
  std::printf("case %s, compute type %s, %d threads, tile %ld, mode %s, %ld steps per measure, OMP_WAIT_POLICY=%s\n",
              o.case_name.c_str(), reformer::ComputeTypeName((*model)->compute_type()), o.threads, static_cast<long>(o.tile), o.mode.c_str(), static_cast<long>(o.steps),
              std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "(default)");
  const size_t nc = o.contexts.size();
  std::vector<std::vector<double>> ttft_ratio(nc), step_ratio(nc), step_ms(nc), ttft_s(nc), score_s(nc),
      cpu_ratio(nc);
  for (int r = 0; r < o.rounds; ++r) {
    std::vector<Timing> t(nc);
    for (size_t i = 0; i < nc; ++i) t[i] = MeasureContext(o, session->get(), dec->get(), **model, o.contexts[i], r);
    for (size_t i = 0; i < nc; ++i) {
      ttft_ratio[i].push_back(t[i].ttft_s / t[i].score_s);
      cpu_ratio[i].push_back(t[i].ttft_cpu_s / t[i].score_cpu_s);
      step_ratio[i].push_back(t[i].step_ms / t[0].step_ms);
      step_ms[i].push_back(t[i].step_ms);
      ttft_s[i].push_back(t[i].ttft_s);
      score_s[i].push_back(t[i].score_s);
      std::printf("round %d, context %6ld: score %.3f s, ttft %.3f s (ratio %.3f, CPU-time ratio %.3f), step %.3f ms "
                  "(x%.2f of context %ld)\n",
                  r, static_cast<long>(o.contexts[i]), t[i].score_s, t[i].ttft_s, ttft_ratio[i].back(),
                  cpu_ratio[i].back(), t[i].step_ms, step_ratio[i].back(), static_cast<long>(o.contexts[0]));
    }
  }
  for (size_t i = 0; i < nc; ++i)
    std::printf("median, context %6ld: score %.3f s, ttft %.3f s, ttft/score %.3f (CPU time %.3f); step %.3f ms, "
                "step/step(%ld) %.2f\n",
                static_cast<long>(o.contexts[i]), Median(score_s[i]), Median(ttft_s[i]), Median(ttft_ratio[i]),
                Median(cpu_ratio[i]), Median(step_ms[i]), static_cast<long>(o.contexts[0]), Median(step_ratio[i]));
  for (int64_t t : o.interleave) MeasureInterleave(o, dec->get(), **model, t, o.streams[0]);
  if (!o.streams.empty()) MeasureAllStreams(o, dec->get(), **model);
  return 0;
}
