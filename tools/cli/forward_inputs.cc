#include "tools/cli/forward_inputs.h"

#include <algorithm>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/weights/mmap_file.h"
#include "nlohmann/json.hpp"

namespace reformer::cli {
namespace {

using json = nlohmann::json;

}  // namespace

std::string Escaped(absl::string_view s, size_t max) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < std::min(s.size(), max); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

namespace {

// Collects input_ids and attention_mask as [rows][values] integer arrays; any other top-level
// field is skipped whatever its shape. The first error stops the parse.
class InputsSax final : public nlohmann::json_sax<json> {
 public:
  explicit InputsSax(ForwardInputs* out) : out_(out) {}

  bool null() override { return field_ == kMask && depth_ == 1 ? SetNullMask() : Scalar(false, 0); }
  bool boolean(bool v) override { return Scalar(field_ == kMask, v ? 1 : 0); }
  bool number_integer(number_integer_t v) override { return Scalar(true, v); }
  bool number_unsigned(number_unsigned_t v) override {
    return Scalar(true, v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                            ? std::numeric_limits<int64_t>::max()
                            : static_cast<int64_t>(v));
  }
  bool number_float(number_float_t, const string_t&) override { return Scalar(false, 0); }
  bool string(string_t&) override { return Scalar(false, 0); }
  bool binary(binary_t&) override { return Scalar(false, 0); }
  bool start_object(std::size_t) override {
    if (depth_ == 0) return ++depth_, true;
    if (field_ != kOther) return Fail("expected a list of rows of integers");
    return ++depth_, true;
  }
  bool end_object() override {
    if (--depth_ == 1) field_ = kOther;
    return true;
  }
  bool key(string_t& k) override {
    if (depth_ != 1) return true;
    field_ = k == "input_ids" ? kIds : k == "attention_mask" ? kMask : kOther;
    if (field_ != kOther && seen_[field_]) return Fail(absl::StrCat("\"", k, "\" appears twice"));
    if (field_ != kOther) seen_[field_] = true;
    return true;
  }
  bool start_array(std::size_t) override {
    if (depth_ == 0) return Fail("not a JSON object");
    if (field_ != kOther && depth_ == 3) return Fail("expected rows of integers, found a nested list");
    if (field_ != kOther && depth_ == 2) Rows().emplace_back(0);
    return ++depth_, true;
  }
  bool end_array() override {
    if (--depth_ == 1) field_ = kOther;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) override {
    syntax_error_ = true;
    position_ = position;
    error_ = e.what();
    return false;
  }

  const std::string& error() const { return error_; }
  // When error() is the parser's syntax error: the position it reported.
  bool syntax_error() const { return syntax_error_; }
  size_t position() const { return position_; }
  bool has_mask() const { return seen_[kMask] && !null_mask_; }
  const std::vector<int64_t>& id_rows() const { return rows_[kIds]; }
  const std::vector<int64_t>& mask_rows() const { return rows_[kMask]; }

 private:
  enum Field { kIds = 0, kMask = 1, kOther = 2 };
  std::vector<int64_t>& Rows() { return rows_[field_]; }
  bool Fail(const std::string& what) {
    if (error_.empty()) {
      const char* name = field_ == kIds ? "input_ids: " : field_ == kMask ? "attention_mask: " : "";
      error_ = absl::StrCat(name, what);
    }
    return false;
  }
  bool SetNullMask() {
    null_mask_ = true;
    field_ = kOther;
    return true;
  }
  // A scalar value: only integers (and booleans in the mask) inside a row of the two fields.
  bool Scalar(bool integer, int64_t v) {
    if (field_ == kOther) return depth_ >= 1 || Fail("not a JSON object");
    // Rows count from 0: inside a row it is the last one opened, outside the next one.
    const int64_t row = static_cast<int64_t>(Rows().size()) - (depth_ == 3 ? 1 : 0);
    if (depth_ != 3 || !integer)
      return Fail(absl::StrCat("expected a list of rows of integers (row ", row, ")"));
    if (field_ == kIds) {
      if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
        return Fail(absl::StrCat("row ", row, " position ", Rows().back(), ": ", v, " is not a 32-bit token id"));
      out_->ids.push_back(static_cast<int32_t>(v));
    } else {
      // The server's rule (server/request/tensor_inputs.cc): a mask value is 0 or 1.
      if (v != 0 && v != 1)
        return Fail(absl::StrCat("row ", row, " position ", Rows().back(), ": value ", v, " is not 0 or 1"));
      out_->mask.push_back(static_cast<uint8_t>(v));
    }
    ++Rows().back();
    return true;
  }

