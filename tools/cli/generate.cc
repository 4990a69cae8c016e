// reformer-cli generate: text generation offline (--model DIR) or on a running reformer-server
// (--server HOST:PORT, default localhost:8001; reformer.v1 Generate, tools/cli/client.cc);
// docs/generation.md. `reformer-cli generate --help` lists the flags (RegisterGenerateFlags).
//
// --compute_type: float32 (default) is exact to Hugging Face; bfloat16 / int8 compute the dense
// products as docs/isa.md §3 describes (their deviation: docs/generation.md §8). It is offline
// only (a server runs its own --compute_type).
//
// With --server the same prompts and parameters give the same tokens as offline (the server
// computes each sequence as alone); --threads is offline only, --timeout and --token_file server only.
// Seed 0 (the default) means "pick one": offline picks a random nonzero seed per prompt here, the
// server picks one per request (server/request/generate_request.h); either way the seed used is
// reported (--json: "seed"; else on stderr), and passing it as --seed repeats the tokens in either mode.
// --inputs holds {"input_ids": [[...], ...]}: one prompt per row, rows of any length, no padding.
// --json prints one JSON object per prompt and line, in input order, after all prompts ran as one
// continuously batched generation; without it each prompt's text is streamed as it comes (token ids
// when the model has no tokenizer), prompts one after another.
#include "tools/cli/generate.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
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
#include "tools/cli/forward_inputs.h"

