#include "server/http/model_path.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"

namespace reformer::serving {

std::optional<ModelPath> ParseModelPath(absl::string_view path) {
  constexpr absl::string_view kPrefix = "/v2/models/";
  if (!absl::ConsumePrefix(&path, kPrefix)) return std::nullopt;
  std::vector<absl::string_view> parts = absl::StrSplit(path, '/');
  ModelPath out;
  out.name = std::string(parts[0]);
  size_t next = 1;
  if (parts.size() >= 3 && parts[1] == "versions") {
    out.version = std::string(parts[2]);
    if (out.version.empty()) return std::nullopt;
    next = 3;
  }
  if (parts.size() > next + 1) return std::nullopt;
  if (parts.size() == next + 1) out.action = std::string(parts[next]);
  if (out.name.empty()) return std::nullopt;
  return out;
}

}  // namespace reformer::serving
