// The generation controller (engine/model/generation.h) on hand-made logits and a small fake
// tokenizer: whole-UTF-8 streaming, invalid bytes, stop strings within and across tokens (never
// emitted), EOS and ignore_eos, max_new_tokens, and the validation messages.
#include <cmath>

#include "absl/strings/escaping.h"

#include "engine/model/generation.h"
#include "engine/model/tokenizer.h"
#include "gtest/gtest.h"

namespace reformer {
namespace {

// id -> piece; Decode concatenates.
class FakeTokenizer final : public Tokenizer {
 public:
  explicit FakeTokenizer(std::vector<std::string> pieces) : pieces_(std::move(pieces)) {}
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view) const override { return std::vector<int32_t>{}; }
  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids) s += pieces_[id];
    return s;
  }
  int64_t TokenBytes(int32_t id) const override { return static_cast<int64_t>(pieces_[id].size()); }
  std::string Name() const override { return "fake"; }

 private:
  std::vector<std::string> pieces_;
};

enum : int32_t { kA = 1, kEos = 2, kB = 3, kE1 = 4, kE2 = 5, kE3 = 6, kSto = 7, kP = 8, kBad = 9, kX = 10, kMid = 11 };

const FakeTokenizer& Tok() {
  static const FakeTokenizer t({"", "a", "<eos>", " b", "\xE2", "\x82", "\xAC", "STO", "P", "\xFF", "x", "xSTOPy"});
  return t;
}

ReformerConfig Config() {
  ReformerConfig c;
  c.vocab_size = 12;
  c.eos_token_ids = {kEos};
  return c;
}

std::vector<float> OneHot(int32_t id) {
  std::vector<float> l(12, 0.f);
  l[id] = 10.f;
  return l;
}

// Feeds `ids` (greedy) until the sequence finishes; returns the deltas' texts.
std::vector<std::string> Feed(GenerationSequence* s, const std::vector<int32_t>& ids) {
  std::vector<std::string> texts;
  for (int32_t id : ids) {
    if (s->finished()) break;
    EXPECT_EQ(s->Accept(OneHot(id)), id);
    texts.push_back(s->TakeDelta().text);
  }
  return texts;
}

GenerationParams Params(int64_t max_new, std::vector<std::string> stop = {}) {
  GenerationParams p;
  p.max_new_tokens = max_new;
  p.stop = std::move(stop);
  return p;
}

TEST(GenerationTest, StreamsWholeUtf8CharactersOnly) {
  GenerationSequence s(Config(), &Tok(), std::vector<int32_t>{kA}, Params(10));
  EXPECT_EQ(Feed(&s, {kA, kE1, kE2, kE3, kX}), (std::vector<std::string>{"a", "", "", "\xE2\x82\xAC", "x"}));
  EXPECT_EQ(s.text(), "a\xE2\x82\xAC" "x");
  EXPECT_FALSE(s.finished());
}

TEST(GenerationTest, InvalidBytesBecomeReplacementCharacters) {
  GenerationSequence s(Config(), &Tok(), std::vector<int32_t>{kA}, Params(10));
  EXPECT_EQ(Feed(&s, {kBad, kE2, kA}), (std::vector<std::string>{"\xEF\xBF\xBD", "\xEF\xBF\xBD", "a"}));
}

// id = byte (ids 0..255), as the byte-level tokenizer but without its offset.
class RawBytes final : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view) const override { return std::vector<int32_t>{}; }
  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids) s.push_back(static_cast<char>(id));
    return s;
  }
  int64_t TokenBytes(int32_t) const override { return 1; }
  std::string Name() const override { return "raw"; }
};

// `bytes` fed one per Add, then Flush; returns each call's text (Flush's last).
std::vector<std::string> DetokenizeBytewise(const std::string& bytes) {
  static const RawBytes tok;
  IncrementalDetokenizer d(&tok, {'.'});
  std::vector<std::string> out;
  for (unsigned char c : bytes) out.push_back(d.Add(c));
  out.push_back(d.Flush());
  return out;
}

std::string Joined(const std::vector<std::string>& parts) {
  std::string s;
  for (const std::string& p : parts) s += p;
  return s;
}

#define R "\xEF\xBF\xBD"  // U+FFFD

