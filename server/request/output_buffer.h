// OutputBuffer: one response output's bytes, owned, allocated once and left uninitialised (the
// engine writes every element it is asked for; the request layer zeroes only padding). Large
// buffers come from fresh mappings, so their pages become resident only when written.
// An adapter may hand the memory on (Release) to whoever sends it, e.g. a gRPC slice that frees it
// with OutputBuffer::Free when the transport is done with it: the response is never copied.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"

namespace reformer::serving {

class OutputBuffer {
 public:
  OutputBuffer() = default;
  // RESOURCE_EXHAUSTED (with the size) when the memory is not available.
  static absl::StatusOr<OutputBuffer> Allocate(size_t bytes);

  char* data() const { return data_.get(); }
  size_t size() const { return size_; }
  template <typename T>
  T* as() const {
    return reinterpret_cast<T*>(data_.get());
  }
  // Gives up ownership; free the result with OutputBuffer::Free.
  char* Release();
  static void Free(void* data);

 private:
  struct Deleter {
    void operator()(char* p) const { Free(p); }
  };
  std::unique_ptr<char, Deleter> data_;
  size_t size_ = 0;
};

}  // namespace reformer::serving
