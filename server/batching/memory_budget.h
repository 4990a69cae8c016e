// MemoryBudget: the one process-wide bound on the bytes the server holds for requests, shared by
// every worker: engine working memory of running batches, the outputs of requests until their
// responses have been sent, and (later) generation caches. `--memory_budget_bytes` sets it; the
// process needs about weights + budget + fixed overhead (deploy/README.md, "Scaling out").
//
// Use. A holder asks TryReserve(bytes, kind) and gets a MemoryReservation or nothing; it never
// waits and never blocks on other holders. A reservation is an RAII handle: movable, not copyable,
// returned to the budget when destroyed or Release()d. Split() moves part of a reservation to a
// new one of another kind (the scheduler reserves a batch's working memory and its outputs at once,
// then hands the output part to each request). Reservations keep the budget alive (shared
// ownership), so they may outlive whoever created the budget.
//
// Waiting for room is the holder's business: the BatchScheduler simply does not form a batch that
// does not fit, and a Listener hears every release so that workers can look again at once.
//
// Thread safety: all methods are thread-safe. Listeners are called on the releasing thread, after
// the bytes are free, with no budget lock held but serialized with Add/RemoveListener (so after
// RemoveListener returns the listener is never called again). A listener must not reserve or
// release memory of this budget and must not call Add/RemoveListener.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace reformer::serving {

enum class MemoryKind : int {
  kWorking = 0,  // engine working memory of a running batch (until the batch completes)
  kOutput = 1,   // a request's outputs (from its first batch until its response has been sent)
  kCache = 2,    // generation caches (reserved for issue 12)
};
inline constexpr int kNumMemoryKinds = 3;
// "working", "output", "cache" (metrics label values).
const char* MemoryKindName(MemoryKind kind);

class MemoryBudget;

class MemoryReservation {
 public:
  MemoryReservation() = default;  // holds nothing
  MemoryReservation(MemoryReservation&& other) noexcept;
  MemoryReservation& operator=(MemoryReservation&& other) noexcept;  // releases what this held
  MemoryReservation(const MemoryReservation&) = delete;
  MemoryReservation& operator=(const MemoryReservation&) = delete;
  ~MemoryReservation() { Release(); }

  size_t bytes() const { return bytes_; }
  MemoryKind kind() const { return kind_; }
  bool empty() const { return bytes_ == 0; }

  // Returns the bytes to the budget (listeners are told); the reservation then holds nothing.
  void Release();
  // Moves `bytes` (at most bytes()) into a new reservation of `kind`. The budget's free bytes do
  // not change, so nobody else can take them in between.
  MemoryReservation Split(size_t bytes, MemoryKind kind);
  // Takes over `other`'s bytes. Both must be of the same budget and kind (or one of them empty).
  void Merge(MemoryReservation other);

 private:
  friend class MemoryBudget;
  MemoryReservation(std::shared_ptr<MemoryBudget> budget, size_t bytes, MemoryKind kind)
      : budget_(std::move(budget)), bytes_(bytes), kind_(kind) {}

  std::shared_ptr<MemoryBudget> budget_;
  size_t bytes_ = 0;
  MemoryKind kind_ = MemoryKind::kWorking;
};

class MemoryBudget : public std::enable_shared_from_this<MemoryBudget> {
 public:
  class Listener {
   public:
    virtual ~Listener() = default;
    // Some bytes were returned (a reservation released or destroyed).
    virtual void OnMemoryReleased() = 0;
  };

  // INVALID_ARGUMENT unless total_bytes > 0 (the message names --memory_budget_bytes).
  static absl::StatusOr<std::shared_ptr<MemoryBudget>> Create(int64_t total_bytes);

  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // A reservation of `bytes` if they fit what is free now, else nullopt (never waits). Zero bytes
  // always succeed with an empty reservation.
  std::optional<MemoryReservation> TryReserve(size_t bytes, MemoryKind kind);

  size_t total_bytes() const { return total_; }
  size_t free_bytes() const;
  size_t reserved_bytes() const;
  size_t reserved_bytes(MemoryKind kind) const;

  // `listener` is borrowed; remove it before destroying it.
  void AddListener(Listener* listener);
  void RemoveListener(Listener* listener);

 private:
  struct Token {};  // keeps the constructor usable by make_shared only from Create

 public:
  MemoryBudget(Token, size_t total_bytes) : total_(total_bytes) {}

 private:
  friend class MemoryReservation;
  void Return(size_t bytes, MemoryKind kind);
  void Move(size_t bytes, MemoryKind from, MemoryKind to);

  const size_t total_;
  mutable absl::Mutex mu_;
  size_t reserved_[kNumMemoryKinds] ABSL_GUARDED_BY(mu_) = {0, 0, 0};
  size_t reserved_total_ ABSL_GUARDED_BY(mu_) = 0;
  // Held while listeners run, so that RemoveListener waits for a running call.
  absl::Mutex listeners_mu_;
  std::vector<Listener*> listeners_ ABSL_GUARDED_BY(listeners_mu_);
};

}  // namespace reformer::serving
