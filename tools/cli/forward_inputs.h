// The inputs file of `reformer-cli forward`: {"input_ids": [[...], ...], "attention_mask": [[...], ...] | null}.
// Parsed as a stream of events straight into one id array and one mask array (no JSON tree, no
// further copies of the ids); other top-level fields are ignored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

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

}  // namespace reformer::cli
