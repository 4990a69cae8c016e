// The KServe v2 model paths: /v2/models/{name}[/versions/{version}][/{action}], where action is
// empty (metadata), "ready", "config", "stats", "infer" (and more as endpoints are added, e.g.
// "generate"). A pure function of the path; no check that the model exists.
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace reformer::serving {

struct ModelPath {
  std::string name;
  std::string version;  // empty = not given
  std::string action;   // empty = the model itself
};

// nullopt when `path` is not under /v2/models/ or has an empty name or version.
std::optional<ModelPath> ParseModelPath(absl::string_view path);

}  // namespace reformer::serving
