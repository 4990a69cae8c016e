// DecodeGenerateJson (server/http/generate_json.h): the HTTP generate body into the request layer's
// GenerateRequest — every parameter where it belongs, both placements, the defaults, values beyond a
// field's type clamped for Validate to judge, and the bounds applied while parsing (ids beyond the
// context, too many stop strings). The error messages themselves are checked end to end by
// tests/python/http_generate_test.py.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "engine/model/tokenizer.h"
#include "server/http/generate_json.h"

namespace reformer::serving {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// id = byte + 2, as the bundled model's byte-level tokenizer.
class Bytes final : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(2 + c);
    return ids;
  }
  std::string Decode(const std::vector<int32_t>&) const override { return ""; }
  int64_t TokenBytes(int32_t id) const override { return id >= 2 ? 1 : 0; }
  std::string Name() const override { return "bytes"; }
};

ServedModel Model(const Tokenizer* tokenizer) {
  ServedModel m;
  m.name = "tiny";
  m.config.vocab_size = 258;
  m.config.max_position_embeddings = 16;
  m.tokenizer = tokenizer;
  return m;
}

absl::StatusOr<DecodedGenerateJson> Decode(const std::string& body, bool tokenizer = true) {
  static const Bytes bytes;
  const ServedModel model = Model(tokenizer ? &bytes : nullptr);
  return DecodeGenerateJson(body, model, GenerateLimits{});
}

TEST(GenerateJson, EveryParameter) {
  absl::StatusOr<DecodedGenerateJson> d = Decode(R"({"text_input": "ab", "id": "q", "parameters": {
      "max_tokens": 5, "temperature": 0.5, "top_k": 7, "top_p": 0.25, "seed": 9, "stop": ["x", "yz"],
      "mode": "recompute", "ignore_eos": true, "return_logprobs": true, "priority": 3, "timeout": 1500000,
      "stream": true}})");
  ASSERT_TRUE(d.ok()) << d.status();
  const GenerateRequest& r = *d->request;
  EXPECT_THAT(r.prompt, ElementsAre(99, 100));
  EXPECT_TRUE(r.text_input);
  EXPECT_EQ(r.id, "q");
  EXPECT_EQ(r.max_new_tokens, 5);
  EXPECT_EQ(r.temperature, 0.5f);
  EXPECT_EQ(r.top_k, 7);
  EXPECT_EQ(r.top_p, 0.25f);
  EXPECT_EQ(r.seed, 9u);
  EXPECT_THAT(r.stop, ElementsAre("x", "yz"));
  EXPECT_EQ(r.mode, DecodeMode::kRecompute);
  EXPECT_TRUE(r.ignore_eos);
  EXPECT_TRUE(r.return_logprobs);
  EXPECT_EQ(r.priority, 3);
  EXPECT_EQ(d->timeout, absl::Milliseconds(1500));
  EXPECT_EQ(d->stream, true);
}

TEST(GenerateJson, DefaultsAndTopLevelParameters) {
  absl::StatusOr<DecodedGenerateJson> d = Decode(R"({"input_ids": [3, 257, 0]})");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->request->prompt, ElementsAre(3, 257, 0));
  EXPECT_FALSE(d->request->text_input);
  EXPECT_EQ(d->request->max_new_tokens, kDefaultMaxTokens);
  EXPECT_EQ(d->request->mode, DecodeMode::kCached);
  EXPECT_EQ(d->request->top_p, 0.f);  // unset: 1 in ToParams
  EXPECT_EQ(d->request->seed, 0u);    // the server picks one
  EXPECT_FALSE(d->timeout.has_value());
  EXPECT_FALSE(d->stream.has_value());
  d = Decode(R"({"input_ids": [3], "max_tokens": 2, "stop": "s", "parameters": {"top_k": 1}})", false);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->request->max_new_tokens, 2);
  EXPECT_THAT(d->request->stop, ElementsAre("s"));
  EXPECT_EQ(d->request->top_k, 1);
}

TEST(GenerateJson, ValuesBeyondTheFieldsAreClampedForValidate) {
  absl::StatusOr<DecodedGenerateJson> d = Decode(R"({"text_input": "a", "parameters": {
      "max_tokens": 9223372036854775808, "seed": 18446744073709551615, "top_k": 10000000000,
      "priority": 4000000000, "temperature": 1e300, "top_p": -1e300}})");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->request->max_new_tokens, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(d->request->seed, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(d->request->top_k, std::numeric_limits<int32_t>::max());
  EXPECT_EQ(d->request->priority, 1 << 30);
  EXPECT_TRUE(std::isinf(d->request->temperature) && d->request->temperature > 0);
  EXPECT_TRUE(std::isinf(d->request->top_p) && d->request->top_p < 0);
  d = Decode(R"({"text_input": "a", "parameters": {"top_k": -10000000000}})");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->request->top_k, std::numeric_limits<int32_t>::min());
}

TEST(GenerateJson, BoundsWhileParsing) {
  std::string ids = "[1";
  for (int i = 1; i < 17; ++i) ids += ",1";
  absl::StatusOr<DecodedGenerateJson> d = Decode(R"({"input_ids": )" + ids + "]}");
  EXPECT_TRUE(absl::IsInvalidArgument(d.status()));
  EXPECT_THAT(d.status().message(), HasSubstr("'input_ids' has more than 16 ids"));
  std::string stops = R"(["a")";
  for (int i = 1; i < 17; ++i) stops += R"(,"a")";
  d = Decode(R"({"text_input": "x", "parameters": {"stop": )" + stops + "]}}");
  EXPECT_THAT(d.status().message(), HasSubstr("more than 16 stop strings"));
  d = Decode(R"({"text_input": "x"})", /*tokenizer=*/false);
  EXPECT_THAT(d.status().message(), HasSubstr("has no tokenizer; send 'input_ids'"));
  d = Decode(R"({"text_input": "x", "parameters": {"stop": {"a": 1}}})");
  EXPECT_THAT(d.status().message(), HasSubstr("parameter 'stop' must be a string or a list of strings"));
  d = Decode(R"({"text_input": "x", "parameters": {"top_k": [1]}})");
  EXPECT_THAT(d.status().message(), HasSubstr("parameter 'top_k' cannot be a list or an object"));
  d = Decode(R"({"text_input": "x", "parameters": {"max_tokens": 1}} trailing)");
  EXPECT_THAT(d.status().message(), HasSubstr("not valid JSON"));
}

}  // namespace
}  // namespace reformer::serving
