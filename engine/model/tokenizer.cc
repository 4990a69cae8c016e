#include "engine/model/tokenizer.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/model/config.h"
#include "nlohmann/json.hpp"
#include "engine/model/sentencepiece_wrapper.h"

namespace reformer {
namespace {

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// google/reformer-enwik8's scheme: id = byte + 2; ids 0 (pad) and 1 decode to nothing.
class ByteTokenizer final : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size());
    for (unsigned char ch : text) ids.push_back(static_cast<int32_t>(ch) + 2);
    return ids;
  }
  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    for (int32_t id : ids) {
      if (id >= 2 && id < 258) out.push_back(static_cast<char>(id - 2));
    }
    return out;
  }
  int64_t TokenBytes(int32_t id) const override { return (id >= 2 && id < 258) ? 1 : 0; }
  std::string Name() const override { return "bytes"; }
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path, int64_t vocab) {
    auto t = std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer());
    const std::string err = t->sp_.Load(path);
    if (!err.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": cannot load SentencePiece model: ", err));
    }
    if (t->sp_.PieceSize() > vocab) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": SentencePiece vocabulary has ",
                                                     t->sp_.PieceSize(), " pieces but the model's vocab_size is ",
                                                     vocab));
    }
    t->bytes_.resize(static_cast<size_t>(t->sp_.PieceSize()));
    for (int i = 0; i < t->sp_.PieceSize(); ++i) {
      if (t->sp_.IsControl(i) || t->sp_.IsUnknown(i)) continue;
      if (t->sp_.IsByte(i)) {
        t->bytes_[i] = 1;
        continue;
      }
      std::string piece = t->sp_.IdToPiece(i);
      int64_t n = 0;
      for (size_t k = 0; k < piece.size(); ++k) {
        // U+2581 (the word-boundary marker, 3 bytes in UTF-8) stands for one space.
        if (piece.compare(k, 3, "\xE2\x96\x81") == 0) {
          n += 1;
          k += 2;
        } else {
          n += 1;
        }
      }
      t->bytes_[i] = n;
    }
    return std::unique_ptr<Tokenizer>(std::move(t));
  }

  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override {
    std::vector<int> ids;
    const std::string err = sp_.Encode(std::string(text), &ids);
    if (!err.empty()) return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", err));
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> v(ids.begin(), ids.end());
    std::string out;
    (void)sp_.Decode(v, &out);
    return out;
  }
  int64_t TokenBytes(int32_t id) const override {
    return (id >= 0 && static_cast<size_t>(id) < bytes_.size()) ? bytes_[id] : 0;
  }
  std::string Name() const override { return "sentencepiece"; }

 private:
  SentencePieceWrapper sp_;
  std::vector<int64_t> bytes_;
};

// tokenizer_config.json may say the model is byte-level.
bool DirSaysBytes(const std::string& dir) {
  const std::string path = dir + "/tokenizer_config.json";
  if (!FileExists(path)) return false;
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    auto j = nlohmann::json::parse(ss.str());
    for (const char* key : {"tokenizer_type", "tokenizer_class", "type"}) {
      if (j.contains(key) && j[key].is_string()) {
        const std::string v = j[key].get<std::string>();
        if (v == "bytes" || v == "byte" || v == "ByteTokenizer" || v == "ReformerByteTokenizer") return true;
      }
    }
  } catch (const std::exception&) {
  }
  return false;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::ForModelDir(const std::string& dir,
                                                                  const ReformerConfig& config) {
  const std::string spm = dir + "/spiece.model";
  if (FileExists(spm)) return SentencePieceTokenizer::Load(spm, config.vocab_size);
  if (config.vocab_size == 258 || DirSaysBytes(dir)) {
    if (config.vocab_size < 258) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/tokenizer_config.json: byte-level tokenizer needs vocab_size >= 258, config has ",
                                                     config.vocab_size));
    }
    return std::unique_ptr<Tokenizer>(new ByteTokenizer());
  }
  return std::unique_ptr<Tokenizer>();
}

}  // namespace reformer
