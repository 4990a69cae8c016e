// Workspace: the forward pass's working memory (per Session, single thread).
//
// Accounting. Every buffer the forward allocates beyond the weights goes through a WsBuffer,
// which adds its requested size to the owning Workspace's `current` counter; the high-water
// mark of that counter is what EstimatePeakWorkingBytes predicts (tests compare the two).
//
// Storage. Fresh anonymous memory is expensive here: the first touch of every page faults, and
// on the machines this runs on that costs ~1 s per GB (4 KiB pages), about as much as the
// matmuls of a layer. So blocks of at least kLargeBlock bytes are mmap'd in 2 MiB multiples with
// MADV_HUGEPAGE, and a released block is kept in a cache and handed out again to a later
// request of up to its size (and at least half of it). Cached blocks are unmapped, oldest
// first, whenever mapped bytes (live + cached) would exceed the limit given by set_cache_limit
// (the forward sets it to its planned peak plus 1/8 and 16 MiB of rounding slack), so the cache
// itself never takes the working memory past that limit. The cache outlives a forward, so
// back-to-back forwards reuse their blocks; Trim() (Session::ReleaseWorkspace, which server
// workers call after 2 s without work) returns every cached block to the OS.
// Medium blocks (over kMediumBlock, up to kLargeBlock bytes) come from the heap in 64 KiB
// multiples and are cached the same way (counted in mapped bytes, held within the limit, freed by
// eviction and Trim). Handing them back to glibc at every release was dear: with 128 KiB-1 MiB
// buffers freed and requested again around every matmul, glibc returned the top of its heap to
// the OS (M_TRIM_THRESHOLD) or mapped such blocks afresh (M_MMAP_THRESHOLD), and the next use
// faulted every page in again — 701,000 page faults for 601 bfloat16 forwards of 512 tokens
// (float32, whose buffers happened to fall otherwise: 6,800), which made bfloat16 and int8
// slower than float32 on short documents (docs/results/engine-perf2.md, 2026-12-07 second part).
// Smaller blocks go to the heap and back.
// Under AddressSanitizer every block comes from the heap and nothing is cached, so that ASan
// still sees each buffer's bounds and every use after release (kRecyclesBlocks is false).
// Not thread-safe: a Workspace belongs to one Session (one thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "engine/base/check.h"

namespace reformer {

#if defined(__SANITIZE_ADDRESS__)
#define REFORMER_WORKSPACE_HEAP_ONLY 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REFORMER_WORKSPACE_HEAP_ONLY 1
#endif
#endif

class Workspace {
 public:
  static constexpr size_t kLargeBlock = size_t{1} << 20;
  static constexpr size_t kMediumBlock = size_t{64} << 10;
#ifdef REFORMER_WORKSPACE_HEAP_ONLY
  static constexpr bool kRecyclesBlocks = false;
#else
  static constexpr bool kRecyclesBlocks = true;
#endif

  Workspace() = default;
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // Accounting (requested bytes).
  void Add(size_t bytes) {
    current_ += bytes;
    if (current_ > high_water_) high_water_ = current_;
  }
  void Sub(size_t bytes) {
    REFORMER_CHECK(bytes <= current_);
    current_ -= bytes;
  }
  size_t current() const { return current_; }
  size_t high_water() const { return high_water_; }
  void ResetHighWater() { high_water_ = current_; }

  // Storage: 64-byte aligned, uninitialised. `*capacity` receives the block's usable size,
  // which must be passed back to Free.
  void* Allocate(size_t bytes, size_t* capacity);
  void Free(void* p, size_t capacity);
  // Upper bound on mapped bytes (live + cached medium and large blocks) the cache may keep;
  // 0 = no cache.
  // Evicts cached blocks at once while over the new limit.
  void set_cache_limit(size_t bytes);
  void Trim();  // = set_cache_limit(0)
  size_t mapped_bytes() const { return mapped_; }
  size_t cached_bytes() const { return cached_; }

 private:
  struct Block {
    void* p;
    size_t bytes;
  };
  // Unmaps cached blocks, oldest first, while mapped bytes exceed `limit`.
  void EvictTo(size_t limit);
  size_t current_ = 0;
  size_t high_water_ = 0;
  size_t cache_limit_ = 0;
  size_t mapped_ = 0;  // medium and large blocks, live or cached
  size_t cached_ = 0;
  std::vector<Block> cache_;  // most recently released last
};

// Marker for WsBuffer's constructor: leave the storage uninitialised (the caller writes all of it).
struct Uninitialized {};
inline constexpr Uninitialized kUninitialized{};

// An owning, 64-byte aligned array counted against a Workspace; zero-initialised unless
// constructed with kUninitialized.
template <typename T>
class WsBuffer {
 public:
  WsBuffer() = default;
  WsBuffer(Workspace* ws, size_t n) { Reset(ws, n); }
  WsBuffer(Workspace* ws, size_t n, Uninitialized) { Reset(ws, n, kUninitialized); }
  ~WsBuffer() { Release(); }
  WsBuffer(const WsBuffer&) = delete;
  WsBuffer& operator=(const WsBuffer&) = delete;
  WsBuffer(WsBuffer&& o) noexcept { *this = std::move(o); }
  WsBuffer& operator=(WsBuffer&& o) noexcept {
    if (this != &o) {
      Release();
      ws_ = o.ws_;
      data_ = o.data_;
      size_ = o.size_;
      capacity_ = o.capacity_;
      o.ws_ = nullptr;
      o.data_ = nullptr;
      o.size_ = 0;
      o.capacity_ = 0;
    }
    return *this;
  }

  void Reset(Workspace* ws, size_t n) {
    Reset(ws, n, kUninitialized);
    if (data_) std::memset(static_cast<void*>(data_), 0, n * sizeof(T));
  }
  void Reset(Workspace* ws, size_t n, Uninitialized) {
    Release();
    if (n == 0) return;
    REFORMER_CHECK(ws != nullptr);
    data_ = static_cast<T*>(ws->Allocate(n * sizeof(T), &capacity_));
    ws_ = ws;
    size_ = n;
    ws_->Add(n * sizeof(T));
  }
  void Release() {
    if (data_) {
      ws_->Free(data_, capacity_);
      ws_->Sub(size_ * sizeof(T));
    }
    data_ = nullptr;
    size_ = 0;
    capacity_ = 0;
    ws_ = nullptr;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

 private:
  Workspace* ws_ = nullptr;
  T* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace reformer
