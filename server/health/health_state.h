// HealthState: the server's serving state machine, STARTING -> READY -> DRAINING.
//
// Built in main and passed (borrowed) to the gRPC services, the HTTP endpoints and the health
// service. Transitions only move forward: SetReady() is ignored once draining; StartDraining() is
// final. Listeners run synchronously on the thread that made the transition, outside the lock.
// Thread-safe.
#pragma once

#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace reformer::serving {

enum class ServingState { kStarting, kReady, kDraining };

const char* ServingStateName(ServingState state);

class HealthState;
// OK when `health` is READY; otherwise UNAVAILABLE saying why (starting or draining). Every adapter
// checks this before it submits work.
absl::Status ServingStatus(const HealthState& health);

class HealthState {
 public:
  using Listener = std::function<void(ServingState)>;

  HealthState() = default;
  HealthState(const HealthState&) = delete;
  HealthState& operator=(const HealthState&) = delete;

  // STARTING -> READY (model loaded and warmed up). No effect in any other state.
  void SetReady();
  // Any state -> DRAINING. Idempotent.
  void StartDraining();

  ServingState state() const;
  // The process answers: always true while it runs.
  bool live() const { return true; }
  // Accepting inference work: READY only.
  bool ready() const { return state() == ServingState::kReady; }
  bool draining() const { return state() == ServingState::kDraining; }

  // `listener` is called with the new state after every transition (not with the current one).
  void AddListener(Listener listener);

 private:
  void Transition(ServingState to);

  mutable absl::Mutex mu_;
  ServingState state_ ABSL_GUARDED_BY(mu_) = ServingState::kStarting;
  std::vector<Listener> listeners_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reformer::serving
