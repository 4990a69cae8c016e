#include "server/http/json_writer.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <type_traits>

namespace reformer::serving {
namespace {

// Longest formatted number: a double's shortest form is at most 24 characters; an int64 20.
constexpr size_t kNumberBytes = 32;

// Length of the valid UTF-8 sequence at s[i], or 0 when it is not one.
size_t Utf8Length(absl::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n;
  uint32_t min;
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) {
    n = 2, min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3, min = 0x800;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  uint32_t cp = c & (0x7f >> n);
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (b & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

}  // namespace

JsonWriter::JsonWriter(ByteSink* sink) : sink_(sink), buffer_(new char[kBufferBytes]) {}

void JsonWriter::Reserve(size_t n) {
  if (kBufferBytes - used_ < n) Flush();
}

bool JsonWriter::Flush() {
  if (used_ > 0 && ok_) ok_ = sink_->Write(absl::string_view(buffer_.get(), used_));
  used_ = 0;
  return ok_;
}

void JsonWriter::Raw(absl::string_view s) {
  while (!s.empty()) {
    Reserve(1);
    const size_t n = std::min(s.size(), kBufferBytes - used_);
    std::memcpy(buffer_.get() + used_, s.data(), n);
    used_ += n;
    s.remove_prefix(n);
  }
}

void JsonWriter::String(absl::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  Raw("\"");
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = Utf8Length(s, i);
    if (n == 0) {
      Raw("\\ufffd");
      ++i;
    } else if (c == '"' || c == '\\') {
      const char esc[2] = {'\\', static_cast<char>(c)};
      Raw(absl::string_view(esc, 2));
      ++i;
    } else if (c < 0x20) {
      const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
      Raw(absl::string_view(esc, 6));
      ++i;
    } else {
      Raw(s.substr(i, n));
      i += n;
    }
  }
  Raw("\"");
}

void JsonWriter::Int(int64_t v) {
  Reserve(kNumberBytes);
  char* p = buffer_.get() + used_;
  used_ += static_cast<size_t>(std::to_chars(p, p + kNumberBytes, v).ptr - p);
}

void JsonWriter::Float(float v) {
  if (!std::isfinite(v) || (v == 0 && std::signbit(v))) {
    Raw(std::isfinite(v) ? "-0.0" : "null");  // "-0" reads back as the integer 0 in most parsers
    return;
  }
  Reserve(kNumberBytes);
  char* p = buffer_.get() + used_;
  used_ += static_cast<size_t>(std::to_chars(p, p + kNumberBytes, v).ptr - p);
}

void JsonWriter::Double(double v) {
  if (!std::isfinite(v)) {
    Raw("null");
    return;
  }
  Reserve(kNumberBytes);
  char* p = buffer_.get() + used_;
  used_ += static_cast<size_t>(std::to_chars(p, p + kNumberBytes, v).ptr - p);
}

// The hot loop of a JSON tensor: one Reserve per element, the separator and the number formatted
// straight into the staging buffer.
template <typename T>
void JsonWriter::Array(const T* v, int64_t n) {
  Raw("[");
  for (int64_t i = 0; i < n; ++i) {
    Reserve(kNumberBytes + 1);
    char* const start = buffer_.get() + used_;
    char* p = start;
    if (i > 0) *p++ = ',';
    if constexpr (std::is_floating_point_v<T>) {
      if (!std::isfinite(v[i]) || (v[i] == 0 && std::signbit(v[i]))) {
        const absl::string_view text = std::isfinite(v[i]) ? "-0.0" : "null";
        std::memcpy(p, text.data(), text.size());
        used_ += static_cast<size_t>(p + text.size() - start);
        continue;
      }
    }
    p = std::to_chars(p, start + kNumberBytes + 1, v[i]).ptr;
    used_ += static_cast<size_t>(p - start);
  }
  Raw("]");
}

void JsonWriter::FloatArray(const float* v, int64_t n) { Array(v, n); }
void JsonWriter::Int64Array(const int64_t* v, int64_t n) { Array(v, n); }
void JsonWriter::Int32Array(const int32_t* v, int64_t n) { Array(v, n); }

std::string JsonErrorBody(absl::string_view message) {
  std::string body;
  StringSink sink(&body);
  JsonWriter w(&sink);
  w.Raw("{");
  w.Key("error");
  w.String(message);
  w.Raw("}");
  w.Flush();
  return body;
}

}  // namespace reformer::serving
