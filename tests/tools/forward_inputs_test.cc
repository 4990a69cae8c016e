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

// A binary or otherwise broken file: the message names the file and the byte offset and shows the
// bytes there escaped, bounded however long the bad token (nlohmann's own message echoed the raw
// bytes of its last token, unbounded, to the terminal).
TEST(ForwardInputsTest, SyntaxErrorsShowTheOffsetAndEscapedBytesOnly) {
  auto printable = [](const std::string& m) {
    for (unsigned char c : m)
      if (c < 0x20 || c >= 0x7f) return false;
    return true;
  };
  const std::string binary("\x8f\x01\xff\xfe\x00rest", 9);
  auto in = Parse(binary);
  ASSERT_FALSE(in.ok());
  const std::string m(in.status().message());
  EXPECT_THAT(m, HasSubstr("in.json: not valid JSON at byte 0 (near \"\\x8f\\x01\\xff\\xfe\\x00rest\")")) << m;
  EXPECT_TRUE(printable(m)) << m;
  std::string later = R"({"input_ids": [[1, 2)";
  later += "\xc3\xa9";
  later += std::string(100000, '\x8f');
  in = Parse(later);
  ASSERT_FALSE(in.ok());
  const std::string m2(in.status().message());
  EXPECT_THAT(m2, HasSubstr("at byte 20 (near \"\\xc3\\xa9\\x8f")) << m2;
  EXPECT_THAT(m2, HasSubstr("...\")")) << m2;
  EXPECT_TRUE(printable(m2)) << m2;
  EXPECT_LT(m2.size(), 300u) << m2;
  const std::string unterminated = R"({"input_ids": [[1]], "note": ")" + std::string(100000, 'a');
  in = Parse(unterminated);
  ASSERT_FALSE(in.ok());
  const std::string m3(in.status().message());
  EXPECT_LT(m3.size(), 300u) << m3;
  EXPECT_THAT(m3, HasSubstr("at the end of the file")) << m3;
  EXPECT_EQ(Escaped("a\\b\x1b[31m\xe9", 100), "a\\x5cb\\x1b[31m\\xe9");
  EXPECT_EQ(Escaped("abcdef", 3), "abc...");
}

}  // namespace
}  // namespace reformer::cli
