#include "engine/tensor/workspace.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>

namespace reformer {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

}  // namespace

Workspace::~Workspace() { Trim(); }

void* Workspace::Allocate(size_t bytes, size_t* capacity) {
  if (!kRecyclesBlocks || bytes <= kMediumBlock) {
    const size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    REFORMER_CHECK(p != nullptr);
    *capacity = rounded;
    return p;
  }
  // Best fit among cached blocks of at most twice the request.
  int best = -1;
  for (size_t i = 0; i < cache_.size(); ++i) {
    const size_t b = cache_[i].bytes;
    if (b >= bytes && b / 2 <= bytes && (best < 0 || b < cache_[best].bytes)) best = static_cast<int>(i);
  }
  if (best >= 0) {
    const Block blk = cache_[best];
    cache_.erase(cache_.begin() + best);
    cached_ -= blk.bytes;
    *capacity = blk.bytes;
    return blk.p;
  }
  if (bytes <= kLargeBlock) {  // a medium block: the heap, 64 KiB multiples, cached on release
    const size_t want = (bytes + kMediumBlock - 1) / kMediumBlock * kMediumBlock;
    EvictTo(cache_limit_ > want ? cache_limit_ - want : 0);
    void* p = std::aligned_alloc(64, want);
    REFORMER_CHECK(p != nullptr);
    mapped_ += want;
    *capacity = want;
    return p;
  }
  const size_t want = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  EvictTo(cache_limit_ > want ? cache_limit_ - want : 0);
  // Map 2 MiB more and keep the 2 MiB-aligned part, so that every page can be a huge page.
  void* raw =
      mmap(nullptr, want + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REFORMER_CHECK(raw != MAP_FAILED);
  const uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (begin + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > begin) munmap(raw, aligned - begin);
  munmap(reinterpret_cast<void*>(aligned + want), begin + kHugePage - aligned);  // > 0 bytes
  void* p = reinterpret_cast<void*>(aligned);
  madvise(p, want, MADV_HUGEPAGE);  // advisory: fewer, cheaper page faults where THP is enabled
  mapped_ += want;
  *capacity = want;
  return p;
}

void Workspace::Free(void* p, size_t capacity) {
  if (!kRecyclesBlocks || capacity <= kMediumBlock) {
    std::free(p);
    return;
  }
  cache_.push_back(Block{p, capacity});
  cached_ += capacity;
  EvictTo(cache_limit_);
}

void Workspace::set_cache_limit(size_t bytes) {
  cache_limit_ = bytes;
  EvictTo(cache_limit_);
}

void Workspace::EvictTo(size_t limit) {
  size_t n = 0;
  while (n < cache_.size() && mapped_ > limit) {
    if (cache_[n].bytes <= kLargeBlock) {
      std::free(cache_[n].p);  // a medium block (heap)
    } else {
      munmap(cache_[n].p, cache_[n].bytes);
    }
    mapped_ -= cache_[n].bytes;
    cached_ -= cache_[n].bytes;
    ++n;
  }
  cache_.erase(cache_.begin(), cache_.begin() + n);
}

void Workspace::Trim() { set_cache_limit(0); }

}  // namespace reformer
