#include "server/security/credential_poller.h"

#include <utility>

namespace reformer::serving {

const char* ReloadResultName(ReloadResult result) {
  switch (result) {
    case ReloadResult::kUnchanged:
      return "unchanged";
    case ReloadResult::kReloaded:
      return "reloaded";
    case ReloadResult::kRejected:
      return "rejected";
  }
  return "unknown";
}

CredentialPoller::CredentialPoller(absl::Duration interval,
                                   std::vector<std::function<void()>> polls)
    : interval_(interval), polls_(std::move(polls)) {
  thread_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(interval_)) {
      for (const std::function<void()>& poll : polls_) poll();
    }
  });
}

CredentialPoller::~CredentialPoller() {
  stop_.Notify();
  thread_.join();
}

}  // namespace reformer::serving
