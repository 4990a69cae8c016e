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
        while (end > pos + 1 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
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
