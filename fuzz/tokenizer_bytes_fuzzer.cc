// Fuzz target: the byte-level tokenizer as a model directory selects it (engine/model/tokenizer.h):
// tokenizer_config.json is parsed to decide, then text is encoded and ids decoded.
// Input: tokenizer_config.json bytes, then a 0 byte, then text (missing parts are empty).
// Checks: whenever the byte tokenizer is chosen, Decode(Encode(text)) == text, every id is in
// [2, 258), and PredictedBytes counts all but the first byte.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/model/config.h"
#include "engine/model/tokenizer.h"
#include "fuzz/fuzz_files.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tokenizer_bytes_fuzzer: invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* begin = reinterpret_cast<const char*>(data);
  const char* nul = static_cast<const char*>(std::memchr(begin, 0, size));
  const std::string json(begin, nul == nullptr ? size : static_cast<size_t>(nul - begin));
  const std::string text = nul == nullptr ? std::string() : std::string(nul + 1, begin + size);

  static reformer::fuzz::ScratchDir dir("tokenizer_bytes");
  dir.Write("tokenizer_config.json", json);
  reformer::ReformerConfig config;
  config.vocab_size = 320;  // not 258: only tokenizer_config.json can select the byte tokenizer
  auto tokenizer = reformer::Tokenizer::ForModelDir(dir.path(), config);
  if (!tokenizer.ok() || *tokenizer == nullptr) return 0;
  auto ids = (*tokenizer)->Encode(text);
  Check(ids.ok(), "byte encoding never fails");
  Check(ids->size() == text.size(), "one id per byte");
  for (int32_t id : *ids) Check(id >= 2 && id < 258, "ids in [2, 258)");
  Check((*tokenizer)->Decode(*ids) == text, "decode(encode(text)) == text");
  Check((*tokenizer)->PredictedBytes(*ids) == static_cast<int64_t>(text.size() > 0 ? text.size() - 1 : 0),
        "predicted bytes = bytes after the first");
  return 0;
}
