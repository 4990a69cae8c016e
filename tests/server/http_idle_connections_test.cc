// IdleConnections (server/http/idle_connections.h): the oldest evictable connection, overall and
// per client, as connections become idle and busy again. ClientKey (server/http/http_front.h):
// the per-client limit's key, an IPv4 address or an IPv6 /64.
#include "server/http/idle_connections.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "server/http/http_front.h"

namespace reformer::serving {
namespace {

TEST(IdleConnectionsTest, EmptyHasNoOldest) {
  IdleConnections idle;
  EXPECT_EQ(idle.Oldest(), std::nullopt);
  EXPECT_EQ(idle.OldestOf("10.0.0.1"), std::nullopt);
  idle.Remove(7);  // not listed: no effect
  EXPECT_EQ(idle.size(), 0u);
}

TEST(IdleConnectionsTest, OldestOverallAndPerClientInTheOrderTheyBecameIdle) {
  IdleConnections idle;
  idle.Add(5, "a");
  idle.Add(6, "b");
  idle.Add(7, "a");
  idle.Add(8, "b");
  EXPECT_EQ(idle.Oldest(), 5);
  EXPECT_EQ(idle.OldestOf("a"), 5);
  EXPECT_EQ(idle.OldestOf("b"), 6);
  EXPECT_EQ(idle.OldestOf("c"), std::nullopt);
  idle.Remove(5);  // evicted, or a request began on it
  EXPECT_EQ(idle.Oldest(), 6);
  EXPECT_EQ(idle.OldestOf("a"), 7);
  idle.Add(5, "a");  // idle again after its request: now the newest
  idle.Remove(7);
  EXPECT_EQ(idle.OldestOf("a"), 5);
  EXPECT_EQ(idle.size(), 3u);
}

TEST(IdleConnectionsTest, AddingTwiceKeepsThePlaceAndAClientWithoutIdleOnesIsForgotten) {
  IdleConnections idle;
  idle.Add(3, "a");
  idle.Add(4, "b");
  idle.Add(3, "a");  // already listed: stays the oldest
  EXPECT_EQ(idle.Oldest(), 3);
  EXPECT_EQ(idle.size(), 2u);
  idle.Remove(3);
  EXPECT_FALSE(idle.Contains(3));
  EXPECT_EQ(idle.OldestOf("a"), std::nullopt);
  EXPECT_EQ(idle.Oldest(), 4);
  idle.Remove(4);
  EXPECT_EQ(idle.Oldest(), std::nullopt);
}

sockaddr_storage Peer(int family, const char* text) {
  sockaddr_storage peer{};
  peer.ss_family = static_cast<sa_family_t>(family);
  void* addr = family == AF_INET
                   ? static_cast<void*>(&reinterpret_cast<sockaddr_in&>(peer).sin_addr)
                   : static_cast<void*>(&reinterpret_cast<sockaddr_in6&>(peer).sin6_addr);
  EXPECT_EQ(inet_pton(family, text, addr), 1) << text;
  return peer;
}

TEST(ClientKeyTest, IPv4ByAddressAndIPv4MappedAsIPv4) {
  EXPECT_EQ(ClientKey(Peer(AF_INET, "10.1.2.3")), "10.1.2.3");
  EXPECT_EQ(ClientKey(Peer(AF_INET6, "::ffff:10.1.2.3")), "10.1.2.3");  // dual-stack socket
  EXPECT_NE(ClientKey(Peer(AF_INET, "10.1.2.4")), ClientKey(Peer(AF_INET, "10.1.2.3")));
}

TEST(ClientKeyTest, IPv6ByItsSlash64Prefix) {
  const std::string a = ClientKey(Peer(AF_INET6, "2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
  EXPECT_EQ(a, "2001:db8:1:2::/64");
  // Another interface identifier in the same /64: the same client (no escaping the limit).
  EXPECT_EQ(ClientKey(Peer(AF_INET6, "2001:db8:1:2::1")), a);
  // Another /64: another client.
  EXPECT_EQ(ClientKey(Peer(AF_INET6, "2001:db8:1:3::1")), "2001:db8:1:3::/64");
  EXPECT_EQ(ClientKey(Peer(AF_INET6, "::1")), "::/64");
  EXPECT_EQ(ClientKey(sockaddr_storage{}), "");  // no address family: one shared key
}

}  // namespace
}  // namespace reformer::serving
