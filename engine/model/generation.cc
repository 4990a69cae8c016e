#include "engine/model/generation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/model/tokenizer.h"

namespace reformer {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// What starts at s[i]: a well-formed character (`valid`), a cut-off start of one that the end of s
// interrupts (`incomplete`), or else a maximal subpart of an ill-formed sequence, the bytes one
// U+FFFD replaces. `length` is the bytes it spans (at least 1). Maximal subparts follow the Unicode
// Standard, ch. 3 ("U+FFFD Substitution of Maximal Subparts", Table 3-7 of well-formed byte
// sequences), as the WHATWG UTF-8 decoder does: E2 82 41 is one U+FFFD and 'A'; F0 80 is two, since
// 80 cannot follow F0; C0, C1, F5..FF and a stray continuation byte are one each.
struct Utf8Unit {
  size_t length = 1;
  bool valid = false, incomplete = false;
};

Utf8Unit ScanUtf8(const std::string& s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return {1, true, false};
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte (Table 3-7)
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return {};  // C0, C1, F5..FF or a continuation byte: never part of a character
  }
  for (size_t k = 1; k < n; ++k) {
    if (i + k >= s.size()) return {k, false, true};
    const unsigned char x = b(i + k);
    if (k == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xBF)) return {k, false, false};
  }
  return {n, true, false};
}

// s with every maximal subpart of an ill-formed sequence (and a cut-off character at the end)
// replaced by one U+FFFD.
std::string Sanitize(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const Utf8Unit u = ScanUtf8(s, i);
    if (u.valid) {
      out.append(s, i, u.length);
    } else {
      out += kReplacement;
    }
    i += u.length;
  }
  return out;
}

// True when s ends inside a character: a valid start cut off by the end, or SentencePiece's U+FFFD
// for a byte-fallback sequence that the next ids may complete.
bool EndsIncomplete(const std::string& s) {
  if (s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0) return true;
  for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
    if (ScanUtf8(s, s.size() - back).incomplete) return true;
  }
  return false;
}

// Bytes at the end of text[from:] that could begin a stop string (held back while generating).
size_t StopHoldBack(const std::string& text, size_t from, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& stop : stops)
    for (size_t n = std::min(stop.size() - 1, text.size() - from); n > hold; --n)
      if (text.compare(text.size() - n, n, stop, 0, n) == 0) {
        hold = n;
        break;
      }
  return hold;
}

}  // namespace

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kEos: return "eos";
    case FinishReason::kStop: return "stop";
    case FinishReason::kNone: break;
  }
  return "";
}

absl::Status ValidateGeneration(const ReformerConfig& c, absl::Span<const int32_t> prompt, const GenerationParams& p) {
  RETURN_IF_ERROR(DecodeState::Validate(c, prompt, p.max_new_tokens, p.mode));
  RETURN_IF_ERROR(ValidateSampling(p.sampling));
  for (size_t i = 0; i < p.stop.size(); ++i)
    if (p.stop[i].empty()) return absl::InvalidArgumentError(absl::StrCat("stop string ", i, " is empty"));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer* tokenizer, std::vector<int32_t> context)
    : tokenizer_(tokenizer), ids_(std::move(context)), prefix_offset_(0), read_offset_(ids_.size()) {}

std::string IncrementalDetokenizer::Decode(size_t from, size_t to) const {
  return tokenizer_->Decode(std::vector<int32_t>(ids_.begin() + from, ids_.begin() + to));
}

std::string IncrementalDetokenizer::Add(int32_t id) {
  if (tokenizer_ == nullptr) return "";
  ids_.push_back(id);
  // The text the window's new ids add to what its old ids gave (both decoded from the same first
  // id, so SentencePiece's leading-space rule treats them alike).
  const std::string prefix = Decode(prefix_offset_, read_offset_), full = Decode(prefix_offset_, ids_.size());
  if (full.size() <= prefix.size() || full.compare(0, prefix.size(), prefix) != 0) return "";
  const std::string delta = full.substr(prefix.size());
  if (EndsIncomplete(delta)) return "";
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return Sanitize(delta);
}

std::string IncrementalDetokenizer::Flush() {
  if (tokenizer_ == nullptr || read_offset_ == ids_.size()) return "";
  const std::string prefix = Decode(prefix_offset_, read_offset_), full = Decode(prefix_offset_, ids_.size());
  prefix_offset_ = read_offset_ = ids_.size();
  if (full.size() <= prefix.size() || full.compare(0, prefix.size(), prefix) != 0) return "";
  return Sanitize(full.substr(prefix.size()));
}

// ---------------------------------------------------------------------------------------------

GenerationSequence::GenerationSequence(const ReformerConfig& c, const Tokenizer* tokenizer,
                                       absl::Span<const int32_t> prompt, GenerationParams params)
    : params_(std::move(params)),
      detok_(tokenizer, prompt.empty() ? std::vector<int32_t>{} : std::vector<int32_t>{prompt.back()}),
      has_text_(tokenizer != nullptr) {
  if (!params_.ignore_eos) eos_ = c.eos_token_ids;
}