namespace reformer::cli {
namespace {

int UsageError(const std::string& message) {
  std::fprintf(stderr, "reformer-cli: %s\n(reformer-cli generate --help lists its flags)\n", message.c_str());
  return 2;
}

// A nonzero seed from the OS's entropy source, as the server picks one for seed 0.
uint64_t PickSeed() {
  std::random_device rd;
  uint64_t seed = 0;
  while (seed == 0) seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return seed;
}

// The engine's parameters from the flags; INVALID_ARGUMENT for a seed that is not a uint64.
absl::StatusOr<GenerationParams> ToParams(const GenerateCommandOptions& o) {
  GenerationParams p;
  p.max_new_tokens = o.max_new_tokens;
  p.mode = o.mode == "recompute" ? DecodeMode::kRecompute : DecodeMode::kCached;
  p.sampling.temperature = static_cast<float>(o.temperature);
  p.sampling.top_k = o.top_k;
  p.sampling.top_p = static_cast<float>(o.top_p);
  if (!absl::SimpleAtoi(o.seed, &p.sampling.seed))
    return absl::InvalidArgumentError(absl::StrCat("--seed ", o.seed, ": expected an integer in [0, 2^64)"));
  p.stop = o.stop;
  p.ignore_eos = o.ignore_eos;
  return p;
}

// Where the flags conflict with the mode (offline with --model, else on --server): a message, or "".
std::string ModeConflict(const FlagSet& flags, const GenerateCommandOptions& o) {
  if (o.inputs.empty() == !flags.Find("prompt")->was_set()) return "give exactly one of --inputs and --prompt";
  if (o.logprobs && !o.json) return "--logprobs needs --json (the streamed text has no place for them)";
  if (!o.model.empty()) {
    if (flags.Find("server")->was_set()) return "give --model (offline) or --server, not both";
    if (flags.Find("timeout")->was_set()) return "--timeout applies to --server only";
    if (flags.Find("token_file")->was_set()) return "--token_file applies to --server only";
    return "";
  }
  if (flags.Find("threads")->was_set()) return "--threads applies to offline generation (--model)";
  if (flags.Find("compute_type")->was_set()) return "--compute_type is for --model (offline); a server runs its own";
  return "";
}

absl::StatusOr<std::vector<std::vector<int32_t>>> ReadInputsFile(const GenerateCommandOptions& f);

absl::StatusOr<std::vector<std::vector<int32_t>>> ReadPrompts(const GenerateCommandOptions& f, const ReformerModel& model) {
  std::vector<std::vector<int32_t>> prompts;
  if (f.inputs.empty()) {
    if (model.tokenizer() == nullptr)
      return absl::InvalidArgumentError(absl::StrCat(f.model, ": the model has no tokenizer; use --inputs with ids"));
    absl::StatusOr<std::vector<int32_t>> ids = model.tokenizer()->Encode(f.prompt);
    if (!ids.ok()) return ids.status();
    prompts.push_back(*std::move(ids));
    return prompts;
  }
  return ReadInputsFile(f);
}

// One row of --inputs: a non-empty list of integers that fit int32 (a float, a boolean or a number
// beyond int32 is an error, never truncated or wrapped into another id); "" or the problem.
std::string ReadRow(const nlohmann::json& row, size_t r, std::vector<int32_t>* ids) {
  if (!row.is_array()) return absl::StrCat("input_ids row ", r, " is not a list of token ids");
  if (row.empty()) return absl::StrCat("input_ids row ", r, " is empty");
  for (size_t i = 0; i < row.size(); ++i) {
    const nlohmann::json& v = row[i];
    const bool fits = v.is_number_integer() && (v.is_number_unsigned() ? v.get<uint64_t>() <= INT32_MAX
                                                                       : v.get<int64_t>() >= INT32_MIN &&
                                                                             v.get<int64_t>() <= INT32_MAX);
    if (!fits) return absl::StrCat("input_ids row ", r, " position ", i, ": ", v.dump(), " is not a 32-bit integer");
    ids->push_back(v.get<int32_t>());
  }
  return "";
}

// --inputs: {"input_ids": [[...], ...]} and nothing else (generate takes no attention_mask: rows
// are prompts of any length, so there is no padding to mark).
absl::StatusOr<std::vector<std::vector<int32_t>>> ReadInputsFile(const GenerateCommandOptions& f) {
  std::vector<std::vector<int32_t>> prompts;
  std::ifstream in(f.inputs);
  if (!in) return absl::NotFoundError(absl::StrCat(f.inputs, ": cannot read"));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (!j.is_object() || !j.contains("input_ids") || !j["input_ids"].is_array() || j["input_ids"].empty())
      return absl::InvalidArgumentError(absl::StrCat(f.inputs, ": needs \"input_ids\": [[...], ...]"));
    for (const auto& [key, value] : j.items()) {
      if (key != "input_ids")
        return absl::InvalidArgumentError(absl::StrCat(f.inputs, ": unknown key \"", Escaped(key, 64),
                                                       "\" (generate reads only \"input_ids\", unpadded rows)"));
    }
    for (const auto& row : j["input_ids"]) {
      prompts.emplace_back();
      if (std::string bad = ReadRow(row, prompts.size() - 1, &prompts.back()); !bad.empty())
        return absl::InvalidArgumentError(absl::StrCat(f.inputs, ": ", bad));
    }
  } catch (const nlohmann::json::parse_error& e) {
    return absl::InvalidArgumentError(JsonSyntaxError(f.inputs, text, e.byte, e.what()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(f.inputs, ": ", e.what()));
  }
  return prompts;
}

void PrintJson(size_t index, const GenerationResult& r, uint64_t seed, bool text, bool logprobs) {
  nlohmann::json o = {{"index", index}, {"new_tokens", r.tokens}, {"finish_reason", FinishReasonName(r.finish)},
                      {"seed", seed}};
  if (text) o["text"] = r.text;
  if (logprobs) o["logprobs"] = r.logprobs;
  std::printf("%s\n", o.dump().c_str());
}

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "reformer-cli generate: %s\n", std::string(st.message()).c_str());
  return absl::IsInvalidArgument(st) ? 2 : 1;
}

int RunOnServer(const GenerateCommandOptions& o, const GenerationParams& params) {
  ServerGenerate g;
  g.client = o.client;
  g.has_text = o.inputs.empty();
  g.text = o.prompt;
  if (!g.has_text) {
    auto prompts = ReadInputsFile(o);
    if (!prompts.ok()) return Fail(prompts.status());
    g.prompts = *std::move(prompts);
  }
  g.params = params;
  g.json = o.json;
  g.logprobs = o.logprobs;
  return RunGenerateOnServer(g);
}

