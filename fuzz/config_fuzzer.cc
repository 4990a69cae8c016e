// Fuzz target: config.json (engine/model/config.h), parsed and validated at model load. Input: the
// file's text. A config that passes validation then goes through every derived quantity the loader
// and the engine compute from it (shapes, padded lengths, bucket counts), so an accepted config can
// never make them overflow (UBSan) or divide by zero.
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "engine/model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto config = reformer::ReformerConfig::FromJson(
      absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
  if (!config.ok()) return 0;
  const reformer::ReformerConfig& c = *config;
  volatile int64_t sink = 0;
  sink = sink + c.num_layers() + c.all_head_size() + 2 * c.hidden_size + c.total_buckets() +
         c.rotation_size() + c.chunk_lcm() + c.chunk_min() + c.context_length();
  for (int64_t t : {int64_t{1}, c.chunk_min(), c.chunk_min() + 1, c.context_length()}) {
    sink = sink + c.PaddedLength(t);
  }
  // The tensor shapes engine/model/weights.cc binds, and the rotations it draws without a file.
  const int64_t H = c.hidden_size, A = c.all_head_size(), F = c.feed_forward_size, V = c.vocab_size;
  sink = sink + V * H + V * 2 * H + A * H + F * H + c.max_position_embeddings * H;
  if (c.axial_pos_embds) {
    sink = sink + c.axial_pos_shape[0] * c.axial_pos_embds_dim[0] +
           c.axial_pos_shape[1] * c.axial_pos_embds_dim[1];
  }
  sink = sink + c.num_attention_heads * c.attention_head_size * c.num_hashes * (c.rotation_size() / 2);
  sink = sink + static_cast<int64_t>(c.Summary().size());
  return 0;
}
