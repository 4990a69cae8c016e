#include "server/request/output_buffer.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace reformer::serving {

absl::StatusOr<OutputBuffer> OutputBuffer::Allocate(size_t bytes) {
  // Beyond any machine's memory: refuse without asking the allocator (sanitizer allocators abort).
  constexpr size_t kMaxBytes = size_t{1} << 46;
  // 64-byte alignment: rows the engine writes start on cache lines when their width allows.
  void* p = nullptr;
  if (bytes > kMaxBytes || posix_memalign(&p, 64, bytes == 0 ? 64 : bytes) != 0 || p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", bytes, " bytes for a response output"));
  }
  OutputBuffer buffer;
  buffer.data_.reset(static_cast<char*>(p));
  buffer.size_ = bytes;
  return buffer;
}

char* OutputBuffer::Release() {
  size_ = 0;
  return data_.release();
}

void OutputBuffer::Free(void* data) { std::free(data); }

}  // namespace reformer::serving
