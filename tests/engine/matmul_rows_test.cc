// What the engine's batch invariance rests on (engine/model/forward.h): for a fixed row count M
// of a oneDNN f32 matmul call, a row's result does not depend on the row's position in the call
// (nor on the other rows). Checked for every tile size the engine uses, for the dense matmul
// shapes of the published models (crime-and-punishment, enwik8-sized K and N) and of the test
// fixtures, with the post-ops and accumulation the forward uses. If this fails after a oneDNN or
// ISA change, documents' outputs would depend on their batch mates.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "engine/dnnl/matmul.h"
#include "engine/model/forward.h"
#include "gtest/gtest.h"

namespace reformer {
namespace {

struct Shape {
  int64_t k, n;
  PostOp post;
  bool bias, accumulate;
};

// Rows [shift, M) of a call on x[0, M) equal rows [0, M - shift) of a call on x[shift, shift + M).
int64_t PositionDependentRows(DnnlContext* ctx, const Shape& s, int64_t m, std::mt19937* rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> w(s.k * s.n), bias(s.n), x((2 * m) * s.k), init((2 * m) * s.n);
  for (float& v : w) v = u(*rng) * 0.1f;
  for (float& v : bias) v = u(*rng);
  for (float& v : x) v = u(*rng);
  for (float& v : init) v = u(*rng);
  PackedWeight pw = PackedWeight::Build(s.k, s.n, [&](int64_t a, int64_t b) { return w[a * s.n + b]; });
  auto run = [&](int64_t first, std::vector<float>* out) {
    out->assign(init.begin() + first * s.n, init.begin() + (first + m) * s.n);
    MatmulCall mc;
    mc.With(pw);
    mc.m = m;
    mc.src = x.data() + first * s.k;
    mc.lda = s.k;
    mc.bias = s.bias ? bias.data() : nullptr;
    mc.dst = out->data();
    mc.ldc = s.n;
    mc.post_op = s.post;
    mc.accumulate = s.accumulate;
    EXPECT_TRUE(ctx->Matmul(mc).ok());
  };
  std::vector<float> base, shifted;
  run(0, &base);
  int64_t bad = 0;
  for (int64_t shift : {int64_t{1}, int64_t{7}, int64_t{37}, m / 2, m - 1}) {
    run(shift, &shifted);
    for (int64_t r = shift; r < m; ++r)
      bad += std::memcmp(base.data() + r * s.n, shifted.data() + (r - shift) * s.n, sizeof(float) * s.n) != 0;
  }
  return bad;
}

TEST(MatmulRowsTest, RowBitsDoNotDependOnPositionForEveryTileSize) {
  omp_set_num_threads(2);
  auto ctx = DnnlContext::Create();
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const Shape shapes[] = {
      // crime-and-punishment: LSH / local projections, attention output, FFN in/out, LM head.
      {256, 128, PostOp::kNone, false, false},
      {256, 192, PostOp::kNone, false, false},
      {128, 256, PostOp::kNone, false, true},
      {256, 512, PostOp::kRelu, true, false},
      {512, 256, PostOp::kNone, true, true},
      {512, 320, PostOp::kNone, true, false},
      // enwik8-sized K and N (head projection, output projection), GELU as in fixture f2.
      {1024, 256, PostOp::kNone, false, false},
      {1024, 1024, PostOp::kNone, false, true},
      // small fixture shapes
      {32, 48, PostOp::kGeluErf, true, false},
      {64, 66, PostOp::kNone, true, false},
  };
  std::mt19937 rng(5);
  for (int64_t m = kMinTileRows; m <= kMaxTileRows; m *= 2) {
    for (const Shape& s : shapes) {
      if (m * s.k * s.n > (int64_t{1} << 31)) continue;  // keeps the test short; shapes above cover the rest
      EXPECT_EQ(PositionDependentRows(ctx->get(), s, m, &rng), 0)
          << "M=" << m << " K=" << s.k << " N=" << s.n << " post-op " << static_cast<int>(s.post);
    }
  }
}

TEST(MatmulRowsTest, DocumentTileDependsOnTheDocumentAlone) {
  EXPECT_EQ(DocumentTileRows(1, 4096), kMinTileRows);
  EXPECT_EQ(DocumentTileRows(128, 4096), 128);
  EXPECT_EQ(DocumentTileRows(129, 4096), 256);
  EXPECT_EQ(DocumentTileRows(320, 4096), 512);
  EXPECT_EQ(DocumentTileRows(320, 256), 256);
  EXPECT_EQ(DocumentTileRows(1024, 4096), 1024);
  EXPECT_EQ(DocumentTileRows(1152, 4096), 512);  // 1024 would pad it alone to 2048 rows
  EXPECT_EQ(DocumentTileRows(65536, 4096), 4096);
  EXPECT_EQ(DocumentTileRows(65536, 1024), 1024);
  EXPECT_EQ(DocumentTileRows(4160, 4096), 512);  // 4096 would pad it alone to 8192 rows
  EXPECT_EQ(DocumentTileRows(8192, 4096), 4096);
  for (int64_t t = 1; t <= 20000; t += 37) {
    const int64_t m = DocumentTileRows(t, 4096), alone = (t + m - 1) / m * m;
    EXPECT_TRUE(m >= kMinTileRows && m <= 4096 && (m & (m - 1)) == 0) << t;
    if (t <= kSmallDocumentRows) {
      EXPECT_LT(alone, std::max<int64_t>(2 * t, kMinTileRows + 1)) << t;
    } else {
      EXPECT_TRUE(alone - t <= t / 8 || m == kFloorTileRows) << t;
    }
  }
  // 32 one-token documents: one 128-row region. A long and a short document: two regions.
  RowLayout l = PlanRows(std::vector<int64_t>(32, 1), 4096);
  EXPECT_EQ(l.rows, 128);
  ASSERT_EQ(l.regions.size(), 1u);
  EXPECT_EQ(l.offset[31], 31);
  l = PlanRows({7, 8192, 5}, 4096);
  ASSERT_EQ(l.regions.size(), 2u);
  EXPECT_EQ(l.regions[0].tile, 4096);
  EXPECT_EQ(l.offset[1], 0);
  EXPECT_EQ(l.offset[0], 8192);
  EXPECT_EQ(l.offset[2], 8192 + 7);
  EXPECT_EQ(l.rows, 8192 + 128);
  EXPECT_EQ(l.tokens, 8192 + 12);
}

}  // namespace
}  // namespace reformer
