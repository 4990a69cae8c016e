// reformer-cli generate: text generation offline (--model DIR) or on a running reformer-server
// (--server HOST:PORT, reformer.v1 Generate; tools/cli/client.cc); docs/generation.md.
//
//   reformer-cli generate (--model DIR | --server HOST:PORT) (--inputs FILE.json | --prompt TEXT)
//       --max_new_tokens N [--mode cached|recompute] [--temperature T] [--top_k K] [--top_p P]
//       [--seed S] [--stop STR]... [--ignore_eos] [--json] [--logprobs] [--threads N] [--timeout_s S]
//       [--compute_type float32|bfloat16|int8|auto]
//
// --compute_type: float32 (default) is exact to Hugging Face; bfloat16 / int8 compute the dense
// products as docs/isa.md §3 describes (their deviation: docs/generation.md §8). It is offline
// only (a server runs its own --compute_type).
//
// With --server the same prompts and parameters give the same tokens as offline (the server
// computes each sequence as alone); --threads is offline only, --timeout_s server only.
// --inputs holds {"input_ids": [[...], ...]}: one prompt per row, rows of any length, no padding.
// --json prints one JSON object per prompt and line, in input order, after all prompts ran as one
// continuously batched generation; without it each prompt's text is streamed as it comes (token ids
// when the model has no tokenizer), prompts one after another.
#include "tools/cli/generate.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/base/compute_type.h"
#include "engine/model/generation.h"
#include "engine/model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace reformer::cli {
namespace {

constexpr char kUsage[] =
    "usage: reformer-cli generate (--model DIR | --server HOST:PORT) (--inputs FILE.json | --prompt TEXT)\n"
    "       --max_new_tokens N [--mode cached|recompute] [--temperature T] [--top_k K] [--top_p P] [--seed S]\n"
    "       [--stop STR]... [--ignore_eos] [--json] [--logprobs] [--threads N (offline)]\n"
    "       [--compute_type float32|bfloat16|int8|auto (offline)] [--timeout_s S (server)]\n"
    "       [--token_file FILE (server; else $REFORMER_TOKEN)]";

struct Flags {
  std::string model, server, inputs, prompt, mode = "cached", token_file;
  double timeout_s = 600;
  ComputeTypeRequest compute_type;
  bool compute_type_given = false;
  std::vector<std::string> stop;
  int64_t max_new_tokens = -1, threads = 0;
  GenerationParams params;
  bool json = false, logprobs = false, has_prompt = false;
};

// Strict parsing: every flag known, every value present and well-formed.
absl::Status ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 0; i < argc; ++i) {
    std::string name = argv[i], value;
    if (name.rfind("--", 0) != 0) return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", name, "'"));
    name = name.substr(2);
    const size_t eq = name.find('=');
    const bool boolean = name == "json" || name == "logprobs" || name == "ignore_eos";
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (!boolean) {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    auto bad = [&]() { return absl::InvalidArgumentError(absl::StrCat("--", name, ": bad value '", value, "'")); };
    if (name == "model") {
      f->model = value;
    } else if (name == "server") {
      f->server = value;
    } else if (name == "token_file") {
      if (value.empty()) return bad();
      f->token_file = value;
    } else if (name == "timeout_s") {
      if (!absl::SimpleAtod(value, &f->timeout_s) || !(f->timeout_s > 0)) return bad();
    } else if (name == "inputs") {
      f->inputs = value;
    } else if (name == "prompt") {
      f->prompt = value;
      f->has_prompt = true;
    } else if (name == "mode") {
      if (value != "cached" && value != "recompute") return bad();
      f->params.mode = value == "cached" ? DecodeMode::kCached : DecodeMode::kRecompute;
    } else if (name == "max_new_tokens") {
      if (!absl::SimpleAtoi(value, &f->max_new_tokens)) return bad();
    } else if (name == "temperature") {
      if (!absl::SimpleAtof(value, &f->params.sampling.temperature)) return bad();
    } else if (name == "top_k") {
      if (!absl::SimpleAtoi(value, &f->params.sampling.top_k)) return bad();
    } else if (name == "top_p") {
      if (!absl::SimpleAtof(value, &f->params.sampling.top_p)) return bad();
    } else if (name == "seed") {
      if (!absl::SimpleAtoi(value, &f->params.sampling.seed)) return bad();
    } else if (name == "stop") {
      f->params.stop.push_back(value);
    } else if (name == "compute_type") {
      auto type = ParseComputeType(value);
      if (!type.ok()) return bad();
      f->compute_type = *type;
      f->compute_type_given = true;
    } else if (name == "threads") {
      if (!absl::SimpleAtoi(value, &f->threads) || f->threads < 1) return bad();
    } else if (name == "ignore_eos" || name == "json" || name == "logprobs") {
      if (eq != std::string::npos) return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      (name == "json" ? f->json : name == "logprobs" ? f->logprobs : f->params.ignore_eos) = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  if (f->model.empty() == f->server.empty()) {
    return absl::InvalidArgumentError("give exactly one of --model DIR (offline) and --server HOST:PORT");
  }
  if (!f->server.empty() && f->threads > 0) return absl::InvalidArgumentError("--threads is for --model (offline)");
  if (!f->server.empty() && f->compute_type_given) {
    return absl::InvalidArgumentError("--compute_type is for --model (offline); a server runs its own");
  }
  if (f->inputs.empty() == !f->has_prompt) return absl::InvalidArgumentError("give exactly one of --inputs and --prompt");
  if (f->max_new_tokens < 0) return absl::InvalidArgumentError("--max_new_tokens is required");
  f->params.max_new_tokens = f->max_new_tokens;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<int32_t>>> ReadInputsFile(const Flags& f);

absl::StatusOr<std::vector<std::vector<int32_t>>> ReadPrompts(const Flags& f, const ReformerModel& model) {
  std::vector<std::vector<int32_t>> prompts;
  if (f.has_prompt) {
    if (model.tokenizer() == nullptr)
      return absl::InvalidArgumentError(absl::StrCat(f.model, ": the model has no tokenizer; use --inputs with ids"));
    absl::StatusOr<std::vector<int32_t>> ids = model.tokenizer()->Encode(f.prompt);
    if (!ids.ok()) return ids.status();
    prompts.push_back(*std::move(ids));
    return prompts;
  }
  return ReadInputsFile(f);
}

// --inputs: {"input_ids": [[...], ...]}.
absl::StatusOr<std::vector<std::vector<int32_t>>> ReadInputsFile(const Flags& f) {
  std::vector<std::vector<int32_t>> prompts;
  std::ifstream in(f.inputs);
  if (!in) return absl::NotFoundError(absl::StrCat(f.inputs, ": cannot read"));
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    const nlohmann::json j = nlohmann::json::parse(ss.str());
    if (!j.contains("input_ids") || !j["input_ids"].is_array() || j["input_ids"].empty())
      return absl::InvalidArgumentError(absl::StrCat(f.inputs, ": needs \"input_ids\": [[...], ...]"));
    for (const auto& row : j["input_ids"]) prompts.push_back(row.get<std::vector<int32_t>>());
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(f.inputs, ": ", e.what()));
  }
  return prompts;
}

void PrintJson(size_t index, const GenerationResult& r, bool text, bool logprobs) {
  nlohmann::json o = {{"index", index}, {"new_tokens", r.tokens}, {"finish_reason", FinishReasonName(r.finish)}};
  if (text) o["text"] = r.text;
  if (logprobs) o["logprobs"] = r.logprobs;
  std::printf("%s\n", o.dump().c_str());
}

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "reformer-cli generate: %s\n", std::string(st.message()).c_str());
  return absl::IsInvalidArgument(st) ? 2 : 1;
}

