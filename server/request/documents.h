// Documents: the token ids of one request's documents, stored once and compactly (one int32 buffer
// and document offsets). Decoders append straight into it; the engine reads spans of it.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace reformer::serving {

class Documents {
 public:
  // Reserves room; call only with counts that are present in the request (never a declared size).
  void Reserve(int64_t documents, int64_t tokens);
  // Appends a document of `n` ids and returns where to write them.
  int32_t* Append(int64_t n);
  void Append(absl::Span<const int32_t> ids);

  int64_t size() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  bool empty() const { return size() == 0; }
  int64_t total_tokens() const { return static_cast<int64_t>(ids_.size()); }
  // Where document `d` starts in the concatenation of all documents.
  int64_t offset(int64_t d) const { return offsets_[d]; }
  int64_t length(int64_t d) const { return offsets_[d + 1] - offsets_[d]; }
  absl::Span<const int32_t> operator[](int64_t d) const {
    return absl::MakeConstSpan(ids_.data() + offsets_[d], static_cast<size_t>(length(d)));
  }

 private:
  std::vector<int32_t> ids_;
  std::vector<int64_t> offsets_{0};
};

}  // namespace reformer::serving
