// JsonWriter: JSON written in pieces into a fixed 64 KiB staging buffer that is handed to a
// ByteSink whenever it fills, so a response of any size (a REST logits response can be hundreds of
// MB of text) needs bounded memory and is never built as one string. Numbers are formatted as they
// are written: floats with the shortest decimal that parses back to the same float (std::to_chars),
// so a client reading them as float32 gets the exact bits the engine wrote (negative zero is
// written
// "-0.0": many parsers read "-0" as the integer 0); non-finite values (JSON has none) are written
// as null. Strings are escaped; invalid UTF-8 becomes U+FFFD. The caller writes the structure ('{',
// ',', ...) with Raw(). One thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace reformer::serving {

// Where written bytes go.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  // False once the bytes cannot be delivered (e.g. the client is gone).
  virtual bool Write(absl::string_view bytes) = 0;
};

class StringSink final : public ByteSink {
 public:
  explicit StringSink(std::string* out) : out_(out) {}
  bool Write(absl::string_view bytes) override {
    out_->append(bytes.data(), bytes.size());
    return true;
  }

 private:
  std::string* out_;
};

// Counts bytes only: the exact length of a body before it is sent.
class CountingSink final : public ByteSink {
 public:
  bool Write(absl::string_view bytes) override {
    bytes_ += static_cast<int64_t>(bytes.size());
    return true;
  }
  int64_t bytes() const { return bytes_; }

 private:
  int64_t bytes_ = 0;
};

class JsonWriter {
 public:
  static constexpr size_t kBufferBytes = size_t{64} << 10;

  explicit JsonWriter(ByteSink* sink);
  JsonWriter(const JsonWriter&) = delete;
  JsonWriter& operator=(const JsonWriter&) = delete;

  void Raw(absl::string_view s);
  void String(absl::string_view s);
  void Key(absl::string_view key) {  // "key":
    String(key);
    Raw(":");
  }
  void Int(int64_t v);
  void Float(float v);
  void Double(double v);
  void Bool(bool v) { Raw(v ? "true" : "false"); }
  // Flat arrays: [v0,v1,...].
  void FloatArray(const float* v, int64_t n);
  void Int64Array(const int64_t* v, int64_t n);
  void Int32Array(const int32_t* v, int64_t n);

  // Hands what is buffered to the sink; false when the sink failed (then or before).
  bool Flush();
  bool ok() const { return ok_; }

 private:
  // Makes room for `n` bytes (n <= kBufferBytes).
  void Reserve(size_t n);
  template <typename T>
  void Array(const T* v, int64_t n);

  ByteSink* const sink_;
  std::unique_ptr<char[]> buffer_;
  size_t used_ = 0;
  bool ok_ = true;
};

// The body of every HTTP error answer: {"error":"<message>"} (docs/request-path.md).
std::string JsonErrorBody(absl::string_view message);

}  // namespace reformer::serving