  ForwardInputs* out_;
  int depth_ = 0;
  Field field_ = kOther;
  bool seen_[2] = {false, false};
  bool null_mask_ = false;
  std::vector<int64_t> rows_[3];  // per field: the length of each row
  std::string error_;
  bool syntax_error_ = false;
  size_t position_ = 0;
};

}  // namespace

absl::StatusOr<ForwardInputs> ParseForwardInputs(const char* begin, const char* end, const std::string& source) {
  ForwardInputs in;
  InputsSax sax(&in);
  const bool ok = json::sax_parse(begin, end, &sax);
  if (sax.syntax_error())
    return absl::InvalidArgumentError(JsonSyntaxError(
        source, absl::string_view(begin, static_cast<size_t>(end - begin)), sax.position(), sax.error()));
  if (!ok || !sax.error().empty())
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", sax.error().empty() ? "cannot parse" : sax.error()));
  const std::vector<int64_t>& rows = sax.id_rows();
  if (rows.empty() || rows[0] == 0)
    return absl::InvalidArgumentError(absl::StrCat(source, ": needs \"input_ids\": [[...], ...]"));
  for (size_t b = 1; b < rows.size(); ++b)
    if (rows[b] != rows[0])
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": input_ids row ", b, " has ", rows[b], " ids, row 0 has ", rows[0]));
  in.batch = static_cast<int64_t>(rows.size());
  in.length = rows[0];
  if (!sax.has_mask()) {
    in.mask.clear();
    return in;
  }
  const std::vector<int64_t>& mrows = sax.mask_rows();
  if (mrows.size() != rows.size())
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": attention_mask has ", mrows.size(), " rows, input_ids has ", rows.size()));
  for (size_t b = 0; b < mrows.size(); ++b)
    if (mrows[b] != in.length)
      return absl::InvalidArgumentError(absl::StrCat(source, ": attention_mask row ", b, " length differs from input_ids"));
  return in;
}

std::string JsonSyntaxError(const std::string& source, absl::string_view text, size_t position,
                            absl::string_view what) {
  const size_t offset = std::min(position > 0 ? position - 1 : 0, text.size());
  // nlohmann's reason ends with "; last read: '<the token's raw bytes>'", unbounded: the excerpt
  // below shows those bytes instead.
  what = what.substr(0, what.find("; last read"));
  if (absl::StartsWith(what, "[json.exception.")) what.remove_prefix(std::min(what.size(), what.find("] ") + 2));
  const std::string near = offset == text.size() ? "at the end of the file"
                                                 : absl::StrCat("near \"", Escaped(text.substr(offset), 16), "\"");
  return absl::StrCat(source, ": not valid JSON at byte ", offset, " (", near,
                      "): ", Escaped(what, 200));
}

absl::StatusOr<ForwardInputs> ReadForwardInputs(const std::string& path) {
  auto file = MmapFile::Open(path);
  if (!file.ok()) return file.status();
  if ((*file)->size() == 0) return absl::InvalidArgumentError(absl::StrCat(path, ": empty file"));
  const char* p = reinterpret_cast<const char*>((*file)->data());
  return ParseForwardInputs(p, p + (*file)->size(), path);
}

}  // namespace reformer::cli
