// server/request: documents stored once, the response layout (shapes, views, padding), the one
// validation with its messages, the model signature and overflow-safe sizes.
#include <cstring>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/request/checked_math.h"
#include "server/request/inference_request.h"
#include "server/request/model_signature.h"
#include "server/request/validate.h"

namespace reformer::serving {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr RequestLimits kLimits{/*context=*/16, /*vocab_size=*/10, /*max_tokens_per_request=*/20,
                                /*max_response_bytes=*/4096};

// Two rows of a [2, 5] padded grid: row 0 = 3 tokens at positions 1..3, row 1 = 5 tokens.
std::unique_ptr<InferenceRequest> PaddedRequest(std::vector<OutputKind> outputs) {
  auto r = std::make_unique<InferenceRequest>();
  r->documents.Append(std::vector<int32_t>{1, 2, 3});
  r->documents.Append(std::vector<int32_t>{4, 5, 6, 7, 8});
  r->padded_length = 5;
  r->left = {1, 0};
  r->dims = {/*vocab=*/10, /*embedding=*/4, /*pad_token_id=*/9};
  r->noun = "row";
  r->outputs = std::move(outputs);
  return r;
}

TEST(DocumentsTest, StoresIdsOnceWithOffsets) {
  Documents docs;
  docs.Reserve(2, 5);
  docs.Append(std::vector<int32_t>{1, 2});
  int32_t* dst = docs.Append(3);
  dst[0] = 7, dst[1] = 8, dst[2] = 9;
  EXPECT_EQ(docs.size(), 2);
  EXPECT_EQ(docs.total_tokens(), 5);
  EXPECT_EQ(docs.offset(1), 2);
  EXPECT_THAT(docs[1], ElementsAre(7, 8, 9));
  EXPECT_EQ(docs[0].data() + 2, docs[1].data());  // one buffer
}

TEST(InferenceRequestTest, PaddedLayoutShapesViewsAndPadding) {
  auto r = PaddedRequest({OutputKind::kLogits, OutputKind::kEmbedding, OutputKind::kTokenLogprobs});
  r->text_input = true;
  r->outputs.push_back(OutputKind::kTokenIds);
  r->outputs.push_back(OutputKind::kLengths);
  EXPECT_EQ(r->engine_outputs(), kOutputLogits | kOutputEmbedding | kOutputTokenLogprobs);
  EXPECT_THAT(r->OutputShape(OutputKind::kLogits), ElementsAre(2, 5, 10));
  EXPECT_THAT(r->OutputShape(OutputKind::kEmbedding), ElementsAre(2, 4));
  EXPECT_THAT(r->OutputShape(OutputKind::kTokenLogprobs), ElementsAre(2, 5));
  EXPECT_THAT(r->OutputShape(OutputKind::kTokenIds), ElementsAre(2, 5));
  EXPECT_THAT(r->OutputShape(OutputKind::kLengths), ElementsAre(2));
  EXPECT_EQ(r->ResponseBytes(), 2 * 5 * 10 * 4 + 2 * 4 * 4 + 2 * 5 * 4 + 2 * 5 * 8 + 2 * 4);
  ASSERT_TRUE(r->AllocateOutputs().ok());
  ASSERT_EQ(r->num_buffers(), 5u);
  const float* logits = r->buffer(0).as<float>();
  OutputView v0 = r->View(0), v1 = r->View(1);
  EXPECT_EQ(v0.logits, logits + 1 * 10);  // row 0 starts at position 1
  EXPECT_EQ(v1.logits, logits + 5 * 10);  // row 1 at position 0 of the second row
  EXPECT_EQ(v1.embedding, r->buffer(1).as<float>() + 4);
  EXPECT_EQ(v0.token_logprobs, r->buffer(2).as<float>() + 1);
  EXPECT_EQ(v0.hidden_states, nullptr);
  // Padding positions are zero: row 0 positions 0 and 4.
  for (int k = 0; k < 10; ++k) {
    EXPECT_EQ(logits[0 * 10 + k], 0.f);
    EXPECT_EQ(logits[4 * 10 + k], 0.f);
  }
  EXPECT_EQ(r->buffer(2).as<float>()[0], 0.f);
  EXPECT_EQ(r->buffer(2).as<float>()[4], 0.f);
  const int64_t* ids = r->buffer(3).as<int64_t>();
  EXPECT_THAT(std::vector<int64_t>(ids, ids + 10), ElementsAre(9, 1, 2, 3, 9, 4, 5, 6, 7, 8));
  const int32_t* lengths = r->buffer(4).as<int32_t>();
  EXPECT_THAT(std::vector<int32_t>(lengths, lengths + 2), ElementsAre(3, 5));
  EXPECT_TRUE(r->AllocateOutputs().ok());  // once: the same buffers
  EXPECT_EQ(r->buffer(0).as<float>(), logits);
}

TEST(InferenceRequestTest, PackedLayoutPutsDocumentsBackToBack) {
  InferenceRequest r;
  r.documents.Append(std::vector<int32_t>{1, 2, 3});
  r.documents.Append(std::vector<int32_t>{4});
  r.dims = {10, 4, 0};
  r.outputs = {OutputKind::kTokenLogprobs};
  EXPECT_THAT(r.OutputShape(OutputKind::kTokenLogprobs), ElementsAre(4));
  ASSERT_TRUE(r.AllocateOutputs().ok());
  EXPECT_EQ(r.View(1).token_logprobs, r.buffer(0).as<float>() + 3);
}

TEST(InferenceRequestTest, HugeSizesSaturateInsteadOfOverflowing) {
  InferenceRequest r;
  r.documents.Append(std::vector<int32_t>{1});
  r.padded_length = int64_t{1} << 62;
  r.dims = {1 << 20, 4, 0};
  r.outputs = {OutputKind::kLogits, OutputKind::kHiddenStates};
  EXPECT_EQ(r.OutputBytes(OutputKind::kLogits), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(r.ResponseBytes(), std::numeric_limits<int64_t>::max());
  absl::Status s = Validate(
      r, RequestLimits{std::numeric_limits<int64_t>::max(), 10, 1 << 20, int64_t{1} << 40});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
}

TEST(OutputBufferTest, UnavailableMemoryIsResourceExhausted) {
  absl::StatusOr<OutputBuffer> b = OutputBuffer::Allocate(size_t{1} << 62);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(b.status().message(), HasSubstr("cannot allocate"));
}

TEST(ValidateTest, OneMessagePerCheck) {
  auto ok = PaddedRequest({OutputKind::kEmbedding});
  EXPECT_TRUE(Validate(*ok, kLimits).ok());

  InferenceRequest none;
  none.outputs = {OutputKind::kEmbedding};
  EXPECT_THAT(Validate(none, kLimits).message(), HasSubstr("the request has no documents"));

  auto empty = PaddedRequest({OutputKind::kEmbedding});
  empty->documents.Append(0);
  empty->left.push_back(0);
  EXPECT_THAT(Validate(*empty, kLimits).message(), HasSubstr("row 2 is empty"));

  auto bad_id = PaddedRequest({OutputKind::kEmbedding});
  bad_id->documents.Append(std::vector<int32_t>{0, 10});
  bad_id->left.push_back(3);
  absl::Status s = Validate(*bad_id, kLimits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("row 2 position 4: token id 10 outside [0, 10)"));

  auto too_long = PaddedRequest({OutputKind::kEmbedding});
  too_long->documents.Append(std::vector<int32_t>(17, 1));
  too_long->left.push_back(0);
  EXPECT_THAT(Validate(*too_long, kLimits).message(),
              HasSubstr("row 2 has 17 tokens, above the model's context of 16"));

  auto too_many = PaddedRequest({OutputKind::kEmbedding});
  too_many->documents.Append(std::vector<int32_t>(13, 1));
  too_many->left.push_back(0);
  EXPECT_THAT(Validate(*too_many, kLimits).message(),
              HasSubstr("21 tokens in 3 rows, above --max_tokens_per_request=20"));

  auto wide = PaddedRequest({OutputKind::kEmbedding});
  wide->padded_length = 17;
  EXPECT_THAT(Validate(*wide, kLimits).message(),
              HasSubstr("rows have 17 positions, above the model's context of 16"));

  auto twice = PaddedRequest({OutputKind::kEmbedding, OutputKind::kEmbedding});
  EXPECT_THAT(Validate(*twice, kLimits).message(), HasSubstr("output 'embedding' requested twice"));
  auto text_only = PaddedRequest({OutputKind::kLengths});
  EXPECT_THAT(Validate(*text_only, kLimits).message(), HasSubstr("exists only for 'text' input"));

  auto big = PaddedRequest({OutputKind::kLogits, OutputKind::kHiddenStates});
  s = Validate(*big, RequestLimits{16, 10, 20, 100});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(
      s.message(),
      HasSubstr(
          "would take 560 bytes (logits 400, hidden_states 160), above --max_response_bytes=100"));
}

TEST(ModelSignatureTest, OneDefinitionForMetadataConfigAndSizes) {
  ServedModel m;
  m.config.vocab_size = 40;
  m.config.hidden_size = 3;
  ModelSignature ids_only = SignatureOf(m);
  ASSERT_EQ(ids_only.inputs.size(), 2u);
  EXPECT_FALSE(ids_only.inputs[0].optional);
  ASSERT_EQ(ids_only.outputs.size(), 4u);
  EXPECT_EQ(ids_only.outputs[0].name, "logits");
  EXPECT_THAT(ids_only.outputs[0].shape, ElementsAre(-1, -1, 40));
  EXPECT_THAT(ids_only.outputs[3].shape, ElementsAre(-1, 6));
  EXPECT_THAT(ConfigDims(ids_only.outputs[3]), ElementsAre(6));
  EXPECT_THAT(ConfigDims(ids_only.outputs[2]), ElementsAre(-1));
  EXPECT_EQ(FindOutput("hidden_states")->kind, OutputKind::kHiddenStates);
  EXPECT_EQ(FindOutput("attention"), nullptr);
  EXPECT_EQ(WidthOf(OutputKind::kLogits, m.dims()), 40);
}

TEST(CheckedMathTest, DetectsOverflow) {
  EXPECT_EQ(CheckedMul(int64_t{1} << 31, int64_t{1} << 31), int64_t{1} << 62);
  EXPECT_FALSE(CheckedMul(int64_t{1} << 32, int64_t{1} << 32).has_value());
  EXPECT_FALSE(CheckedMul(-1, 2).has_value());
  EXPECT_EQ(SaturatingAdd(std::numeric_limits<int64_t>::max(), 1),
            std::numeric_limits<int64_t>::max());
}

}  // namespace
}  // namespace reformer::serving
