// Per-connection count of active Generate streams (fairness: one client connection must not hold
// every generation slot; docs/generation.md §10).
//
// A connection is named by a key the caller derives from the call (generate_reactor.cc's
// ConnectionKey: the peer address gRPC reports, e.g. "ipv4:10.0.0.7:51234", and the connection's
// auth context, which also tells apart the clients of one Unix socket): every call multiplexed over
// one HTTP/2 connection has the same key, two connections differ. Acquire counts a stream against its connection
// while the returned Slot lives; beyond the limit it is RESOURCE_EXHAUSTED naming the limit and the
// flag. An entry is erased when its count returns to zero, so the map holds only connections with
// active streams (bounded by the streams themselves). Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace reformer::serving {

class ConnectionStreams {
 public:
  // A stream counted against one connection until it is destroyed (or moved from).
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& other) noexcept : owner_(other.owner_), peer_(std::move(other.peer_)) { other.owner_ = nullptr; }
    Slot& operator=(Slot&& other) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { Release(); }

   private:
    friend class ConnectionStreams;
    Slot(ConnectionStreams* owner, std::string peer) : owner_(owner), peer_(std::move(peer)) {}
    void Release();
    ConnectionStreams* owner_ = nullptr;
    std::string peer_;
  };

  // `limit` >= 1: the most active streams of one connection; `flag` names the setting in messages.
  ConnectionStreams(int64_t limit, std::string flag) : limit_(limit), flag_(std::move(flag)) {}
  ConnectionStreams(const ConnectionStreams&) = delete;
  ConnectionStreams& operator=(const ConnectionStreams&) = delete;

  // A slot for one more stream of `peer`, or RESOURCE_EXHAUSTED when it already has `limit`.
  absl::StatusOr<Slot> Acquire(const std::string& peer);

  // Active streams of `peer` (tests).
  int64_t active(const std::string& peer) const;
  int64_t limit() const { return limit_; }

 private:
  void Release(const std::string& peer);

  const int64_t limit_;
  const std::string flag_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, int64_t> active_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reformer::serving