// One U+FFFD per maximal subpart of an ill-formed sequence (Unicode Standard ch. 3, Tables 3-8 to
// 3-11; the WHATWG UTF-8 decoder agrees), bytes arriving one step at a time.
TEST(GenerationTest, EachMaximalSubpartBecomesOneReplacementCharacter) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\xE2\x82" "A", R "A"},                  // a cut-off 3-byte character: one, not two
      {"\xF0\x9F\x98" "A", R "A"},              // a cut-off 4-byte character
      {"\xF0\x80", R R},                        // 80 cannot follow F0
      {"\xE0\x80\xAF", R R R},                  // overlong: E0 needs A0..BF
      {"\xED\xA0\x80", R R R},                  // a surrogate: ED needs 80..9F
      {"\xF4\x90\x80\x80", R R R R},            // above U+10FFFF
      {"\xC0\xAF" "\xC1\x81", R R R R},         // C0 and C1 start nothing
      {"\xF5\xFE\xFF", R R R},
      {"\xE1\x80\xE2\xF0\x91\x92\xF1\xBF" "A", R R R R "A"},  // Table 3-11
      {"a\xF1\x80\x80\xE1\x80\xC2" "b\x80" "c\x80\xBF" "d",    // Table 3-8
       "a" R R R "b" R "c" R R "d"},
      {"\xE2\x82", R},                          // cut off by the end of the stream: one
      {"\xE2\x82\xAC\xF0\x9F\x98\x80", "\xE2\x82\xAC\xF0\x9F\x98\x80"},
  };
  for (const auto& [in, want] : cases) {
    const std::vector<std::string> parts = DetokenizeBytewise(in);
    EXPECT_EQ(Joined(parts), want) << absl::CEscape(in);
  }
}

// A character split across steps is held back, never replaced early: E2 82 emit nothing until the
// byte that decides them arrives.
TEST(GenerationTest, AnIncompleteTailWaitsForTheNextStep) {
  EXPECT_EQ(DetokenizeBytewise("\xE2\x82\xAC"), (std::vector<std::string>{"", "", "\xE2\x82\xAC", ""}));
  EXPECT_EQ(DetokenizeBytewise("\xE2\x82" "A"), (std::vector<std::string>{"", "", R "A", ""}));
  EXPECT_EQ(DetokenizeBytewise("\xF0\x9F\x98"), (std::vector<std::string>{"", "", "", R}));
  EXPECT_EQ(DetokenizeBytewise("\xF0\x80"), (std::vector<std::string>{"", R R, ""}));
  // Through the sequence too, with the tail replaced at the length finish.
  GenerationSequence s(Config(), &Tok(), std::vector<int32_t>{kA}, Params(4));
  EXPECT_EQ(Feed(&s, {kE1, kE2, kA, kE1}), (std::vector<std::string>{"", "", R "a", R}));
}

#undef R

TEST(GenerationTest, LengthFinishFlushesAnIncompleteCharacter) {
  GenerationSequence s(Config(), &Tok(), std::vector<int32_t>{kA}, Params(2));
  EXPECT_EQ(Feed(&s, {kA, kE1, kX}), (std::vector<std::string>{"a", "\xEF\xBF\xBD"}));
  EXPECT_EQ(s.finish_reason(), FinishReason::kLength);
  EXPECT_EQ(s.tokens(), (std::vector<int32_t>{kA, kE1}));
}

TEST(GenerationTest, StopStringAcrossTokensIsHeldBackAndNotEmitted) {
  GenerationSequence s(Config(), &Tok(), std::vector<int32_t>{kA}, Params(10, {"STOP"}));
  EXPECT_EQ(Feed(&s, {kA, kSto, kP, kX}), (std::vector<std::string>{"a", "", ""}));
  EXPECT_EQ(s.finish_reason(), FinishReason::kStop);
  EXPECT_EQ(s.text(), "a");
  EXPECT_EQ(s.tokens(), (std::vector<int32_t>{kA, kSto, kP}));  // the completing token is returned
}

TEST(GenerationTest, HeldBackTextIsReleasedWhenTheStopStringDoesNotComplete) {
  GenerationSequence s(Config(), &Tok(), std::vector<int32_t>{kA}, Params(10, {"STOP"}));
  EXPECT_EQ(Feed(&s, {kSto, kX, kB}), (std::vector<std::string>{"", "STOx", " b"}));
}

TEST(GenerationTest, StopStringInsideOneTokenCutsItsText) {
  GenerationSequence s(Config(), &Tok(), std::vector<int32_t>{kA}, Params(10, {"ZZ", "STOP"}));
  EXPECT_EQ(Feed(&s, {kB, kMid, kA}), (std::vector<std::string>{" b", "x"}));
  EXPECT_EQ(s.finish_reason(), FinishReason::kStop);
  EXPECT_EQ(s.text(), " bx");
}

