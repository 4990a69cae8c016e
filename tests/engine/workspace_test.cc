// Workspace storage: large blocks (> kLargeBlock) are mmap'd in 2 MiB multiples, medium ones
// (> kMediumBlock) come from the heap in 64 KiB multiples, and both are cached for reuse within
// set_cache_limit; small ones go to the heap and back. WsBuffer zero-initialises unless asked
// not to, and the accounting (current / high_water) counts requested bytes whatever the storage.
#include "engine/tensor/workspace.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"

#ifdef REFORMER_WORKSPACE_HEAP_ONLY
#include <sanitizer/asan_interface.h>
#endif

namespace reformer {
namespace {

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kHugePage = 2 * kMiB;

[[maybe_unused]] size_t RoundUpToHugePage(size_t bytes) {
  return (bytes + kHugePage - 1) / kHugePage * kHugePage;
}

bool IsAligned64(const void* p) { return reinterpret_cast<uintptr_t>(p) % 64 == 0; }

[[maybe_unused]] bool AllBytesAre(const void* p, size_t n, uint8_t value) {
  const auto* b = static_cast<const uint8_t*>(p);
  return std::all_of(b, b + n, [value](uint8_t x) { return x == value; });
}

// AddressSanitizer builds use plain heap blocks (workspace.h): they compile the test of that
// behaviour instead of the block cache's tests (a skipped test fails in CI).
#ifdef REFORMER_WORKSPACE_HEAP_ONLY

TEST(WorkspaceTest, UnderAddressSanitizerEveryBlockIsAHeapBlockAsanSees) {
  static_assert(!Workspace::kRecyclesBlocks);
  Workspace ws;
  ws.set_cache_limit(64 * kMiB);
  for (size_t bytes : {size_t{100}, 3 * kMiB + 100}) {
    size_t cap = 0;
    auto* p = static_cast<char*>(ws.Allocate(bytes, &cap));
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(IsAligned64(p));
    EXPECT_EQ(cap, (bytes + 63) / 64 * 64) << "heap block of the request rounded to 64 bytes";
    EXPECT_FALSE(__asan_address_is_poisoned(p + cap - 1));
    EXPECT_TRUE(__asan_address_is_poisoned(p + cap)) << "ASan sees the block's end";
    ws.Free(p, cap);
    EXPECT_TRUE(__asan_address_is_poisoned(p)) << "ASan sees a use after release";
    EXPECT_EQ(ws.mapped_bytes(), 0u);
    EXPECT_EQ(ws.cached_bytes(), 0u);
  }
  // WsBuffer: zero-initialised and counted by requested bytes all the same.
  {
    WsBuffer<float> z(&ws, 300000);
    EXPECT_EQ(ws.current(), 300000 * sizeof(float));
    EXPECT_TRUE(std::all_of(z.data(), z.data() + z.size(), [](float x) { return x == 0.f; }));
  }
  EXPECT_EQ(ws.current(), 0u);
  EXPECT_EQ(ws.high_water(), 300000 * sizeof(float));
}

#else  // the block cache

TEST(WorkspaceTest, ReleasedLargeBlockIsReusedForTheSameSizeWhenTheLimitAllows) {
  Workspace ws;
  ws.set_cache_limit(64 * kMiB);
  const size_t bytes = 3 * kMiB + 100;
  size_t cap = 0;
  void* p = ws.Allocate(bytes, &cap);
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(IsAligned64(p));
  EXPECT_EQ(cap, RoundUpToHugePage(bytes));
  EXPECT_EQ(ws.mapped_bytes(), cap);
  EXPECT_EQ(ws.cached_bytes(), 0u);
  std::memset(p, 0xAB, bytes);
  ws.Free(p, cap);
  EXPECT_EQ(ws.cached_bytes(), cap);
  EXPECT_EQ(ws.mapped_bytes(), cap);

  size_t cap2 = 0;
  void* q = ws.Allocate(bytes, &cap2);
  EXPECT_EQ(q, p);
  EXPECT_EQ(cap2, cap);
  EXPECT_EQ(ws.cached_bytes(), 0u);
  EXPECT_EQ(ws.mapped_bytes(), cap);
  // The same memory, not a fresh mapping: the old contents are still there.
  EXPECT_TRUE(AllBytesAre(q, bytes, 0xAB));
  ws.Free(q, cap2);
}

TEST(WorkspaceTest, NothingIsCachedWithLimitZero) {
  Workspace ws;  // default limit: 0
  const size_t bytes = 3 * kMiB;
  for (int round = 0; round < 3; ++round) {
    size_t cap = 0;
    void* p = ws.Allocate(bytes, &cap);
    EXPECT_EQ(ws.mapped_bytes(), cap);
    // A fresh anonymous mapping reads as zeros, a reused block would show the last round's 0xCD.
    EXPECT_TRUE(AllBytesAre(p, bytes, 0)) << "round " << round;
    std::memset(p, 0xCD, bytes);
    ws.Free(p, cap);
    EXPECT_EQ(ws.cached_bytes(), 0u);
    EXPECT_EQ(ws.mapped_bytes(), 0u);
  }
}

TEST(WorkspaceTest, BestFitReusesBlocksOfUpToTwiceTheRequest) {
  Workspace ws;
  ws.set_cache_limit(256 * kMiB);
  size_t c4 = 0, c6 = 0, c8 = 0;
  void* b4 = ws.Allocate(4 * kMiB, &c4);
  void* b6 = ws.Allocate(6 * kMiB, &c6);
  void* b8 = ws.Allocate(8 * kMiB, &c8);
  ASSERT_EQ(c4, 4 * kMiB);
  ASSERT_EQ(c6, 6 * kMiB);
  ASSERT_EQ(c8, 8 * kMiB);
  ws.Free(b8, c8);
  ws.Free(b4, c4);
  ws.Free(b6, c6);
  EXPECT_EQ(ws.cached_bytes(), 18 * kMiB);

  // 5 MiB: 6 and 8 MiB blocks fit (<= 2x); the smaller of them is taken.
  size_t cap = 0;
  void* p = ws.Allocate(5 * kMiB, &cap);
  EXPECT_EQ(p, b6);
  EXPECT_EQ(cap, 6 * kMiB);
  // 4 MiB exactly: the 4 MiB block (8 MiB would be exactly 2x and also allowed, but 4 fits best).
  size_t cap_b = 0;
  void* q = ws.Allocate(4 * kMiB, &cap_b);
  EXPECT_EQ(q, b4);
  EXPECT_EQ(cap_b, 4 * kMiB);
  // 4 MiB + 1 byte: only 8 MiB is left, at most twice the request: reused (a smaller request
  // reusing a bigger block).
  size_t cap_c = 0;
  void* r = ws.Allocate(4 * kMiB + 1, &cap_c);
  EXPECT_EQ(r, b8);
  EXPECT_EQ(cap_c, 8 * kMiB);
  EXPECT_EQ(ws.cached_bytes(), 0u);
  EXPECT_EQ(ws.mapped_bytes(), 18 * kMiB);
  ws.Free(r, cap_c);

  // 3 MiB: the cached 8 MiB block is more than twice as big: a new 4 MiB mapping instead.
  size_t cap_d = 0;
  void* s = ws.Allocate(3 * kMiB, &cap_d);
  EXPECT_NE(s, b8);
  EXPECT_EQ(cap_d, 4 * kMiB);
  EXPECT_EQ(ws.cached_bytes(), 8 * kMiB);
  EXPECT_EQ(ws.mapped_bytes(), 18 * kMiB + 4 * kMiB);
  // A request bigger than every cached block maps a new one too.
  size_t cap_e = 0;
  void* t = ws.Allocate(9 * kMiB, &cap_e);
  EXPECT_EQ(cap_e, 10 * kMiB);
  EXPECT_EQ(ws.cached_bytes(), 8 * kMiB);
  for (auto [ptr, c] : {std::pair{p, cap}, {q, cap_b}, {s, cap_d}, {t, cap_e}}) ws.Free(ptr, c);
}

TEST(WorkspaceTest, LoweringTheLimitEvictsOldestCachedBlocksAtOnce) {
  Workspace ws;
  ws.set_cache_limit(64 * kMiB);
  size_t ca = 0, cb = 0, cc = 0;
  void* a = ws.Allocate(4 * kMiB, &ca);
  void* b = ws.Allocate(4 * kMiB, &cb);
  void* c = ws.Allocate(4 * kMiB, &cc);
  ws.Free(a, ca);  // oldest
  ws.Free(b, cb);
  EXPECT_EQ(ws.mapped_bytes(), 12 * kMiB);
  EXPECT_EQ(ws.cached_bytes(), 8 * kMiB);
  // Live c (4 MiB) + one cached block fit in 8 MiB: `a` goes, `b` stays.
  ws.set_cache_limit(8 * kMiB);
  EXPECT_EQ(ws.mapped_bytes(), 8 * kMiB);
  EXPECT_EQ(ws.cached_bytes(), 4 * kMiB);
  size_t cap = 0;
  void* again = ws.Allocate(4 * kMiB, &cap);
  EXPECT_EQ(again, b);
  ws.Free(again, cap);
  // One byte less and `b` no longer fits.
  ws.set_cache_limit(8 * kMiB - 1);
  EXPECT_EQ(ws.cached_bytes(), 0u);
  EXPECT_EQ(ws.mapped_bytes(), 4 * kMiB);
  // A limit below the live bytes never evicts live blocks; freeing over it does not cache.
  ws.set_cache_limit(2 * kMiB);
  EXPECT_EQ(ws.cached_bytes(), 0u);
  EXPECT_EQ(ws.mapped_bytes(), 4 * kMiB);  // c is live
  std::memset(c, 1, 4 * kMiB);             // and still usable
  ws.Free(c, cc);
  EXPECT_EQ(ws.cached_bytes(), 0u);
  EXPECT_EQ(ws.mapped_bytes(), 0u);
}

TEST(WorkspaceTest, TrimReturnsEveryCachedBlockAndDisablesTheCache) {
  Workspace ws;
  ws.set_cache_limit(128 * kMiB);
  std::vector<std::pair<void*, size_t>> blocks;
  for (size_t mib : {2, 3, 5, 8, 13}) {
    size_t cap = 0;
    void* p = ws.Allocate(mib * kMiB, &cap);
    blocks.emplace_back(p, cap);
  }
  size_t live = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (i == 2) {
      live += blocks[i].second;  // stays live
      continue;
    }
    ws.Free(blocks[i].first, blocks[i].second);
  }
  EXPECT_GT(ws.cached_bytes(), 0u);
  ws.Trim();
  EXPECT_EQ(ws.cached_bytes(), 0u);
  EXPECT_EQ(ws.mapped_bytes(), live);
  // Trim == set_cache_limit(0): the block released now is unmapped as well.
  ws.Free(blocks[2].first, blocks[2].second);
  EXPECT_EQ(ws.cached_bytes(), 0u);
  EXPECT_EQ(ws.mapped_bytes(), 0u);
}

// Random allocate / free / limit changes: the mapped bytes never exceed max(limit, live bytes),
// mapped == live + cached, and live blocks never overlap (each keeps its own tag intact).
TEST(WorkspaceTest, MappedBytesStayWithinMaxOfLimitAndLiveBytes) {
  Workspace ws;
  std::mt19937 rng(123);
  struct Live {
    float* p;
    size_t bytes, cap;
    float tag;
  };
  std::vector<Live> live;
  size_t limit = 48 * kMiB;
  ws.set_cache_limit(limit);
  int reused = 0, allocations = 0;
  auto check = [&](const char* what, int step) {
    size_t live_cap = 0;
    for (const Live& l : live) live_cap += l.cap;
    ASSERT_LE(ws.mapped_bytes(), std::max(limit, live_cap)) << what << " at step " << step;
    ASSERT_EQ(ws.mapped_bytes(), live_cap + ws.cached_bytes()) << what << " at step " << step;
  };
  auto verify_tag = [](const Live& l) {
    const size_t n = l.bytes / sizeof(float);
    return l.p[0] == l.tag && l.p[n / 2] == l.tag && l.p[n - 1] == l.tag;
  };
  for (int step = 0; step < 400; ++step) {
    // Up to ~8 live blocks, so that freed blocks fit under the limit and get reused.
    const unsigned op = rng() % 10;
    if (live.empty() || (op < 5 && live.size() < 8)) {
      // A few size classes with jitter, so that released blocks often fit later requests.
      const size_t bytes = (size_t{1} + rng() % 6) * 2 * kMiB - rng() % kMiB;
      const size_t mapped_before = ws.mapped_bytes(), cached_before = ws.cached_bytes();
      size_t cap = 0;
      float* p = static_cast<float*>(ws.Allocate(bytes, &cap));
      ASSERT_NE(p, nullptr);
      ASSERT_TRUE(IsAligned64(p));
      ASSERT_GE(cap, bytes);
      ASSERT_EQ(cap % kHugePage, 0u);
      ASSERT_LE(cap, std::max(RoundUpToHugePage(bytes), 2 * bytes))
          << "cached blocks are <= 2x the request";
      ++allocations;
      reused += ws.mapped_bytes() == mapped_before && ws.cached_bytes() + cap == cached_before;
      const float tag = static_cast<float>(step + 1);
      const size_t n = bytes / sizeof(float);
      p[0] = p[n / 2] = p[n - 1] = tag;
      live.push_back({p, bytes, cap, tag});
      check("Allocate", step);
    } else if (op < 9) {
      const size_t i = rng() % live.size();
      ASSERT_TRUE(verify_tag(live[i])) << "a live block was handed out twice (step " << step << ")";
      ws.Free(live[i].p, live[i].cap);
      live.erase(live.begin() + i);
      check("Free", step);
    } else {
      // 0 (a fifth of the time) or any byte count up to 96 MiB (the forward's limits are not
      // multiples of the 2 MiB block granularity).
      limit = rng() % 5 == 0 ? 0 : rng() % (96 * kMiB);
      ws.set_cache_limit(limit);
      check("set_cache_limit", step);
    }
    for (const Live& l : live) ASSERT_TRUE(verify_tag(l)) << "step " << step;
  }
  std::printf("%d of %d allocations reused a cached block\n", reused, allocations);
  EXPECT_GT(reused, 10) << "the sequence should exercise reuse (" << allocations << " allocations)";
  for (const Live& l : live) ws.Free(l.p, l.cap);
  live.clear();
  check("final Free", -1);
  ws.Trim();
  EXPECT_EQ(ws.mapped_bytes(), 0u);
}

TEST(WorkspaceTest, SmallAllocationsBypassTheCache) {
  Workspace ws;
  ws.set_cache_limit(64 * kMiB);
  for (size_t bytes : {size_t{1}, size_t{100}, size_t{4096}, Workspace::kMediumBlock - 1, Workspace::kMediumBlock}) {
    size_t cap = 0;
    void* p = ws.Allocate(bytes, &cap);
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(IsAligned64(p)) << bytes;
    EXPECT_GE(cap, bytes);
    EXPECT_LE(cap, Workspace::kMediumBlock) << bytes;
    std::memset(p, 0x5A, bytes);
    EXPECT_EQ(ws.mapped_bytes(), 0u) << bytes;
    ws.Free(p, cap);
    EXPECT_EQ(ws.cached_bytes(), 0u) << bytes;
    EXPECT_EQ(ws.mapped_bytes(), 0u) << bytes;
  }
  // One byte over kLargeBlock: a 2 MiB mapping, cached on release.
  size_t cap = 0;
  void* p = ws.Allocate(Workspace::kLargeBlock + 1, &cap);
  EXPECT_EQ(cap, kHugePage);
  EXPECT_EQ(ws.mapped_bytes(), kHugePage);
  ws.Free(p, cap);
  EXPECT_EQ(ws.cached_bytes(), kHugePage);
  // A small buffer does not take the cached block.
  WsBuffer<float> small(&ws, 1000);
  EXPECT_NE(static_cast<void*>(small.data()), p);
  EXPECT_EQ(ws.cached_bytes(), kHugePage);
}

// Medium blocks (kMediumBlock < bytes <= kLargeBlock): heap storage in 64 KiB multiples, kept on
// release and handed out again, so that a buffer freed and requested around every matmul does not
// go back to glibc (which returned such memory to the OS and faulted it in again on the next use:
// workspace.h). Evicted by the limit and by Trim like large blocks.
TEST(WorkspaceTest, MediumBlocksAreCachedAndReused) {
  Workspace ws;
  ws.set_cache_limit(64 * kMiB);
  constexpr size_t kKiB = 1024;
  for (size_t bytes : {Workspace::kMediumBlock + 1, 128 * kKiB, 300 * kKiB, kMiB - 1, kMiB}) {
    size_t cap = 0;
    void* p = ws.Allocate(bytes, &cap);
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(IsAligned64(p)) << bytes;
    EXPECT_EQ(cap, (bytes + 64 * kKiB - 1) / (64 * kKiB) * (64 * kKiB)) << bytes;
    std::memset(p, 0x5A, bytes);
    EXPECT_EQ(ws.mapped_bytes(), cap) << bytes;
    ws.Free(p, cap);
    EXPECT_EQ(ws.cached_bytes(), cap) << bytes;
    // The same request gets the cached block back.
    size_t cap2 = 0;
    void* q = ws.Allocate(bytes, &cap2);
    EXPECT_EQ(q, p) << bytes;
    EXPECT_EQ(cap2, cap) << bytes;
    EXPECT_EQ(ws.cached_bytes(), 0u) << bytes;
    EXPECT_EQ(ws.mapped_bytes(), cap) << bytes;
    ws.Free(q, cap2);
    ws.Trim();  // = set_cache_limit(0)
    EXPECT_EQ(ws.cached_bytes(), 0u) << bytes;
    EXPECT_EQ(ws.mapped_bytes(), 0u) << bytes;
    ws.set_cache_limit(64 * kMiB);
  }
  // Within the limit a released block stays; a request it cannot serve that would take the
  // mapped bytes over the limit evicts it first.
  ws.set_cache_limit(512 * kKiB);
  size_t ca = 0, cb = 0;
  void* a = ws.Allocate(300 * kKiB, &ca);
  ws.Free(a, ca);
  EXPECT_EQ(ws.cached_bytes(), 320 * kKiB);
  void* b = ws.Allocate(400 * kKiB, &cb);  // 448 KiB + the cached 320 KiB > 512 KiB
  EXPECT_EQ(cb, 448 * kKiB);
  EXPECT_EQ(ws.cached_bytes(), 0u);
  EXPECT_EQ(ws.mapped_bytes(), cb);
  ws.Free(b, cb);
  EXPECT_EQ(ws.cached_bytes(), cb);
  ws.set_cache_limit(0);
  EXPECT_EQ(ws.mapped_bytes(), 0u);
}

TEST(WorkspaceTest, ZeroInitialisedBufferIsZeroEvenOnADirtyReusedBlock) {
  Workspace ws;
  ws.set_cache_limit(64 * kMiB);
  const size_t n = (3 * kMiB) / sizeof(float) + 7;
  void* first = nullptr;
  {
    WsBuffer<float> dirty(&ws, n, kUninitialized);
    first = dirty.data();
    std::fill(dirty.data(), dirty.data() + n, 3.5f);
  }
  ASSERT_EQ(ws.cached_bytes(), RoundUpToHugePage(n * sizeof(float)));
  {
    WsBuffer<float> zeroed(&ws, n);
    ASSERT_EQ(static_cast<void*>(zeroed.data()), first) << "expected the dirty block to be reused";
    EXPECT_TRUE(std::all_of(zeroed.data(), zeroed.data() + n, [](float x) { return x == 0.f; }));
    std::fill(zeroed.data(), zeroed.data() + n, -1.25f);
  }
  {
    // Uninitialised: the reused block keeps what the last user wrote (no memset).
    WsBuffer<float> raw(&ws, n, kUninitialized);
    ASSERT_EQ(static_cast<void*>(raw.data()), first);
    EXPECT_TRUE(std::all_of(raw.data(), raw.data() + n, [](float x) { return x == -1.25f; }));
  }
  {
    // A smaller zeroed request of exactly half the block reuses it: all its elements are zero.
    const size_t m = RoundUpToHugePage(n * sizeof(float)) / 2 / sizeof(float);
    WsBuffer<float> zeroed(&ws, m);
    ASSERT_EQ(static_cast<void*>(zeroed.data()), first);
    EXPECT_TRUE(std::all_of(zeroed.data(), zeroed.data() + m, [](float x) { return x == 0.f; }));
  }
  // Small (heap) buffers are zero-initialised too, after a dirty one of the same size.
  for (int i = 0; i < 4; ++i) {
    WsBuffer<double> z(&ws, 1000 + i);
    EXPECT_TRUE(std::all_of(z.data(), z.data() + z.size(), [](double x) { return x == 0.0; }));
    std::fill(z.data(), z.data() + z.size(), 9.0);
  }
}

TEST(WorkspaceTest, AccountingCountsRequestedBytesNotCapacity) {
  Workspace ws;
  ws.set_cache_limit(64 * kMiB);
  const size_t n1 = 300000;  // 1.2 MB of floats: a 2 MiB block
  const size_t n2 = 1000;    // heap
  {
    WsBuffer<float> a(&ws, n1, kUninitialized);
    EXPECT_EQ(ws.current(), n1 * sizeof(float));
    {
      WsBuffer<float> b(&ws, n2);
      EXPECT_EQ(ws.current(), (n1 + n2) * sizeof(float));
    }
    EXPECT_EQ(ws.current(), n1 * sizeof(float));
    EXPECT_EQ(ws.high_water(), (n1 + n2) * sizeof(float));
  }
  EXPECT_EQ(ws.current(), 0u);
  EXPECT_EQ(ws.cached_bytes(), kHugePage);  // cached, but not counted
  ws.ResetHighWater();
  EXPECT_EQ(ws.high_water(), 0u);
  {
    // Reuses the 2 MiB block; still counts only the requested 1.6 MB.
    WsBuffer<float> c(&ws, 400000);
    EXPECT_EQ(ws.cached_bytes(), 0u);
    EXPECT_EQ(ws.current(), 400000 * sizeof(float));
    // Reset to a bigger size: the old block goes back to the cache first, then a new one is taken.
    c.Reset(&ws, 700000, kUninitialized);
    EXPECT_EQ(ws.current(), 700000 * sizeof(float));
  }
  EXPECT_EQ(ws.current(), 0u);
  EXPECT_EQ(ws.high_water(), 700000 * sizeof(float));
  EXPECT_GT(ws.mapped_bytes(), 0u);
  ws.Trim();
  EXPECT_EQ(ws.mapped_bytes(), 0u);
  EXPECT_EQ(ws.current(), 0u);
}

TEST(WorkspaceTest, MovedBufferReturnsItsWholeBlockToTheCache) {
  Workspace ws;
  ws.set_cache_limit(64 * kMiB);
  const size_t n = (5 * kMiB) / sizeof(float);
  WsBuffer<float> a(&ws, n, kUninitialized);
  void* p = a.data();
  WsBuffer<float> b;
  b = std::move(a);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(static_cast<void*>(b.data()), p);
  EXPECT_EQ(ws.current(), n * sizeof(float));
  a.Release();  // no-op on a moved-from buffer
  EXPECT_EQ(ws.current(), n * sizeof(float));
  EXPECT_EQ(ws.cached_bytes(), 0u);
  b.Release();
  EXPECT_EQ(ws.current(), 0u);
  EXPECT_EQ(ws.cached_bytes(), 6 * kMiB);  // the full 6 MiB capacity, not 5 MiB
  EXPECT_EQ(ws.mapped_bytes(), 6 * kMiB);
  size_t cap = 0;
  void* q = ws.Allocate(6 * kMiB, &cap);
  EXPECT_EQ(q, p);
  EXPECT_EQ(cap, 6 * kMiB);
  ws.Free(q, cap);
}

#endif  // REFORMER_WORKSPACE_HEAP_ONLY

}  // namespace
}  // namespace reformer
