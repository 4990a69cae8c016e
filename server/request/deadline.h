// A request's deadline from the RPC's deadline and the client's `timeout` parameter.
#pragma once

#include <chrono>
#include <optional>

#include "absl/time/time.h"
#include "server/batching/clock.h"

namespace reformer::serving {

// The earlier of `rpc_deadline` (a system_clock time point, max() = none) and now + timeout, on
// `clock`'s time line. Deadlines more than a year away count as none.
absl::Time EffectiveDeadline(const Clock& clock, std::chrono::system_clock::time_point rpc_deadline,
                             std::optional<absl::Duration> timeout);

}  // namespace reformer::serving
