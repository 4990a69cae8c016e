// Thin wrapper around libsentencepiece. Its public header defines its own `absl::string_view`,
// which clashes with Abseil's, so only sentencepiece_wrapper.cc includes it (and no Abseil header).
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace reformer {

class SentencePieceWrapper {
 public:
  SentencePieceWrapper();
  ~SentencePieceWrapper();
  // Returns an empty string on success, else the error text.
  std::string Load(const std::string& path);
  std::string Encode(const std::string& text, std::vector<int>* ids) const;
  std::string Decode(const std::vector<int>& ids, std::string* text) const;
  int PieceSize() const;
  std::string IdToPiece(int id) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace reformer
