// Fuzz target: a SentencePiece model file (spiece.model) as a model directory loads it
// (engine/model/tokenizer.h -> engine/model/sentencepiece_wrapper.h -> libsentencepiece), then
// encoding and decoding with whatever model loaded. Input: the spiece.model bytes.
// Checks: every id Encode returns is inside the vocabulary the loader accepted, TokenBytes is
// non-negative, and Decode of any ids (including out-of-range ones) does not crash.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/model/config.h"
#include "engine/model/tokenizer.h"
#include "fuzz/fuzz_files.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "sentencepiece_fuzzer: invariant broken: %s\n", what);
    std::abort();
  }
}

constexpr int64_t kVocab = 4096;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static reformer::fuzz::ScratchDir dir("sentencepiece");
  dir.Write("spiece.model", std::string(reinterpret_cast<const char*>(data), size));
  reformer::ReformerConfig config;
  config.vocab_size = kVocab;
  auto tokenizer = reformer::Tokenizer::ForModelDir(dir.path(), config);
  if (!tokenizer.ok()) return 0;
  Check(*tokenizer != nullptr, "spiece.model present: a tokenizer or an error");
  const std::string text = "Hello, world! \xE2\x96\x81 caf\xC3\xA9 \xF0\x9F\x98\x80 1234 \t\n end";
  auto ids = (*tokenizer)->Encode(text);
  if (ids.ok()) {
    for (int32_t id : *ids) {
      Check(id >= 0 && id < kVocab, "encoded ids inside the vocabulary");
      Check((*tokenizer)->TokenBytes(id) >= 0, "token bytes >= 0");
    }
    (void)(*tokenizer)->Decode(*ids);
    (void)(*tokenizer)->PredictedBytes(*ids);
  }
  (void)(*tokenizer)->Decode({-1, 0, 1, 2, 3, 7, static_cast<int32_t>(kVocab) + 5});
  return 0;
}