TEST(GenerationTest, EosEndsUnlessIgnored) {
  GenerationSequence s(Config(), &Tok(), std::vector<int32_t>{kA}, Params(10));
  Feed(&s, {kA, kEos, kA});
  EXPECT_EQ(s.finish_reason(), FinishReason::kEos);
  EXPECT_EQ(s.tokens(), (std::vector<int32_t>{kA, kEos}));
  EXPECT_EQ(s.text(), "a");  // EOS is returned as a token, not rendered
  GenerationParams p = Params(4);
  p.ignore_eos = true;
  GenerationSequence t(Config(), &Tok(), std::vector<int32_t>{kA}, p);
  Feed(&t, {kA, kEos, kA, kEos, kA});
  EXPECT_EQ(t.finish_reason(), FinishReason::kLength);
  EXPECT_EQ(t.tokens().size(), 4u);
}

TEST(GenerationTest, DeltasCarryTokensLogprobsAndTheFinishOnce) {
  GenerationSequence s(Config(), nullptr, std::vector<int32_t>{kA}, Params(2));
  s.Accept(OneHot(kB));
  GenerationDelta d = s.TakeDelta();
  EXPECT_EQ(d.token_ids, std::vector<int32_t>{kB});
  ASSERT_EQ(d.logprobs.size(), 1u);
  EXPECT_NEAR(d.logprobs[0], 10.0 - std::log(std::exp(10.0) + 11.0), 1e-5);
  EXPECT_EQ(d.finish, FinishReason::kNone);
  EXPECT_TRUE(d.text.empty());  // no tokenizer: no text
  s.Accept(OneHot(kA));
  d = s.TakeDelta();
  EXPECT_EQ(d.token_ids, std::vector<int32_t>{kA});
  EXPECT_EQ(d.finish, FinishReason::kLength);
  EXPECT_STREQ(FinishReasonName(d.finish), "length");
}

TEST(GenerationTest, ValidationMessagesCarryTheNumbers) {
  ReformerConfig c;
  c.is_decoder = true;
  c.vocab_size = 10;
  c.max_position_embeddings = 64;
  c.axial_pos_embds = false;
  c.lsh_attn_chunk_length = c.local_attn_chunk_length = 16;
  c.attn_layers = {AttnType::kLocal};
  const std::vector<int32_t> prompt = {1, 2, 3};
  auto msg = [&](const std::vector<int32_t>& ids, const GenerationParams& p) {
    return std::string(ValidateGeneration(c, ids, p).message());
  };
  EXPECT_TRUE(ValidateGeneration(c, prompt, Params(61)).ok());
  EXPECT_NE(msg(prompt, Params(62)).find("65 exceeds the model's context of 64"), std::string::npos);
  EXPECT_NE(msg(prompt, Params(0)).find("max_new_tokens must be >= 1, got 0"), std::string::npos);
  EXPECT_NE(msg({}, Params(1)).find("empty"), std::string::npos);
  EXPECT_NE(msg({1, 10}, Params(1)).find("token id 10 at position 1 is outside [0, 10)"), std::string::npos);
  EXPECT_NE(msg(prompt, Params(1, {"x", ""})).find("stop string 1 is empty"), std::string::npos);
  GenerationParams p = Params(1);
  p.sampling.top_p = 2.f;
  EXPECT_NE(msg(prompt, p).find("top_p"), std::string::npos);
  // A context that is not a multiple of the chunk: a cached step only needs the positions, a
  // recompute step's forward pads to the chunk (16 here) and must fit too.
  c.max_position_embeddings = 100;
  EXPECT_TRUE(ValidateGeneration(c, prompt, Params(97)).ok());
  GenerationParams r = Params(97);
  r.mode = DecodeMode::kRecompute;
  EXPECT_NE(msg(prompt, r).find("prompt + max_new_tokens - 1 = 99 tokens pad to 112 positions"), std::string::npos)
      << msg(prompt, r);
  r.max_new_tokens = 94;
  EXPECT_TRUE(ValidateGeneration(c, prompt, r).ok());
  c.is_decoder = false;
  EXPECT_NE(msg(prompt, Params(1)).find("not causal"), std::string::npos);
}

}  // namespace
}  // namespace reformer
