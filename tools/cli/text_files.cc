#include "tools/cli/text_files.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace reformer::cli {

absl::Status ReadTextFile(const std::string& path, std::string* text) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is a directory, not a text file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  *text = ss.str();
  return absl::OkStatus();
}

namespace {

bool IsContinuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// The length of the well-formed UTF-8 sequence at text[i] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or 0 when there is none.
size_t SequenceLength(const std::string& text, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  const size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (n == 0 || i + n > text.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if (!IsContinuation(text[i + k])) return 0;
  }
  if ((c == 0xE0 && b(i + 1) < 0xA0) || (c == 0xED && b(i + 1) > 0x9F)) return 0;  // overlong, surrogate
  if ((c == 0xF0 && b(i + 1) < 0x90) || (c == 0xF4 && b(i + 1) > 0x8F)) return 0;  // overlong, > U+10FFFF
  return n;
}

}  // namespace

absl::Status CheckUtf8(const std::string& path, const std::string& text) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = SequenceLength(text, i);
    if (n == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, " is not UTF-8 text (byte ", i, " starts no valid sequence): a server takes text as UTF-8; convert it "
          "(e.g. iconv -f latin1 -t utf-8), or run the command offline with --model DIR, which reads any bytes"));
    }
    i += n;
  }
  return absl::OkStatus();
}

std::vector<std::string> SplitText(const std::string& text, int64_t max_bytes) {
  std::vector<std::string> pieces;
  const size_t max = static_cast<size_t>(std::max<int64_t>(1, max_bytes));
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = std::min(text.size(), pos + max);
    if (end < text.size()) {
      const size_t cut = text.find_last_of("\n ", end - 1);
      if (cut != std::string::npos && cut > pos + max / 2) {
        end = cut + 1;
      } else {
        while (end > pos + 1 && IsContinuation(text[end])) --end;
        while (end < text.size() && IsContinuation(text[end])) ++end;  // a sequence longer than max
      }
    }
    pieces.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return pieces;
}

absl::StatusOr<std::vector<int32_t>> EncodeInSlices(const std::string& text, int64_t slice_bytes,
                                                    const EncodeFn& encode) {
  std::vector<int32_t> ids;
  for (const std::string& slice : SplitText(text, slice_bytes)) {
    absl::StatusOr<std::vector<int32_t>> part = encode(slice);
    if (!part.ok()) return part.status();
    ids.insert(ids.end(), part->begin(), part->end());
  }
  return ids;
}

}  // namespace reformer::cli
