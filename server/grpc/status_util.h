// The one place absl::Status becomes grpc::Status (canonical codes map one to one).
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace reformer::serving {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace reformer::serving
