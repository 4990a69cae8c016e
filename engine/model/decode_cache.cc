#include "engine/model/decode_cache.h"

#include <sys/mman.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace reformer {
namespace {

constexpr size_t kAlign = 64;
constexpr size_t kPage = 4096;
constexpr size_t kHugePage = size_t{2} << 20;

size_t AlignUp(size_t n, size_t a) { return (n + a - 1) / a * a; }

// Sub-arrays of the block, in this order: tokens; per layer its rows, (LSH) its raw qk rows and,
// when it hashes, its static then appended runs. `visit(layer, offset, rows, raw, static, appended)`
// in bytes.
template <class Visit>
size_t Layout(const ReformerConfig& c, const CachePlan& p, Visit visit) {
  size_t off = AlignUp(sizeof(int32_t) * p.capacity, kAlign);
  if (p.mode == DecodeMode::kRecompute) return off;
  const size_t row = sizeof(float) * c.num_attention_heads * 2 * c.attention_head_size;
  const size_t rounds = static_cast<size_t>(c.num_attention_heads * c.num_hashes);
  for (int64_t i = 0; i < c.num_layers(); ++i) {
    const bool lsh = c.attn_layers[i] == AttnType::kLsh;
    const size_t rows = AlignUp(row * (lsh ? p.capacity : p.ring_rows), kAlign);
    const size_t raw = lsh ? AlignUp(row / 2 * p.raw_rows, kAlign) : 0;
    const bool runs = lsh && p.hashed_at_once > 0;
    const size_t st = runs ? AlignUp(sizeof(uint64_t) * rounds * p.hashed_at_once, kAlign) : 0;
    const size_t ap = runs ? AlignUp(sizeof(uint64_t) * rounds * std::max<int64_t>(p.appended, 1), kAlign) : 0;
    visit(i, off, rows, raw, st, ap);
    off += rows + raw + st + ap;
  }
  return off;
}

size_t BookkeepingBytes(const ReformerConfig& c, const CachePlan& p) {
  size_t b = sizeof(DecodeCache);
  if (p.mode == DecodeMode::kRecompute) return b;
  b += sizeof(DecodeCache::Layer) * c.num_layers();
  if (p.hashed_at_once > 0)
    for (AttnType t : c.attn_layers)
      if (t == AttnType::kLsh) b += sizeof(LshRoundOrder) * c.num_attention_heads * c.num_hashes;
  return b;
}

}  // namespace

CachePlan PlanCache(const ReformerConfig& c, int64_t prompt_length, int64_t max_new_tokens, DecodeMode mode) {
  CachePlan p;
  p.mode = mode;
  p.prompt_length = prompt_length;
  // The last new token is returned, never fed: at most prompt + max_new - 1 positions.
  p.capacity = prompt_length + std::max<int64_t>(max_new_tokens, 1) - 1;
  if (mode == DecodeMode::kCached) {
    // A local step reads positions from ((L // c) - before) * c on: fewer than (before + 1) * c.
    p.ring_rows = std::min(p.capacity, (c.local_num_chunks_before + 1) * c.local_attn_chunk_length);
    const int64_t chunk = c.lsh_attn_chunk_length;
    if (c.has_lsh() && c.PaddedLength(prompt_length) > chunk) {
      p.hashed_at_once = prompt_length;  // the prompt's forward hashed it
    } else if (c.has_lsh() && std::max(prompt_length + 1, chunk) <= p.capacity) {
      p.hashed_at_once = std::max(prompt_length + 1, chunk);  // the step whose keys reach a chunk
      p.raw_rows = p.hashed_at_once;
    }
    if (p.hashed_at_once > 0) p.appended = p.capacity - p.hashed_at_once;
  }
  p.block_bytes = AlignUp(Layout(c, p, [](int64_t, size_t, size_t, size_t, size_t, size_t) {}), kPage);
  p.bytes = p.block_bytes + BookkeepingBytes(c, p);
  return p;
}

absl::StatusOr<std::unique_ptr<DecodeCache>> DecodeCache::Create(const ReformerConfig& c, const CachePlan& p) {
  std::unique_ptr<DecodeCache> cache(new DecodeCache());
  cache->plan_ = p;
  void* block = mmap(nullptr, p.block_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (block == MAP_FAILED)
    return absl::ResourceExhaustedError(absl::StrCat("cannot map ", p.block_bytes, " bytes for a decoding cache"));
  if (p.block_bytes >= kHugePage) madvise(block, p.block_bytes, MADV_HUGEPAGE);
  cache->block_ = block;
  uint8_t* base = static_cast<uint8_t*>(block);
  cache->tokens_ = reinterpret_cast<int32_t*>(base);
  cache->heads_ = c.num_attention_heads;
  cache->row_width_ = 2 * c.attention_head_size;
  if (p.mode == DecodeMode::kRecompute) return cache;
  cache->layers_.resize(c.num_layers());
  const int64_t rounds = c.num_attention_heads * c.num_hashes;
  Layout(c, p, [&](int64_t i, size_t off, size_t rows, size_t raw, size_t st, size_t /*appended*/) {
    Layer& l = cache->layers_[i];
    l.type = c.attn_layers[i];
    l.rows = reinterpret_cast<float*>(base + off);
    l.ring_rows = l.type == AttnType::kLocal ? p.ring_rows : 0;
    if (raw > 0) l.raw_qk = reinterpret_cast<float*>(base + off + rows);
    if (st == 0) return;
    uint64_t* s = reinterpret_cast<uint64_t*>(base + off + rows + raw);
    uint64_t* a = reinterpret_cast<uint64_t*>(base + off + rows + raw + st);
    l.orders.reserve(rounds);
    for (int64_t r = 0; r < rounds; ++r)
      l.orders.emplace_back(s + r * p.hashed_at_once, p.hashed_at_once, a + r * p.appended, p.appended);
  });
  return cache;
}

DecodeCache::~DecodeCache() {
  if (block_ != nullptr) munmap(block_, plan_.block_bytes);
}

}  // namespace reformer
