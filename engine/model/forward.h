// The Reformer forward pass (engine-numerics §4-§9) over a ragged batch of documents,
// engine-internal.
//
// Layout: the documents' (internally padded) tokens are laid out in the two residual streams A
// and Z, [rows, H] (RowLayout). Dense matmuls (per-head projections, attention output, FFN, LM
// head) run over the streams in tiles. oneDNN's f32 gemm picks its blocking from M, the rows of a
// call (measured: rows differ in the last bits between M = 256 and M = 1024 at K = 1024), but for
// a fixed M every row position gives the same bits (tests/engine/matmul_rows_test.cc checks both
// for every tile size and the model shapes). So each document's tile size is a function of its
// own length alone (DocumentTileRows), documents of one tile size share a region of the streams
// padded to whole tiles, and a document's outputs are bitwise independent of its batch mates;
// short documents ride in 128-row calls (32 one-token documents compute 128 rows, not a large
// tile), long ones in large tiles. Attention runs per document and per head (ops/attention.h).
//
// Memory beyond A and Z (the outputs are the caller's): one head group's projections [g, rows, 2-3 * dh], the
// merged attention output of all heads [rows, nh * dh] (so the output projection is one matmul
// with K = nh * dh), the attention blocks of ops/attention.h, and one token tile of the phase in
// progress. Everything is counted in the Workspace; PlanPeakBytes predicts it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "engine/dnnl/matmul.h"
#include "engine/model/engine_api.h"
#include "engine/model/weights.h"
#include "engine/tensor/workspace.h"

