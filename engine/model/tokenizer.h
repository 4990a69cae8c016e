// Tokenizers: SentencePiece (`spiece.model`) or byte-level (id = byte + 2, google/reformer-enwik8).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace reformer {

struct ReformerConfig;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const = 0;
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  // Bytes of text that token `id` stands for (for bits per byte).
  virtual int64_t TokenBytes(int32_t id) const = 0;
  // Bytes that tokens ids[1..] stand for: the denominator of bits per byte (the first token of a
  // scored window has no prediction).
  int64_t PredictedBytes(absl::Span<const int32_t> ids) const {
    int64_t bytes = 0;
    for (size_t t = 1; t < ids.size(); ++t) bytes += TokenBytes(ids[t]);
    return bytes;
  }
  virtual std::string Name() const = 0;

  // Picks the tokenizer for a model directory: spiece.model → SentencePiece; vocab 258 or a
  // tokenizer setting saying bytes → byte-level; otherwise nullptr (ids only).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> ForModelDir(const std::string& dir,
                                                                 const ReformerConfig& config);
};

}  // namespace reformer
