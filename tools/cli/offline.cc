#include "tools/cli/commands.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/engine_api.h"
#include "engine/model/scoring.h"
#include "engine/model/tokenizer.h"
#include "engine/weights/safetensors.h"
#include "nlohmann/json.hpp"
#include "tools/cli/forward_inputs.h"
#include "tools/cli/phase_timer.h"
#include "tools/cli/progress.h"
#include "tools/cli/text_files.h"

namespace reformer::cli {
namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "reformer-cli: %s\n", msg.c_str());
  return 1;
}

int Fail(const absl::Status& st) { return Fail(std::string(st.message())); }

// A malformed --inputs file is an input error (exit 2), as for generate; an unreadable one exits 1.
int FailInputs(const absl::Status& st) {
  Fail(st);
  return absl::IsInvalidArgument(st) ? 2 : 1;
}

// Sanitizer builds (GCC's macros; clang's __has_feature) keep the normal tear-down.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define REFORMER_CLI_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(leak_sanitizer)
#define REFORMER_CLI_SANITIZED 1
#endif
#endif

// Ends the process with `code` without destroying anything: freeing the model's weights, the
// session's workspace and the libraries' state piece by piece (dozens of munmaps, each a TLB
// shootdown across the CPUs the OpenMP threads ran on) costs tens of ms before the kernel drops the
// whole address space anyway (docs/results/forward.md). Sanitizer builds return `code` and tear down
// as usual, so LeakSanitizer still checks this path.
int ExitWithoutTeardown(int code) {
#ifndef REFORMER_CLI_SANITIZED
  std::fflush(nullptr);
  std::_Exit(code);
#endif
  return code;
}

int DefaultThreads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

absl::StatusOr<std::unique_ptr<Session>> MakeSession(const std::shared_ptr<const ReformerModel>& model,
                                                     int threads) {
  SessionOptions so;
  so.num_threads = threads > 0 ? threads : DefaultThreads();
  return Session::Create(model, so);
}

// Loads `dir` in `compute_type` (docs/isa.md §3) and says on stderr which type and instruction sets run.
absl::StatusOr<std::shared_ptr<const ReformerModel>> LoadModel(const std::string& dir, const std::string& compute_type) {
  auto request = ParseComputeType(compute_type);
  if (!request.ok()) return request.status();
  LoadOptions lo;
  lo.compute_type = *request;
  auto model = ReformerModel::Load(dir, lo);
  if (model.ok())
    std::fprintf(stderr, "reformer-cli: compute type %s (%s)\n", ComputeTypeName((*model)->compute_type()),
                 EngineIsaSummary().c_str());
  return model;
}

// --per-document: each row's real tokens (mask == 1, contiguous) form one document of a ragged
// batch; `first[b]` is the row's first real position.
absl::Status RowDocuments(const ForwardInputs& in, std::vector<absl::Span<const int32_t>>* docs,
                          std::vector<int64_t>* first) {
  const int64_t T = in.length;
  for (int64_t b = 0; b < in.batch; ++b) {
    int64_t begin = 0, end = T;
    if (!in.mask.empty()) {
      const uint8_t* m = in.mask.data() + b * T;
      while (begin < T && !m[begin]) ++begin;
      if (begin == T) return absl::InvalidArgumentError(absl::StrCat("row ", b, " has no real tokens"));
      end = begin;
      while (end < T && m[end]) ++end;
      for (int64_t t = end; t < T; ++t)
        if (m[t])
          return absl::InvalidArgumentError(absl::StrCat("attention_mask row ", b, " has a hole at position ", end,
                                                         " (padding must be on the left or right)"));
    }
    docs->push_back(absl::MakeConstSpan(in.ids.data() + b * T + begin, static_cast<size_t>(end - begin)));
    first->push_back(begin);
  }
  return absl::OkStatus();
}

}  // namespace

