// CredentialPoller: the one thread that re-reads credential files (--auth_tokens_file, the TLS
// certificate, key and client CA) so that a rotation (cert-manager renewing a Secret, an operator
// editing the tokens file) takes effect without a restart.
//
// Polling, not inotify: Kubernetes updates a Secret volume by swapping a symlink to a new
// directory, which inotify watches on the files themselves miss; reading a few kilobytes every
// interval sees every kind of replacement. Each source decides from the file contents (a SHA-256
// fingerprint), not from timestamps, whether something changed, so no decision depends on time.
// The tests call the sources' Poll() directly and never wait for this thread.
//
// Owns its thread; the destructor stops and joins it. The callbacks run on that thread only, one
// after the other.
#pragma once

#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace reformer::serving {

// What one poll of a credential source found.
enum class ReloadResult {
  kUnchanged,  // same content as in force (or as last refused)
  kReloaded,   // new content validated and in force
  kRejected,   // new content refused (invalid): the previous credentials stay, the reason is logged
};

const char* ReloadResultName(ReloadResult result);  // "unchanged", "reloaded", "rejected"

class CredentialPoller {
 public:
  // Calls every function of `polls`, in order, each `interval` (> 0) until destroyed.
  CredentialPoller(absl::Duration interval, std::vector<std::function<void()>> polls);
  ~CredentialPoller();
  CredentialPoller(const CredentialPoller&) = delete;
  CredentialPoller& operator=(const CredentialPoller&) = delete;

 private:
  const absl::Duration interval_;
  const std::vector<std::function<void()>> polls_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace reformer::serving
