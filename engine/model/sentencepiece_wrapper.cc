#include "engine/model/sentencepiece_wrapper.h"

#include "sentencepiece_processor.h"

namespace reformer {

struct SentencePieceWrapper::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceWrapper::SentencePieceWrapper() : impl_(new Impl) {}
SentencePieceWrapper::~SentencePieceWrapper() = default;

std::string SentencePieceWrapper::Load(const std::string& path) {
  const auto st = impl_->sp.Load(path);
  return st.ok() ? std::string() : st.ToString();
}
std::string SentencePieceWrapper::Encode(const std::string& text, std::vector<int>* ids) const {
  const auto st = impl_->sp.Encode(text, ids);
  return st.ok() ? std::string() : st.ToString();
}
std::string SentencePieceWrapper::Decode(const std::vector<int>& ids, std::string* text) const {
  const auto st = impl_->sp.Decode(ids, text);
  return st.ok() ? std::string() : st.ToString();
}
int SentencePieceWrapper::PieceSize() const { return impl_->sp.GetPieceSize(); }
std::string SentencePieceWrapper::IdToPiece(int id) const { return impl_->sp.IdToPiece(id); }
bool SentencePieceWrapper::IsControl(int id) const { return impl_->sp.IsControl(id); }
bool SentencePieceWrapper::IsUnknown(int id) const { return impl_->sp.IsUnknown(id); }
bool SentencePieceWrapper::IsByte(int id) const { return impl_->sp.IsByte(id); }

}  // namespace reformer
