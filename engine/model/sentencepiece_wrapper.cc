#include "engine/model/sentencepiece_wrapper.h"

#include <exception>

#include "sentencepiece_processor.h"

namespace reformer {

struct SentencePieceWrapper::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

namespace {

// libsentencepiece reports some malformed models by throwing (e.g. its trie builder,
// Darts::Details::Exception, on a zero-length piece; input in fuzz/regressions/sentencepiece/):
// every call that parses or walks the model turns exceptions into the error text.
template <typename Call>
std::string Guarded(const char* what, Call call) {
  try {
    const auto st = call();
    return st.ok() ? std::string() : st.ToString();
  } catch (const std::exception& e) {
    return std::string(what) + ": " + e.what();
  } catch (...) {
    return std::string(what) + ": unknown exception in libsentencepiece";
  }
}

}  // namespace

SentencePieceWrapper::SentencePieceWrapper() : impl_(new Impl) {}
SentencePieceWrapper::~SentencePieceWrapper() = default;

std::string SentencePieceWrapper::Load(const std::string& path) {
  return Guarded("malformed model", [&] { return impl_->sp.Load(path); });
}
std::string SentencePieceWrapper::Encode(const std::string& text, std::vector<int>* ids) const {
  return Guarded("encoding failed", [&] { return impl_->sp.Encode(text, ids); });
}
std::string SentencePieceWrapper::Decode(const std::vector<int>& ids, std::string* text) const {
  return Guarded("decoding failed", [&] { return impl_->sp.Decode(ids, text); });
}
int SentencePieceWrapper::PieceSize() const { return impl_->sp.GetPieceSize(); }
std::string SentencePieceWrapper::IdToPiece(int id) const { return impl_->sp.IdToPiece(id); }
bool SentencePieceWrapper::IsControl(int id) const { return impl_->sp.IsControl(id); }
bool SentencePieceWrapper::IsUnknown(int id) const { return impl_->sp.IsUnknown(id); }
bool SentencePieceWrapper::IsByte(int id) const { return impl_->sp.IsByte(id); }

}  // namespace reformer
