// working_memory: the engine's memory estimates for one document as a server worker runs it
// (default session options: 256 MiB workspace budget, automatic tile), for measurement scripts.
//   working_memory MODEL_DIR TOKENS OUTPUTS     OUTPUTS: comma list of logits, hidden_states,
//                                               token_logprobs, embedding
// Prints one JSON line: {"working_bytes": EstimatePeakWorkingBytes, "output_bytes":
// EstimateOutputBytes}.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_split.h"
#include "engine/model/config.h"
#include "engine/model/engine_api.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: working_memory MODEL_DIR TOKENS OUTPUTS\n");
    return 2;
  }
  auto config = reformer::ReformerConfig::FromFile(std::string(argv[1]) + "/config.json");
  if (!config.ok()) {
    std::fprintf(stderr, "working_memory: %s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  char* end = nullptr;
  const long long tokens = std::strtoll(argv[2], &end, 10);
  if (end == argv[2] || *end != '\0' || tokens < 1) {
    std::fprintf(stderr, "working_memory: TOKENS must be a positive integer, got '%s'\n", argv[2]);
    return 2;
  }
  uint32_t outputs = 0;
  for (absl::string_view name : absl::StrSplit(argv[3], ',')) {
    if (name == "logits")
      outputs |= reformer::kOutputLogits;
    else if (name == "hidden_states")
      outputs |= reformer::kOutputHiddenStates;
    else if (name == "token_logprobs")
      outputs |= reformer::kOutputTokenLogprobs;
    else if (name == "embedding")
      outputs |= reformer::kOutputEmbedding;
    else {
      std::fprintf(stderr, "working_memory: unknown output '%s'\n", std::string(name).c_str());
      return 2;
    }
  }
  const int64_t lengths[] = {tokens};
  const reformer::SessionOptions options;
  std::printf("{\"working_bytes\": %zu, \"output_bytes\": %zu}\n",
              reformer::EstimatePeakWorkingBytes(*config, lengths, outputs, options),
              reformer::EstimateOutputBytes(*config, lengths, outputs));
  return 0;
}
