#include "server/grpc/auth.h"

#include <optional>

#include "absl/strings/string_view.h"
#include "server/security/token_store.h"

namespace reformer::serving {

absl::StatusOr<std::string> Authenticate(const ServiceEnv& env,
                                         const grpc::ServerContextBase& ctx) {
  if (env.tokens == nullptr) return std::string(kAnonymousTenant);
  const auto& metadata = ctx.client_metadata();
  const auto range = metadata.equal_range("authorization");
  std::optional<absl::string_view> value;
  for (auto it = range.first; it != range.second; ++it) {
    if (value.has_value())
      return absl::UnauthenticatedError("more than one authorization metadata entry");
    value = absl::string_view(it->second.data(), it->second.size());
  }
  return env.tokens->Authenticate(value);
}

}  // namespace reformer::serving
