// offline_throughput: the engine alone on a list of document lengths (the baseline that served
// throughput is compared with). Random token ids, one Session, --threads OpenMP threads, documents run
// one at a time (default) or as ragged batches of up to --batch_tokens tokens in the given order.
//
//   offline_throughput --model_dir DIR --lengths_file lengths.txt [--threads 2] [--batch_tokens 0]
//                      [--outputs token_logprobs] [--repeat 1] [--compute_type float32]
// --compute_type is the server's (docs/isa.md §3), so served and offline run the same kernels.
// lengths.txt: one document length per line (tools/loadgen/loadgen.py --dump-lengths writes it).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/base/flags.h"
#include "engine/model/engine_api.h"

namespace {

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

struct Options {
  std::string model_dir;
  std::string lengths_file;
  int threads = 2;
  int64_t batch_tokens = 0;
  std::string outputs = "token_logprobs";
  int repeat = 1;
  std::string compute_type = "float32";
};

void RegisterFlags(Options* o, reformer::FlagSet* f) {
  f->Add("model_dir", &o->model_dir, "Model directory.").Meta("DIR").Required();
  f->Add("lengths_file", &o->lengths_file, "Document lengths, one per line (loadgen.py --dump-lengths).")
      .Meta("FILE")
      .Required();
  f->Add("threads", &o->threads, "OpenMP threads of the one session.").Range(1, 1024);
  f->Add("batch_tokens", &o->batch_tokens, "Ragged batches of up to this many tokens; 0 = one document each.")
      .Min(0);
  f->Add("outputs", &o->outputs, "Outputs computed.").OneOf({"token_logprobs", "logits", "hidden_states", "embedding", "all"});
  f->Add("repeat", &o->repeat, "Timed runs over all documents (the best is reported).").Range(1, 1000);
  f->Add("compute_type", &o->compute_type, "Compute type, as reformer-server's --compute_type.")
      .OneOf({"float32", "bfloat16", "int8", "auto"});
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  reformer::FlagSet flags("offline_throughput [flags]",
                          "The engine alone on a list of document lengths (see the file comment).");
  RegisterFlags(&o, &flags);
  if (std::optional<int> exit_code = flags.ParseOrExit(argc, argv)) return *exit_code;
  const std::string& model_dir = o.model_dir;
  const std::string& lengths_file = o.lengths_file;
  const std::string& outputs_name = o.outputs;
  const int threads = o.threads, repeat = o.repeat;
  const int64_t batch_tokens = o.batch_tokens;
  uint32_t outputs = 0;
  if (outputs_name == "token_logprobs") outputs = reformer::kOutputTokenLogprobs;
  else if (outputs_name == "logits") outputs = reformer::kOutputLogits;
  else if (outputs_name == "hidden_states") outputs = reformer::kOutputHiddenStates;
  else if (outputs_name == "embedding") outputs = reformer::kOutputEmbedding;
  else outputs = reformer::kOutputAll;

  std::vector<int64_t> lengths;
  std::ifstream in(lengths_file);
  for (int64_t n; in >> n;) lengths.push_back(n);
  if (lengths.empty()) {
    std::fprintf(stderr, "no lengths in %s\n", lengths_file.c_str());
    return 1;
  }
  auto type = reformer::ParseComputeType(o.compute_type);
  if (!type.ok()) {
    std::fprintf(stderr, "%s\n", type.status().ToString().c_str());
    return 1;
  }
  reformer::LoadOptions lo;
  lo.compute_type = *type;
  auto model = reformer::ReformerModel::Load(model_dir, lo);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  reformer::SessionOptions so;
  so.num_threads = threads;
  auto session = reformer::Session::Create(*model, so);
  if (!session.ok()) {
    std::fprintf(stderr, "%s\n", session.status().ToString().c_str());
    return 1;
  }
  const int64_t vocab = (*model)->config().vocab_size;
  std::mt19937 rng(1);
  std::vector<std::vector<int32_t>> docs;
  int64_t total = 0;
  for (int64_t n : lengths) {
    std::vector<int32_t> d(n);
    for (auto& t : d) t = static_cast<int32_t>(rng() % vocab);
    docs.push_back(std::move(d));
    total += n;
  }
  // Batches in order: one document each, or up to batch_tokens tokens.
  std::vector<std::vector<absl::Span<const int32_t>>> batches;
  for (const auto& d : docs) {
    const int64_t cur = batches.empty() ? 0 : [&] {
      int64_t s = 0;
      for (auto sp : batches.back()) s += static_cast<int64_t>(sp.size());
      return s;
    }();
    if (batches.empty() || batch_tokens <= 0 || cur + static_cast<int64_t>(d.size()) > batch_tokens) {
      batches.emplace_back();
    }
    batches.back().push_back(absl::MakeConstSpan(d));
  }
  // Warm-up on the first document.
  std::vector<reformer::DocumentOutput> out;
  std::vector<absl::Span<const int32_t>> warm = {batches[0][0]};
  if (auto s = (*session)->RunDocuments(warm, outputs, &out); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  double best = 1e300, best_cpu = 1e300;
  for (int r = 0; r < repeat; ++r) {
    const double cpu0 = CpuSeconds();
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& b : batches) {
      if (auto s = (*session)->RunDocuments(b, outputs, &out); !s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        return 1;
      }
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double cpu = CpuSeconds() - cpu0;
    best = std::min(best, sec);
    best_cpu = std::min(best_cpu, cpu);
    std::printf("run %d: %zu documents, %lld tokens in %.3f s (%.3f CPU s): %.2f docs/s, %.0f tokens/s\n", r,
                docs.size(), static_cast<long long>(total), sec, cpu, docs.size() / sec, total / sec);
  }
  // Tokens per CPU-second does not depend on how much of the machine other processes take.
  std::printf("offline best: %.2f docs/s, %.0f tokens/s, %.0f tokens/cpu_s (threads %d, batch_tokens %lld, "
              "%zu batches, compute type %s)\n",
              docs.size() / best, total / best, total / best_cpu, threads, static_cast<long long>(batch_tokens),
              batches.size(), reformer::ComputeTypeName((*model)->compute_type()));
  return 0;
}
