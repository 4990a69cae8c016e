// The status for an exception caught at a boundary (an RPC reactor, a worker). Call it only inside
// a catch block. Memory exhaustion is RESOURCE_EXHAUSTED (the client may retry smaller or later);
// any other exception is INTERNAL (our bug). The message names `where` it happened.
#pragma once

#include "absl/status/status.h"

namespace reformer::serving {

absl::Status CurrentExceptionStatus(const char* where);

}  // namespace reformer::serving
