// Workspace: accounting of the forward pass's working memory (per Session, single thread).
//
// Every buffer the forward allocates beyond the weights goes through a WsBuffer, which takes
// 64-byte aligned storage and adds its size to the owning Workspace's `current` counter; the
// high-water mark is what EstimatePeakWorkingBytes predicts (tests compare the two).
// Not thread-safe: a Workspace belongs to one Session (one thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "engine/base/check.h"

namespace reformer {

class Workspace {
 public:
  Workspace() = default;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  void Add(size_t bytes) {
    current_ += bytes;
    if (current_ > high_water_) high_water_ = current_;
  }
  void Sub(size_t bytes) {
    REFORMER_CHECK(bytes <= current_);
    current_ -= bytes;
  }
  size_t current() const { return current_; }
  size_t high_water() const { return high_water_; }
  void ResetHighWater() { high_water_ = current_; }

 private:
  size_t current_ = 0;
  size_t high_water_ = 0;
};

// An owning, 64-byte aligned, zero-initialised array counted against a Workspace.
template <typename T>
class WsBuffer {
 public:
  WsBuffer() = default;
  WsBuffer(Workspace* ws, size_t n) { Reset(ws, n); }
  ~WsBuffer() { Release(); }
  WsBuffer(const WsBuffer&) = delete;
  WsBuffer& operator=(const WsBuffer&) = delete;
  WsBuffer(WsBuffer&& o) noexcept { *this = std::move(o); }
  WsBuffer& operator=(WsBuffer&& o) noexcept {
    if (this != &o) {
      Release();
      ws_ = o.ws_;
      data_ = o.data_;
      size_ = o.size_;
      o.ws_ = nullptr;
      o.data_ = nullptr;
      o.size_ = 0;
    }
    return *this;
  }

  void Reset(Workspace* ws, size_t n) {
    Release();
    if (n == 0) return;
    size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
    data_ = static_cast<T*>(std::aligned_alloc(64, bytes));
    REFORMER_CHECK(data_ != nullptr);
    std::memset(static_cast<void*>(data_), 0, bytes);
    ws_ = ws;
    size_ = n;
    if (ws_) ws_->Add(n * sizeof(T));
  }
  void Release() {
    if (data_) {
      std::free(data_);
      if (ws_) ws_->Sub(size_ * sizeof(T));
    }
    data_ = nullptr;
    size_ = 0;
    ws_ = nullptr;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

 private:
  Workspace* ws_ = nullptr;
  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace reformer
