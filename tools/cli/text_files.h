// reformer-cli's text inputs, shared by the offline and the client commands: reading a file (a
// directory or an unreadable path is an error that says so), splitting text at safe points, and
// tokenizing a long text in slices so that `score` offline and `score --server` see the same ids.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace reformer::cli {

// Bytes of text per tokenization slice. A byte-level token is one byte and a SentencePiece token
// (engine/model/tokenizer.h) at least one character of the normalized text, so a slice has about
// as many tokens as bytes or fewer: within the server's default --max_tokens_per_request (8 x the
// context, 32,768 for the bundled model's 4,096; README.md). The client uses smaller slices when a
// server's limit is lower.
inline constexpr int64_t kTokenizeSliceBytes = 16384;

// The whole file; FAILED_PRECONDITION naming it when it is a directory, NOT_FOUND when unreadable.
absl::Status ReadTextFile(const std::string& path, std::string* text);

// Consecutive pieces of at most `max_bytes` bytes covering `text`, cut after the last newline or
// space of the second half of a piece when there is one, else never inside a UTF-8 sequence (a
// piece holds one whole multi-byte sequence even when `max_bytes` is smaller than it).
std::vector<std::string> SplitText(const std::string& text, int64_t max_bytes);

// OK when `text` is well-formed UTF-8 (what a protobuf `string` field must carry, so every text sent
// to a server); else INVALID_ARGUMENT naming `path` and the offset of the first bad byte, and
// saying what to do instead (reformer.v1 takes text as UTF-8; offline commands take any bytes).
absl::Status CheckUtf8(const std::string& path, const std::string& text);

// The ids of `text` as the concatenation of `encode` over SplitText(text, slice_bytes). With a
// byte-level tokenizer this equals encoding the whole text (one token per byte); with
// SentencePiece the cut points may tokenize differently, the same way in every caller.
using EncodeFn = std::function<absl::StatusOr<std::vector<int32_t>>(const std::string&)>;
absl::StatusOr<std::vector<int32_t>> EncodeInSlices(const std::string& text, int64_t slice_bytes,
                                                    const EncodeFn& encode);

}  // namespace reformer::cli