int32_t GenerationSequence::Accept(absl::Span<const float> logits) {
  const int32_t tok = ChooseToken(logits, params_.sampling, tokens_.size(), &scratch_);
  tokens_.push_back(tok);
  logprobs_.push_back(TokenLogprob(logits, tok));
  if (std::find(eos_.begin(), eos_.end(), tok) != eos_.end()) {
    finish_ = FinishReason::kEos;  // the EOS id is returned but not rendered as text
    AppendText(detok_.Flush());
    return tok;
  }
  AppendText(detok_.Add(tok));
  if (!finished() && static_cast<int64_t>(tokens_.size()) >= params_.max_new_tokens) {
    AppendText(detok_.Flush());
    if (!finished()) finish_ = FinishReason::kLength;
  }
  return tok;
}

// Appends decoded text and looks for stop strings where a new match can start.
void GenerationSequence::AppendText(const std::string& piece) {
  if (!has_text_ || finish_ == FinishReason::kStop || piece.empty()) return;
  const size_t before = text_.size();
  text_ += piece;
  size_t best = std::string::npos;
  for (const std::string& stop : params_.stop) {
    const size_t from = before >= stop.size() - 1 ? before - (stop.size() - 1) : 0;
    best = std::min(best, text_.find(stop, from));
  }
  if (best == std::string::npos) return;
  text_.resize(best);
  finish_ = FinishReason::kStop;
}

GenerationDelta GenerationSequence::TakeDelta() {
  GenerationDelta d;
  d.token_ids.assign(tokens_.begin() + emitted_tokens_, tokens_.end());
  d.logprobs.assign(logprobs_.begin() + emitted_tokens_, logprobs_.end());
  emitted_tokens_ = tokens_.size();
  size_t end = text_.size();
  if (!finished()) end -= StopHoldBack(text_, emitted_text_, params_.stop);
  d.text = text_.substr(emitted_text_, end - emitted_text_);
  emitted_text_ = end;
  d.finish = finish_;
  return d;
}

// ---------------------------------------------------------------------------------------------

namespace {

struct Active {
  size_t request;
  std::unique_ptr<DecodeState> state;
  std::unique_ptr<GenerationSequence> seq;
  std::vector<float> logits;
  int32_t next = 0;  // token to feed at the next step
};

}  // namespace

absl::StatusOr<std::vector<GenerationResult>> Generate(Decoder* decoder, const ReformerModel& model,
                                                       absl::Span<const GenerationRequest> requests,
                                                       const GenerateOptions& options) {
  const ReformerConfig& c = model.config();
  for (size_t r = 0; r < requests.size(); ++r) {
    const absl::Status st = ValidateGeneration(c, requests[r].prompt, requests[r].params);
    if (!st.ok()) return absl::Status(st.code(), absl::StrCat("request ", r, ": ", st.message()));
  }
  std::vector<GenerationResult> results(requests.size());
  std::vector<Active> active;
  size_t next_request = 0;
  // Hands out a sequence's new tokens and text; a finished one leaves and frees its state.
  auto publish = [&](Active& a) {
    const GenerationDelta d = a.seq->TakeDelta();
    if (options.on_delta && (!d.token_ids.empty() || !d.text.empty() || d.finish != FinishReason::kNone))
      options.on_delta(a.request, d);
    if (!a.seq->finished()) return false;
    GenerationResult& res = results[a.request];
    res.tokens = a.seq->tokens();
    res.logprobs = a.seq->logprobs();
    res.text = a.seq->text();
    res.finish = a.seq->finish_reason();
    return true;
  };
  while (next_request < requests.size() || !active.empty()) {
    // Admit waiting requests and run their prompt passes together.
    const size_t first_new = active.size();
    while (next_request < requests.size() &&
           (options.max_active <= 0 || static_cast<int64_t>(active.size()) < options.max_active)) {
      const GenerationRequest& req = requests[next_request];
      Active a;
      a.request = next_request++;
      ASSIGN_OR_RETURN(a.state, DecodeState::Create(model, req.prompt, req.params.max_new_tokens, req.params.mode));
      a.seq = std::make_unique<GenerationSequence>(c, model.tokenizer(), req.prompt, req.params);
      a.logits.resize(c.vocab_size);
      active.push_back(std::move(a));
    }
    std::vector<DecodeState*> states;
    std::vector<float*> dst;
    std::vector<int32_t> feed;
    for (size_t i = first_new; i < active.size(); ++i) {
      states.push_back(active[i].state.get());
      dst.push_back(active[i].logits.data());
    }
    if (!states.empty()) {
      RETURN_IF_ERROR(decoder->Prefill(absl::MakeSpan(states), absl::MakeSpan(dst), options.cancel));
    } else {
      for (Active& a : active) {
        states.push_back(a.state.get());
        dst.push_back(a.logits.data());
        feed.push_back(a.next);
      }
      RETURN_IF_ERROR(decoder->Step(absl::MakeSpan(states), feed, absl::MakeSpan(dst), options.cancel));
    }
    const size_t from = feed.empty() ? first_new : 0;
    for (size_t i = from; i < active.size(); ++i) active[i].next = active[i].seq->Accept(active[i].logits);
    std::vector<Active> kept;
    for (Active& a : active)
      if (!publish(a)) kept.push_back(std::move(a));
    active = std::move(kept);
  }
  return results;
}

}  // namespace reformer
