#include "engine/model/sentencepiece_wrapper.h"

#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <utility>

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

// --- precompiled_charsmap check -------------------------------------------------------------
// libsentencepiece trusts the normalizer's precompiled_charsmap: Encode walks its double-array
// trie and reads the replacement strings it points to without bounds checks, so a malformed one
// reads outside the model (SEGV; fuzz/regressions/sentencepiece/charsmap_trie_out_of_bounds).
// The model is refused at load unless every walk stays inside the blob. Layout (docs/results/fuzz.md,
// "The SentencePiece charsmap check"):
//   [uint32 little-endian T][T bytes: trie, 32-bit units][normalized strings, each NUL-terminated]
// A trie unit u: bit 31 set = a value unit (value u & 0x7fffffff, an offset into the strings),
// else label = u & 0xff, has_leaf = bit 8, children at (index ^ offset) ^ byte with
// offset = (u >> 10) << (bit 9 ? 8 : 0); when has_leaf, the unit at index ^ offset holds the value.

uint32_t LoadLe32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// One unit of the trie: its children must all be units, its value (if any) must start a
// NUL-terminated string. `last_nul` is the offset of the strings' last NUL (or -1).
std::string CheckTrieUnit(const char* trie, uint64_t units, uint64_t i, int64_t last_nul) {
  const uint32_t u = LoadLe32(trie + 4 * i);
  if (i != 0 && (u >> 31) != 0) return std::string();  // a value unit: no byte matches its label
  const uint64_t offset = static_cast<uint64_t>(u >> 10) << ((u & (1u << 9)) >> 6);
  const uint64_t base = i ^ offset;
  if ((base | 0xff) >= units) {
    return "trie unit " + std::to_string(i) + " has children at units " + std::to_string(base & ~0xffull) +
           ".." + std::to_string(base | 0xff) + ", outside the " + std::to_string(units) + "-unit trie";
  }
  if ((u & (1u << 8)) == 0) return std::string();
  const uint32_t value = LoadLe32(trie + 4 * base) & 0x7fffffffu;
  if (static_cast<int64_t>(value) > last_nul) {
    return "trie unit " + std::to_string(i) + " has value " + std::to_string(value) +
           ", which does not start a NUL-terminated string inside the " +
           std::to_string(last_nul + 1) + "-byte string table";
  }
  return std::string();
}

std::string CheckCharsmap(const std::string& blob) {
  if (blob.empty()) return std::string();  // no normalization
  if (blob.size() < 4) return "shorter than its 4-byte trie size";
  const uint64_t trie_bytes = LoadLe32(blob.data());
  if (trie_bytes == 0 || trie_bytes % 4 != 0 || trie_bytes > blob.size() - 4) {
    return "trie size " + std::to_string(trie_bytes) + " is not a positive multiple of 4 within the " +
           std::to_string(blob.size()) + "-byte blob";
  }
  const char* trie = blob.data() + 4;
  const char* strings = trie + trie_bytes;
  int64_t last_nul = static_cast<int64_t>(blob.size() - 4 - trie_bytes) - 1;
  while (last_nul >= 0 && strings[last_nul] != '\0') --last_nul;
  const uint64_t units = trie_bytes / 4;
  for (uint64_t i = 0; i < units; ++i) {
    std::string err = CheckTrieUnit(trie, units, i, last_nul);
    if (!err.empty()) return err;
  }
  return std::string();
}

// The protobuf wire format, just enough to find a length-delimited field of a message.
bool ReadVarint(const std::string& s, size_t& pos, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && pos < s.size(); shift += 7) {
    const unsigned char b = static_cast<unsigned char>(s[pos++]);
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

// The last occurrence of length-delimited field `number` of message `s` (empty if none), or false
// when `s` is not well-formed wire data.
bool FindBytesField(const std::string& s, uint64_t number, std::string& out) {
  out.clear();
  for (size_t pos = 0; pos < s.size();) {
    uint64_t key = 0, n = 0;
    if (!ReadVarint(s, pos, key)) return false;
    switch (key & 7) {
      case 0: if (!ReadVarint(s, pos, n)) return false; break;
      case 1: n = 8; if (s.size() - pos < n) return false; pos += n; break;
      case 5: n = 4; if (s.size() - pos < n) return false; pos += n; break;
      case 2:
        if (!ReadVarint(s, pos, n) || s.size() - pos < n) return false;
        if ((key >> 3) == number) out.assign(s, pos, n);
        pos += n;
        break;
      default: return false;
    }
  }
  return true;
}

// Both charsmaps of a loaded model (ModelProto field 3 normalizer_spec, 5 denormalizer_spec;
// NormalizerSpec field 2 precompiled_charsmap), as libsentencepiece serializes what it loaded.
std::string CheckCharsmaps(const std::string& model) {
  for (const auto& [field, name] : {std::pair<uint64_t, const char*>{3, "normalizer_spec"},
                                    std::pair<uint64_t, const char*>{5, "denormalizer_spec"}}) {
    std::string spec, charsmap;
    if (!FindBytesField(model, field, spec) || !FindBytesField(spec, 2, charsmap)) {
      return std::string("malformed model: cannot read ") + name;
    }
    std::string err = CheckCharsmap(charsmap);
    if (!err.empty()) return std::string("malformed model: ") + name + ".precompiled_charsmap: " + err;
  }
  return std::string();
}

}  // namespace

SentencePieceWrapper::SentencePieceWrapper() : impl_(new Impl) {}
SentencePieceWrapper::~SentencePieceWrapper() = default;

std::string SentencePieceWrapper::Load(const std::string& path) {
  std::string err = Guarded("malformed model", [&] { return impl_->sp.Load(path); });
  if (err.empty()) err = CheckCharsmaps(impl_->sp.serialized_model_proto());
  if (!err.empty()) impl_.reset(new Impl);  // nothing of the refused model stays loaded
  return err;
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
