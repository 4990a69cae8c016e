// ComputeSlots: how many HTTP worker threads may block on computation (REST inference, and later
// generation) at once. civetweb serves each connection on one of its threads and a handler that
// waits for the engine holds that thread; capping the computing handlers below the thread count
// keeps threads free for probes, /metrics and metadata under any REST load. A request that finds
// every slot taken is answered 503 at once (with Retry-After and Connection: close, so its
// connection does not hold a thread either). Thread-safe.
#pragma once

#include <atomic>

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
      if (owner_ != nullptr) owner_->in_use_.fetch_sub(1);
    }
    explicit operator bool() const { return owner_ != nullptr; }

   private:
    ComputeSlots* owner_ = nullptr;
  };

  Slot TryAcquire() {
    int n = in_use_.load();
    while (n < capacity_) {
      if (in_use_.compare_exchange_weak(n, n + 1)) return Slot(this);
    }
    return Slot();
  }
  int capacity() const { return capacity_; }
  int in_use() const { return in_use_.load(); }

 private:
  const int capacity_;
  std::atomic<int> in_use_{0};
};

}  // namespace reformer::serving
