#include "server/request/documents.h"

#include <algorithm>

namespace reformer::serving {

void Documents::Reserve(int64_t documents, int64_t tokens) {
  offsets_.reserve(offsets_.size() + static_cast<size_t>(documents));
  ids_.reserve(ids_.size() + static_cast<size_t>(tokens));
}

int32_t* Documents::Append(int64_t n) {
  const size_t start = ids_.size();
  ids_.resize(start + static_cast<size_t>(n));
  offsets_.push_back(static_cast<int64_t>(ids_.size()));
  return ids_.data() + start;
}

void Documents::Append(absl::Span<const int32_t> ids) {
  int32_t* dst = Append(static_cast<int64_t>(ids.size()));
  std::copy(ids.begin(), ids.end(), dst);
}

}  // namespace reformer::serving
