// reformer-cli forward's inputs file: parsed straight into one id array and one mask array;
// every malformed case is an error naming the file (and the row where there is one).
#include "tools/cli/forward_inputs.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reformer::cli {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<ForwardInputs> Parse(const std::string& text) {
  return ParseForwardInputs(text.data(), text.data() + text.size(), "in.json");
}

TEST(ForwardInputsTest, IdsAndMaskInAnyOrderOtherFieldsIgnored) {
  auto in = Parse(R"({"note": {"a": [1, [2]], "b": null}, "attention_mask": [[1, 1, 0], [true, false, false]],
                      "input_ids": [[5, 6, 7], [2147483647, 0, 1]], "extra": [[1.5]]})");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->batch, 2);
  EXPECT_EQ(in->length, 3);
  EXPECT_EQ(in->ids, (std::vector<int32_t>{5, 6, 7, 2147483647, 0, 1}));
  EXPECT_EQ(in->mask, (std::vector<uint8_t>{1, 1, 0, 1, 0, 0}));
  auto no_mask = Parse(R"({"input_ids": [[1, 2]], "attention_mask": null})");
  ASSERT_TRUE(no_mask.ok()) << no_mask.status();
  EXPECT_TRUE(no_mask->mask.empty());
  EXPECT_EQ(no_mask->batch, 1);
}

TEST(ForwardInputsTest, MalformedInputsAreNamedErrors) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "in.json"},
      {"[1]", "not a JSON object"},
      {"5", "not a JSON object"},
      {R"({"input_ids": [[1, 2], [3]]})", "row 1 has 1 ids, row 0 has 2"},
      {R"({"input_ids": []})", "needs \"input_ids\""},
      {R"({"input_ids": [[]]})", "needs \"input_ids\""},
      {R"({"other": 1})", "needs \"input_ids\""},
      {R"({"input_ids": [1, 2]})", "input_ids: expected a list of rows"},
      {R"({"input_ids": [[1, [2]]]})", "nested list"},
      {R"({"input_ids": [[1.5]]})", "input_ids: expected a list of rows of integers (row 0)"},
      {R"({"input_ids": [[1], [2.5]]})", "input_ids: expected a list of rows of integers (row 1)"},
      {R"({"input_ids": [[1, 2]], "attention_mask": [[1, -1]]})", "attention_mask: row 0 position 1: value -1 is not 0 or 1"},
      {R"({"input_ids": [[1], [2]], "attention_mask": [[1], [2]]})", "attention_mask: row 1 position 0: value 2 is not 0 or 1"},
      {R"({"input_ids": [["1"]]})", "input_ids: expected"},
      {R"({"input_ids": [[true]]})", "input_ids: expected"},
      {R"({"input_ids": [[{"a": 1}]]})", "input_ids: expected"},
      {R"({"input_ids": [[2147483648]]})", "row 0 position 0: 2147483648 is not a 32-bit token id"},
      {R"({"input_ids": [[1, -2147483649]]})", "row 0 position 1"},
      {R"({"input_ids": [[1]], "input_ids": [[2]]})", "appears twice"},
      {R"({"input_ids": [[1, 2]], "attention_mask": [[1, 1], [1, 1]]})", "attention_mask has 2 rows"},
      {R"({"input_ids": [[1, 2]], "attention_mask": [[1]]})", "attention_mask row 0 length differs"},
      {R"({"input_ids": [[1, 2]], "attention_mask": [[1, null]]})", "attention_mask: expected"},
      {R"({"input_ids": [[1, 2]])", "not valid JSON"},
  };
  for (const auto& [text, message] : cases) {
    auto in = Parse(text);
    ASSERT_FALSE(in.ok()) << text;
    EXPECT_TRUE(absl::IsInvalidArgument(in.status())) << text;
    EXPECT_THAT(std::string(in.status().message()), HasSubstr("in.json")) << text;
    EXPECT_THAT(std::string(in.status().message()), HasSubstr(message)) << text;
  }
  auto missing = ReadForwardInputs("/nonexistent/inputs.json");
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
}

}  // namespace
}  // namespace reformer::cli
