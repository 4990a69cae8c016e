// IdleConnections: the HTTP front's evictable connections (http_front.h: kept alive between
// requests, or open without a byte of a head yet) in the order they became evictable, overall and
// per client address, so that the event loop finds the oldest one to evict at a connection limit
// without scanning. Every operation is O(1) (hash lookups and list links). Holds descriptors only;
// the loop owns the connections. Thread-compatible: the loop's thread only.
#pragma once

#include <cstddef>
#include <list>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"

namespace reformer::serving {

class IdleConnections {
 public:
  // `fd`, from `client`, as the newest; no effect when it is listed already.
  void Add(int fd, const std::string& client);
  // No effect when `fd` is not listed.
  void Remove(int fd);
  bool Contains(int fd) const { return entries_.contains(fd); }
  // The oldest listed connection, overall or from `client`; nullopt when there is none.
  std::optional<int> Oldest() const;
  std::optional<int> OldestOf(const std::string& client) const;
  size_t size() const { return entries_.size(); }

 private:
  using Order = std::list<int>;  // oldest first
  struct Entry {
    Order::iterator in_all;
    Order::iterator in_client;
    Order* client_order;  // in by_client_ (a node map: its address is stable)
    std::string client;
  };

  Order all_;
  absl::node_hash_map<std::string, Order> by_client_;
  absl::flat_hash_map<int, Entry> entries_;
};

}  // namespace reformer::serving