namespace reformer {

// Matmul weights of one layer, pre-packed at load.
struct PackedLayer {
  std::vector<PackedWeight> head_proj;  // per head: [H, 2*dh] (qk|v) or [H, 3*dh] (q|k|v)
  PackedWeight attn_out;                // [nh*dh, H]: attention.output.dense
  PackedWeight ff_in;                   // [H, F]
  PackedWeight ff_out;                  // [F, H]
  size_t bytes() const;
};

struct PackedModel {
  std::vector<PackedLayer> layers;
  PackedWeight lm_head;  // [2H, V]
  size_t bytes = 0;
  // Layers' matmul weights in `type`; the LM head stays float32 (< 1 % of the work, and the
  // logits are what scoring reads).
  static PackedModel Build(const ReformerConfig& config, const ModelWeights& weights,
                           ComputeType type = ComputeType::kFloat32);
  // Incremental form (lets a builder release each layer's unpacked weights once packed).
  static PackedLayer PackLayer(const ReformerConfig& config, const LayerWeights& layer, AttnType type,
                               ComputeType compute_type = ComputeType::kFloat32);
  void Add(PackedLayer layer);
  void SetLmHead(const ReformerConfig& config, const float* lm_weight);
};

// Heads whose projections are computed from one LayerNorm pass over `rows` rows: the largest
// divisor g of num_heads with g * (2 or 3) * head_size <= kMaxProjectionWidth and a projection
// buffer (g * rows * (2 or 3) * head_size floats) of at most kMaxGroupedProjectionBytes, else 1.
// Small heads of short-to-medium batches share the pass; long documents keep one head's buffer.
// The grouping never changes a number: each head's matmul is the same call either way.
inline constexpr int64_t kMaxProjectionWidth = 384;
inline constexpr size_t kMaxGroupedProjectionBytes = size_t{256} << 20;
int64_t HeadsPerProjection(const ReformerConfig& config, AttnType type, int64_t rows);

// The oneDNN post-op computing the feed-forward activation `a` (its alpha in *alpha; 0 when unused).
// One mapping for the forward and the decoding step, so both compute the same activation.
PostOp ActivationPostOp(Activation a, float* alpha);

// One document of a forward batch. `ids` and `mask` cover the padded length.
struct ForwardDoc {
  const int32_t* ids = nullptr;   // [padded_length]
  const uint8_t* mask = nullptr;  // [padded_length] or null (no mask)
  int64_t padded_length = 0;      // T: multiple of the chunk lcm, or <= the smallest chunk
  int64_t output_length = 0;      // T0: outputs are produced for positions < T0
  bool padding_bucket = false;    // engine-numerics §7.4: NB = nb + 1
  OutputView dst;                 // where the requested outputs go (rows < T0)
};

struct ForwardOptions {
  uint32_t outputs = 0;         // OutputFlags
  bool want_buckets = false;    // per LSH layer that hashes: keys [nh, nH * T] per document
  const CancelFn* cancel = nullptr;
  // Decoding hooks (engine/model/decoder.h, docs/generation.md); empty when unused.
  // After head `head` of layer `layer` attended for document `doc`: that document's projections,
  // padded_length rows of stride `ld` (LSH: qk | v, local: q | k | v, head_size floats each).
  std::function<void(int64_t layer, int64_t head, int64_t doc, const float* proj, int64_t ld)> on_head;
  // Before layer `layer` (and with layer == num_layers after the last one): the residual streams
  // A and Z, [rows, H]; document d's padded rows start at row first_row[d] (RowLayout::offset). A
  // non-OK status ends the forward.
  std::function<absl::Status(int64_t layer, const float* a, const float* z, const std::vector<int64_t>& first_row)>
      at_layer;
  // Between two parts of layer `layer`: two tiles of one of its products, two (head, document)
  // attentions, its attention and its feed-forward. A decoding server runs its other sequences'
  // step here so that they go on while a long prompt fills its cache (docs/generation.md §4). It
  // must not touch this forward's documents or buffers; a non-OK status ends the forward.
  std::function<absl::Status(int64_t layer)> between_parts;
};

struct ForwardOutputs {
  // buckets[layer_slot][doc] = [nh * nH * T]; bucket_layers[layer_slot] = layer index.
  std::vector<std::vector<std::vector<int32_t>>> buckets;
  std::vector<int> bucket_layers;
  RunStats stats;
};

// Tile sizes: powers of two in [kMinTileRows, kMaxTileRows]. (At M = 64 oneDNN's rows were
// measured to depend on their position in the call for some shapes; from 128 up they did not.)
inline constexpr int64_t kMinTileRows = 128;
inline constexpr int64_t kMaxTileRows = 4096;

// The tile a document of `padded_length` tokens T is computed with, a function of the document
// alone (see the layout comment above):
//  - T <= kSmallDocumentRows: the smallest power of two >= T (at least kMinTileRows, at most
//    max_tile): a document alone computes one tile of fewer than 2T rows (as many as in tiles of
//    the largest power of two <= T), and batches of such documents run in calls as large as that
//    allows;
//  - longer: the largest power of two M <= max_tile that pads a document alone by at most T / 8,
//    but at least min(kFloorTileRows, max_tile).
// One-token documents share 128-row calls. (Calls of 128 rows of these models' narrow matmuls were
// measured 7-10 % slower per token than 1024-row ones: a call's fixed cost.)
inline constexpr int64_t kSmallDocumentRows = 1024;
inline constexpr int64_t kFloorTileRows = 512;
int64_t DocumentTileRows(int64_t padded_length, int64_t max_tile);

// Where the documents' rows sit in the residual streams and how many rows each dense matmul call
// takes. The streams hold regions one after another, one per tile size in use (largest first); a
// region holds its documents back to back in batch order and is padded to a multiple of its tile;
// every dense matmul over a region runs on exactly `tile` rows.
struct RowLayout {
  struct Region {
    int64_t begin = 0;          // first row
    int64_t tokens = 0;         // rows holding documents (the rest up to `rows` is padding)
    int64_t rows = 0;           // a multiple of `tile`
    int64_t tile = 0;
    std::vector<int64_t> docs;  // document indices, in row order
  };
  std::vector<int64_t> offset;  // per document: its first row
  std::vector<Region> regions;
  int64_t rows = 0;             // all rows, padding included
  int64_t tokens = 0;           // all documents' padded lengths
  int64_t max_tile = 0;         // largest tile in use (sizes the per-tile buffers)
};
// `max_tile`: the session's largest tile (TileRowsForBudget).
RowLayout PlanRows(const std::vector<int64_t>& padded_lengths, int64_t max_tile);

// Peak working bytes of a forward (streams, per-head buffers, tiles, attention blocks; not the
// outputs, which are caller memory), per document its padded length and padding-bucket flag.
size_t PlanPeakBytes(const ReformerConfig& config, const std::vector<int64_t>& padded_lengths,
                     const std::vector<bool>& padding_buckets, uint32_t outputs, int64_t tile_rows,
                     int num_threads, ComputeType compute_type = ComputeType::kFloat32);

// The session's largest tile: the largest power of two in [kMinTileRows, min(requested or
// kMaxTileRows, kMaxTileRows)] whose per-phase tile buffers fit in half the budget; 0 when not even
// kMinTileRows rows fit.
int64_t TileRowsForBudget(const ReformerConfig& config, size_t budget_bytes, int64_t requested);

// Runs the forward. `ctx` and `ws` belong to the calling thread's session.
absl::Status RunForward(const ReformerModel& model, DnnlContext* ctx, Workspace* ws, int64_t tile_rows,
                        const std::vector<ForwardDoc>& docs, const ForwardOptions& options,
                        ForwardOutputs* out);

}  // namespace reformer
