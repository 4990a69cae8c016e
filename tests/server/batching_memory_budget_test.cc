// MemoryBudget: reservations, kinds, splitting, listeners, and option validation.
#include "server/batching/memory_budget.h"

#include <memory>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reformer::serving {
namespace {

using ::testing::HasSubstr;

class CountingListener : public MemoryBudget::Listener {
 public:
  void OnMemoryReleased() override { ++released; }
  int released = 0;
};

TEST(MemoryBudgetTest, RejectsANonPositiveTotalNamingTheFlag) {
  for (int64_t bytes : {int64_t{0}, int64_t{-1}, -(int64_t{4} << 30)}) {
    auto budget = MemoryBudget::Create(bytes);
    ASSERT_FALSE(budget.ok()) << bytes;
    EXPECT_EQ(budget.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(budget.status().message(), HasSubstr("--memory_budget_bytes must be > 0"));
  }
  EXPECT_TRUE(MemoryBudget::Create(1).ok());
}

TEST(MemoryBudgetTest, ReservesWhatFitsAndReleasesOnDestruction) {
  auto budget = *MemoryBudget::Create(1000);
  {
    std::optional<MemoryReservation> a = budget->TryReserve(600, MemoryKind::kWorking);
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->bytes(), 600u);
    EXPECT_EQ(budget->free_bytes(), 400u);
    EXPECT_FALSE(budget->TryReserve(401, MemoryKind::kOutput).has_value());  // never waits
    std::optional<MemoryReservation> b = budget->TryReserve(400, MemoryKind::kOutput);
    ASSERT_TRUE(b.has_value());
    EXPECT_EQ(budget->free_bytes(), 0u);
    EXPECT_EQ(budget->reserved_bytes(MemoryKind::kWorking), 600u);
    EXPECT_EQ(budget->reserved_bytes(MemoryKind::kOutput), 400u);
    std::optional<MemoryReservation> zero = budget->TryReserve(0, MemoryKind::kOutput);
    ASSERT_TRUE(zero.has_value());  // zero bytes always fit
    EXPECT_TRUE(zero->empty());
  }
  EXPECT_EQ(budget->reserved_bytes(), 0u);
  EXPECT_EQ(budget->free_bytes(), 1000u);
}

TEST(MemoryBudgetTest, SplitMovesBytesBetweenKindsWithoutFreeingThem) {
  auto budget = *MemoryBudget::Create(1000);
  MemoryReservation batch = *budget->TryReserve(900, MemoryKind::kWorking);
  MemoryReservation out = batch.Split(600, MemoryKind::kOutput);
  EXPECT_EQ(batch.bytes(), 300u);
  EXPECT_EQ(out.bytes(), 600u);
  EXPECT_EQ(out.kind(), MemoryKind::kOutput);
  EXPECT_EQ(budget->reserved_bytes(MemoryKind::kWorking), 300u);
  EXPECT_EQ(budget->reserved_bytes(MemoryKind::kOutput), 600u);
  EXPECT_EQ(budget->free_bytes(), 100u);
  MemoryReservation more = batch.Split(100, MemoryKind::kOutput);
  out.Merge(std::move(more));
  EXPECT_EQ(out.bytes(), 700u);
  EXPECT_TRUE(more.empty());  // NOLINT(bugprone-use-after-move): moved-from holds nothing
  batch.Release();
  EXPECT_EQ(budget->reserved_bytes(), 700u);
  // Moving a reservation moves the bytes; assigning over one releases what it held.
  MemoryReservation moved = std::move(out);
  EXPECT_EQ(moved.bytes(), 700u);
  moved = *budget->TryReserve(50, MemoryKind::kCache);
  EXPECT_EQ(budget->reserved_bytes(), 50u);
  EXPECT_EQ(budget->reserved_bytes(MemoryKind::kCache), 50u);
}

TEST(MemoryBudgetTest, ReservationsKeepTheBudgetAlive) {
  std::optional<MemoryReservation> r;
  std::weak_ptr<MemoryBudget> weak;
  {
    auto budget = *MemoryBudget::Create(100);
    weak = budget;
    r = budget->TryReserve(10, MemoryKind::kOutput);
  }
  EXPECT_FALSE(weak.expired());  // e.g. a response sent after the service shut down
  r.reset();
  EXPECT_TRUE(weak.expired());
}

TEST(MemoryBudgetTest, ListenersHearReleasesOnlyAndNotAfterRemoval) {
  auto budget = *MemoryBudget::Create(100);
  CountingListener listener;
  budget->AddListener(&listener);
  MemoryReservation a = *budget->TryReserve(10, MemoryKind::kWorking);
  MemoryReservation b = a.Split(5, MemoryKind::kOutput);
  EXPECT_EQ(listener.released, 0);
  a.Release();
  a.Release();  // nothing left: no second call
  EXPECT_EQ(listener.released, 1);
  budget->RemoveListener(&listener);
  b.Release();
  EXPECT_EQ(listener.released, 1);
}

TEST(MemoryBudgetTest, ConcurrentHoldersNeverExceedTheTotal) {
  auto budget = *MemoryBudget::Create(1000);
  std::vector<std::thread> threads;
  std::atomic<bool> over{false};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        std::optional<MemoryReservation> r = budget->TryReserve(300, MemoryKind::kWorking);
        if (budget->reserved_bytes() > 1000) over = true;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(over.load());
  EXPECT_EQ(budget->reserved_bytes(), 0u);
}

}  // namespace
}  // namespace reformer::serving
