#include "server/grpc/connection_streams.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace reformer::serving {

ConnectionStreams::Slot& ConnectionStreams::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    Release();
    owner_ = other.owner_;
    peer_ = std::move(other.peer_);
    other.owner_ = nullptr;
  }
  return *this;
}

void ConnectionStreams::Slot::Release() {
  if (owner_ != nullptr) owner_->Release(peer_);
  owner_ = nullptr;
}

absl::StatusOr<ConnectionStreams::Slot> ConnectionStreams::Acquire(const std::string& peer) {
  {
    absl::MutexLock lock(&mu_);
    int64_t& n = active_[peer];
    if (n >= limit_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "this connection (", peer, ") already has ", n, " active Generate streams, the most one connection may "
          "hold (--", flag_, "=", limit_, "); wait for one to finish or open another connection"));
    }
    ++n;
  }
  return Slot(this, peer);
}

int64_t ConnectionStreams::active(const std::string& peer) const {
  absl::MutexLock lock(&mu_);
  auto it = active_.find(peer);
  return it == active_.end() ? 0 : it->second;
}

void ConnectionStreams::Release(const std::string& peer) {
  absl::MutexLock lock(&mu_);
  auto it = active_.find(peer);
  if (it == active_.end()) return;
  if (--it->second <= 0) active_.erase(it);
}

}  // namespace reformer::serving
