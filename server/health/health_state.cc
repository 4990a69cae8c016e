#include "server/health/health_state.h"

#include <utility>

namespace reformer::serving {

const char* ServingStateName(ServingState state) {
  switch (state) {
    case ServingState::kStarting:
      return "STARTING";
    case ServingState::kReady:
      return "READY";
    case ServingState::kDraining:
      return "DRAINING";
  }
  return "UNKNOWN";
}

void HealthState::SetReady() {
  {
    absl::MutexLock lock(&mu_);
    if (state_ != ServingState::kStarting) return;
  }
  Transition(ServingState::kReady);
}

void HealthState::StartDraining() {
  {
    absl::MutexLock lock(&mu_);
    if (state_ == ServingState::kDraining) return;
  }
  Transition(ServingState::kDraining);
}

void HealthState::Transition(ServingState to) {
  std::vector<Listener> listeners;
  {
    absl::MutexLock lock(&mu_);
    // Re-check under the lock: forward moves only.
    if (static_cast<int>(to) <= static_cast<int>(state_)) return;
    state_ = to;
    listeners = listeners_;
  }
  for (const Listener& listener : listeners) listener(to);
}

ServingState HealthState::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

void HealthState::AddListener(Listener listener) {
  absl::MutexLock lock(&mu_);
  listeners_.push_back(std::move(listener));
}

absl::Status ServingStatus(const HealthState& health) {
  switch (health.state()) {
    case ServingState::kReady:
      return absl::OkStatus();
    case ServingState::kStarting:
      return absl::UnavailableError("the server is starting (model loading or warming up); retry");
    case ServingState::kDraining:
      return absl::UnavailableError(
          "the server is shutting down and accepts no new requests; retry on another replica");
  }
  return absl::UnavailableError("not serving");
}

}  // namespace reformer::serving