int RunOnServer(const Flags& f) {
  ServerGenerate g;
  g.server = f.server;
  g.has_text = f.has_prompt;
  g.text = f.prompt;
  if (!f.has_prompt) {
    auto prompts = ReadInputsFile(f);
    if (!prompts.ok()) return Fail(prompts.status());
    g.prompts = *std::move(prompts);
  }
  g.params = f.params;
  g.json = f.json;
  g.logprobs = f.logprobs;
  g.timeout_s = f.timeout_s;
  g.token_file = f.token_file;
  return RunGenerateOnServer(g);
}

}  // namespace

int RunGenerate(int argc, char** argv) {
  Flags f;
  absl::Status st = ParseFlags(argc, argv, &f);
  if (!st.ok()) {
    std::fprintf(stderr, "reformer-cli generate: %s\n%s\n", std::string(st.message()).c_str(), kUsage);
    return 2;
  }
  if (!f.server.empty()) return RunOnServer(f);
  LoadOptions lo;
  lo.compute_type = f.compute_type;
  auto model = ReformerModel::Load(f.model, lo);
  if (!model.ok()) return Fail(model.status());
  if (f.compute_type_given)
    std::fprintf(stderr, "reformer-cli generate: compute type %s\n", ComputeTypeName((*model)->compute_type()));
  auto prompts = ReadPrompts(f, **model);
  if (!prompts.ok()) return Fail(prompts.status());
  DecoderOptions o;
  o.num_threads = f.threads > 0 ? static_cast<int>(f.threads)
                                : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto decoder = Decoder::Create(*model, o);
  if (!decoder.ok()) return Fail(decoder.status());
  std::vector<GenerationRequest> requests;
  for (auto& p : *prompts) requests.push_back({std::move(p), f.params});
  const bool has_text = (*model)->tokenizer() != nullptr;
  if (f.json) {
    auto results = Generate(decoder->get(), **model, requests);
    if (!results.ok()) return Fail(results.status());
    for (size_t i = 0; i < results->size(); ++i) PrintJson(i, (*results)[i], has_text, f.logprobs);
    return 0;
  }
  GenerateOptions go;
  go.on_delta = [&](size_t, const GenerationDelta& d) {
    if (has_text) {
      std::fwrite(d.text.data(), 1, d.text.size(), stdout);
    } else {
      for (int32_t t : d.token_ids) std::printf("%d ", t);
    }
    std::fflush(stdout);
  };
  for (size_t i = 0; i < requests.size(); ++i) {
    auto result = Generate(decoder->get(), **model, {&requests[i], 1}, go);
    if (!result.ok()) return Fail(result.status());
    std::printf("\n");
    std::fprintf(stderr, "[%zu: %zu tokens, finish_reason %s]\n", i, (*result)[0].tokens.size(),
                 FinishReasonName((*result)[0].finish));
  }
  return 0;
}

#ifndef REFORMER_CLI_HAS_CLIENT
int RunGenerateOnServer(const ServerGenerate&) {
  std::fprintf(stderr, "reformer-cli generate: this build has no gRPC client; --server is not available\n");
  return 2;
}
#endif

}  // namespace reformer::cli
