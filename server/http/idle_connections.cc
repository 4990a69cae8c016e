#include "server/http/idle_connections.h"

#include <iterator>

namespace reformer::serving {

void IdleConnections::Add(int fd, const std::string& client) {
  if (entries_.contains(fd)) return;
  Order& order = by_client_[client];
  all_.push_back(fd);
  order.push_back(fd);
  entries_.emplace(fd, Entry{std::prev(all_.end()), std::prev(order.end()), &order, client});
}

void IdleConnections::Remove(int fd) {
  auto it = entries_.find(fd);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  all_.erase(e.in_all);
  e.client_order->erase(e.in_client);
  if (e.client_order->empty()) by_client_.erase(e.client);
  entries_.erase(it);
}

std::optional<int> IdleConnections::Oldest() const {
  if (all_.empty()) return std::nullopt;
  return all_.front();
}

std::optional<int> IdleConnections::OldestOf(const std::string& client) const {
  auto it = by_client_.find(client);
  if (it == by_client_.end()) return std::nullopt;  // a listed client's order is never empty
  return it->second.front();
}

}  // namespace reformer::serving
