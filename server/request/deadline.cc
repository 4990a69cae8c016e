#include "server/request/deadline.h"

#include <algorithm>

namespace reformer::serving {

absl::Time EffectiveDeadline(const Clock& clock, std::chrono::system_clock::time_point rpc_deadline,
                             std::optional<absl::Duration> timeout) {
  const absl::Time now = clock.Now();
  absl::Time deadline = absl::InfiniteFuture();
  if (rpc_deadline != std::chrono::system_clock::time_point::max()) {
    const auto remaining = rpc_deadline - std::chrono::system_clock::now();
    // Beyond a year is "none" (and keeps the conversion far from overflow).
    if (remaining < std::chrono::hours(24 * 365)) {
      deadline =
          now + absl::FromChrono(std::chrono::duration_cast<std::chrono::nanoseconds>(remaining));
    }
  }
  if (timeout) deadline = std::min(deadline, now + *timeout);
  return deadline;
}

}  // namespace reformer::serving