// The output file is created at its final size, mapped and faulted in; the engine writes logits and hidden
// states straight into it (per-document mode: each row's real positions; padding positions stay
// zero, as the file is created empty).
int RunForward(const ForwardOptions& options) {
  const std::string& model_dir = options.model;
  const std::string& inputs = options.inputs;
  const std::string& output = options.output;
  PhaseTimer timer(options.timing);
  auto in = ReadForwardInputs(inputs);
  if (!in.ok()) return FailInputs(in.status());
  const bool per_document = options.per_document;
  std::vector<absl::Span<const int32_t>> docs;
  std::vector<int64_t> first;
  if (per_document) {
    if (absl::Status st = RowDocuments(*in, &docs, &first); !st.ok()) return Fail(absl::StrCat(inputs, ": ", st.message()));
  }
  timer.Mark("inputs");
  auto model = LoadModel(model_dir, options.compute_type);
  if (!model.ok()) return Fail(model.status());
  timer.Mark("model");
  auto session = MakeSession(*model, options.threads);
  if (!session.ok()) return Fail(session.status());
  timer.Mark("session");
  const ReformerConfig& c = (*model)->config();
  const int64_t B = in->batch, T = in->length, V = c.vocab_size, H2 = 2 * c.hidden_size;
  if (c.PaddedLength(T) > c.context_length())  // before the output file is sized from T
    return Fail(absl::StrCat(inputs, ": rows of ", T, " ids (", c.PaddedLength(T),
                             " after padding to the chunk length) exceed the model's ", c.context_length()));
  auto file = SafetensorsOutputFile::Create(output, {{"logits", DType::kF32, {B, T, V}},
                                                     {"hidden_states", DType::kF32, {B, T, H2}}});
  if (!file.ok()) return Fail(file.status());
  timer.Mark("output-file");
  // Every page of the file is written below; faulting them in up front, side by side, costs less
  // than the forward's threads taking the same faults as they write (docs/results/forward.md).
  (void)(*file)->Prefault(options.threads > 0 ? options.threads : DefaultThreads());
  timer.Mark("prefault");
  float* logits = (*file)->f32("logits");
  float* hidden = (*file)->f32("hidden_states");
  absl::Status st;
  if (per_document) {
    std::vector<OutputView> views(B);
    for (int64_t b = 0; b < B; ++b) {
      views[b].logits = logits + (b * T + first[b]) * V;
      views[b].hidden_states = hidden + (b * T + first[b]) * H2;
    }
    st = (*session)->RunDocuments(docs, kOutputLogits | kOutputHiddenStates, views);
  } else {
    const PaddedBatch batch{B, T, in->ids, in->mask};
    st = (*session)->RunPadded(batch, PaddedOutputView{logits, hidden}, nullptr);
  }
  timer.Mark("forward");
  if (st.ok()) st = (*file)->Close();
  timer.Mark("close");
  if (!st.ok()) {
    file->reset();
    std::remove(output.c_str());  // no partial output file
    return Fail(st);
  }
  std::fprintf(stderr, "wrote %s: logits [%lld, %lld, %lld], hidden_states [%lld, %lld, %lld]\n", output.c_str(),
               static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(V),
               static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(H2));
  timer.Print();
  return ExitWithoutTeardown(0);
}

int RunScoreOffline(const ScoreOptions& options) {
  const std::string& model_dir = options.model;
  auto model = LoadModel(model_dir, options.compute_type);
  if (!model.ok()) return Fail(model.status());
  const Tokenizer* tok = (*model)->tokenizer();
  if (tok == nullptr) {
    return Fail(absl::StrCat(model_dir, ": the model has no tokenizer (no spiece.model, vocab_size ",
                             (*model)->config().vocab_size, " is not byte-level), so it cannot score text"));
  }
  if (!(*model)->config().is_decoder) {
    return Fail(absl::StrCat(model_dir, ": not a causal model (is_decoder: false); bits per byte need a causal LM"));
  }
  auto session = MakeSession(*model, options.threads);
  if (!session.ok()) return Fail(session.status());
  // Windows of the model's context, or fewer tokens with --window (0 = the context).
  int64_t window = (*model)->config().max_position_embeddings;
  if (options.window > 0) window = std::min(window, options.window);
  int rc = 0;
  for (const std::string& file : options.files) {
    std::string text;
    if (absl::Status st = ReadTextFile(file, &text); !st.ok()) {
      rc = Fail(st);
      continue;
    }
    // The slices `score --server` tokenizes in (tools/cli/text_files.h): both see the same ids.
    auto ids = EncodeInSlices(text, kTokenizeSliceBytes, [tok](const std::string& s) { return tok->Encode(s); });
    if (!ids.ok()) {
      rc = Fail(absl::StrCat(file, ": ", ids.status().message()));
      continue;
    }
    if (ids->size() < 2) {
      rc = Fail(absl::StrCat(file, ": needs at least 2 tokens to score, has ", ids->size()));
      continue;
    }
    ScoreTotals totals;
    const auto windows = SplitWindows(*ids, window);
    ProgressBar bar(file, static_cast<double>(ids->size()));
    double done = 0;
    bool failed = false;
    for (const auto& w : windows) {
      std::vector<DocumentOutput> outs;
      // The cancel hook doubles as a progress tick (it runs between layers).
      const double share = static_cast<double>(w.size());
      const int64_t layers = (*model)->config().num_layers();
      int64_t ticks = 0;
      CancelFn tick = [&]() {
        ++ticks;
        bar.Update(done + share * std::min<double>(1.0, static_cast<double>(ticks) / (2.0 * layers)));
        return false;
      };
      absl::Status st = (*session)->RunDocuments({w}, kOutputTokenLogprobs, &outs, tick);
      if (!st.ok()) {
        bar.Finish();
        rc = Fail(absl::StrCat(file, ": ", st.message()));
        failed = true;
        break;
      }
      totals.Add(ScoreWindow(w, outs[0].token_logprobs, tok));
      done += share;
      bar.Update(done);
    }
    bar.Finish();
    if (failed) continue;
    if (options.json) {
      nlohmann::json o = {{"file", file},
                          {"bits_per_byte", totals.bits_per_byte()},
                          {"perplexity", totals.perplexity()},
                          {"bytes", totals.bytes},
                          {"tokens", static_cast<int64_t>(ids->size())}};
      std::printf("%s\n", o.dump().c_str());
    } else {
      std::printf("%s: %.4f bits/byte, perplexity %.4f, %lld bytes, %lld tokens\n", file.c_str(),
                  totals.bits_per_byte(), totals.perplexity(), static_cast<long long>(totals.bytes),
                  static_cast<long long>(ids->size()));
    }
    std::fflush(stdout);
  }
  return rc;
}

}  // namespace reformer::cli
