// The inputs file of `reformer-cli forward`: {"input_ids": [[...], ...], "attention_mask": [[...], ...] | null}.
// Parsed as a stream of events straight into one id array and one mask array (no JSON tree, no
// further copies of the ids); other top-level fields are ignored. Also the terminal-safe JSON
// error messages that every JSON input of reformer-cli uses (forward and generate --inputs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace reformer::cli {

struct ForwardInputs {
  int64_t batch = 0;           // B rows
  int64_t length = 0;          // T ids per row
  std::vector<int32_t> ids;    // [B * T]
  std::vector<uint8_t> mask;   // [B * T] (0/1) or empty when the file has no attention_mask
};

// Errors (INVALID_ARGUMENT, NOT_FOUND) name the file and, where there is one, the row.
absl::StatusOr<ForwardInputs> ReadForwardInputs(const std::string& path);
// Same, from JSON text; `source` names it in errors.
absl::StatusOr<ForwardInputs> ParseForwardInputs(const char* begin, const char* end, const std::string& source);

// `s` for a terminal: every byte outside printable ASCII (and the backslash) as \\xNN, cut after
// `max` input bytes with "..." when longer.
std::string Escaped(absl::string_view s, size_t max);

// The message for a JSON syntax error in `text`, safe for a terminal whatever the file holds:
// `source: not valid JSON at byte OFFSET (near "..."): <the parser's reason>`, where OFFSET counts
// from 0, `position` is nlohmann's (bytes read including the bad one), every byte outside printable
// ASCII in the excerpt and the reason is written \xNN, and both are bounded (16 bytes, 200).
std::string JsonSyntaxError(const std::string& source, absl::string_view text, size_t position,
                            absl::string_view what);

}  // namespace reformer::cli
