// ComputeSlots: how many HTTP worker threads may block on computation (REST inference, and later
// generation) at once. A handler on one of the front's --http_threads threads that
// waits for the engine holds that thread; capping the computing handlers below the thread count
// keeps threads free for probes, /metrics and metadata under any REST load. A request that finds
// every slot taken is answered 503 at once (with Retry-After and Connection: close, so its
// connection does not hold a thread either). A slot is held until the handler has written its
// response, so WaitIdle() tells shutdown when every answer is out. Thread-safe.
#pragma once

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace reformer::serving {

class ComputeSlots {
 public:
  explicit ComputeSlots(int capacity) : capacity_(capacity) {}

  // A held slot, released on destruction; false when none was free.
  class Slot {
   public:
    Slot() = default;
    explicit Slot(ComputeSlots* owner) : owner_(owner) {}
    Slot(Slot&& other) noexcept : owner_(other.owner_) { other.owner_ = nullptr; }
    Slot& operator=(Slot&&) = delete;
    ~Slot() {
      if (owner_ != nullptr) owner_->Release();
    }
    explicit operator bool() const { return owner_ != nullptr; }

   private:
    ComputeSlots* owner_ = nullptr;
  };

  Slot TryAcquire() {
    absl::MutexLock lock(&mu_);
    if (in_use_ >= capacity_) return Slot();
    ++in_use_;
    return Slot(this);
  }
  // Waits (real time, at most `timeout`) until no slot is held; true if none is.
  bool WaitIdle(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_use_ == 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
  }
  int capacity() const { return capacity_; }
  int in_use() const {
    absl::MutexLock lock(&mu_);
    return in_use_;
  }

 private:
  void Release() {
    absl::MutexLock lock(&mu_);
    --in_use_;
  }

  const int capacity_;
  mutable absl::Mutex mu_;
  int in_use_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace reformer::serving