// Offline: every prompt with its own seed (PickSeed for seed 0), then --json or streamed text.
int RunOffline(const GenerateCommandOptions& o, const GenerationParams& params) {
  LoadOptions lo;
  lo.compute_type = *ParseComputeType(o.compute_type);  // OneOf-checked by the flag
  auto model = ReformerModel::Load(o.model, lo);
  if (!model.ok()) return Fail(model.status());
  std::fprintf(stderr, "reformer-cli generate: compute type %s\n", ComputeTypeName((*model)->compute_type()));
  auto prompts = ReadPrompts(o, **model);
  if (!prompts.ok()) return Fail(prompts.status());
  DecoderOptions d;
  d.num_threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto decoder = Decoder::Create(*model, d);
  if (!decoder.ok()) return Fail(decoder.status());
  std::vector<GenerationRequest> requests;
  for (auto& p : *prompts) {
    requests.push_back({std::move(p), params});
    if (params.sampling.seed == 0) requests.back().params.sampling.seed = PickSeed();
  }
  const bool has_text = (*model)->tokenizer() != nullptr;
  if (o.json) {
    auto results = Generate(decoder->get(), **model, requests);
    if (!results.ok()) return Fail(results.status());
    for (size_t i = 0; i < results->size(); ++i)
      PrintJson(i, (*results)[i], requests[i].params.sampling.seed, has_text, o.logprobs);
    return 0;
  }
  ::reformer::GenerateOptions go;
  go.on_delta = [&](size_t, const GenerationDelta& delta) {
    if (has_text) {
      std::fwrite(delta.text.data(), 1, delta.text.size(), stdout);
    } else {
      for (int32_t t : delta.token_ids) std::printf("%d ", t);
    }
    std::fflush(stdout);
  };
  for (size_t i = 0; i < requests.size(); ++i) {
    auto result = Generate(decoder->get(), **model, {&requests[i], 1}, go);
    if (!result.ok()) return Fail(result.status());
    std::printf("\n");
    std::fprintf(stderr, "[%zu: %zu tokens, finish_reason %s, seed %llu]\n", i, (*result)[0].tokens.size(),
                 FinishReasonName((*result)[0].finish),
                 static_cast<unsigned long long>(requests[i].params.sampling.seed));
  }
  return 0;
}

}  // namespace

void RegisterGenerateFlags(GenerateCommandOptions* o, FlagSet* f) {
  f->Add("model", &o->model, "Generate offline with this model directory (no server).").Meta("DIR");
  RegisterClientFlags(&o->client, f);
  f->Add("inputs", &o->inputs, "JSON {\"input_ids\": [[...], ...]}: one prompt per row, any lengths, no padding.")
      .Meta("FILE.json");
  f->Add("prompt", &o->prompt, "The prompt as text (models with a tokenizer).").Meta("TEXT");
  f->Add("max_new_tokens", &o->max_new_tokens, "Tokens to generate per prompt.")
      .Meta("N")
      .Range(1, INT32_MAX)  // the server's GenerateRequest field is an int32 (proto/reformer.proto)
      .Required();
  f->Add("mode", &o->mode, "Decoding: with a key/value cache, or recomputing every step (docs/generation.md).")
      .OneOf({"cached", "recompute"});
  f->Add("temperature", &o->temperature, "Sampling temperature; 0 = greedy.").Meta("T");
  f->Add("top_k", &o->top_k, "Keep the K most likely tokens; 0 = off.").Meta("K");
  f->Add("top_p", &o->top_p, "Nucleus sampling: keep the most likely tokens up to probability P; 1 = off.").Meta("P");
  f->Add("seed", &o->seed,
         "Sampling seed (an unsigned 64-bit integer); 0 = pick one and report it (--json \"seed\", else stderr). "
         "The same seed gives the same tokens offline and on a server.")
      .Meta("S");
  f->Add("stop", &o->stop, "Stop when the text contains STR (repeatable).").Meta("STR");
  f->Add("ignore_eos", &o->ignore_eos, "Do not stop at the end-of-sequence token.");
  f->Add("json", &o->json, "One JSON object per prompt and line, in input order, instead of streamed text.");
  f->Add("logprobs", &o->logprobs, "With --json: each new token's log probability.");
  f->Add("threads", &o->threads, "OpenMP threads for offline generation (--model); 0 = every core.").Range(0, 1024);
  RegisterComputeTypeFlag(&o->compute_type, f);
}

int RunGenerate(FlagSet& flags, GenerateCommandOptions& o) {
  if (std::string conflict = ModeConflict(flags, o); !conflict.empty()) return UsageError(conflict);
  absl::StatusOr<GenerationParams> params = ToParams(o);
  if (!params.ok()) return UsageError(std::string(params.status().message()));
  return o.model.empty() ? RunOnServer(o, *params) : RunOffline(o, *params);
}

#ifndef REFORMER_CLI_HAS_CLIENT
int RunGenerateOnServer(const ServerGenerate&) {
  std::fprintf(stderr, "reformer-cli generate: this build has no gRPC client; --server is not available\n");
  return 2;
}
#endif

}  // namespace reformer::cli
