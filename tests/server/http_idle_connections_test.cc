// IdleConnections (server/http/idle_connections.h): the oldest evictable connection, overall and
// per client, as connections become idle and busy again.
#include "server/http/idle_connections.h"

#include <optional>

#include "gtest/gtest.h"

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

}  // namespace
}  // namespace reformer::serving
