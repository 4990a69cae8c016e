// ParseRequestHead: the strict HTTP/1.1 request-head parser of the HTTP front (http_front.h), after
// RFC 9112 (docs/request-path.md, "The HTTP front"). It takes the bytes received so far on a
// connection and says whether a whole head is there; when it is, the request line and header fields
// come out checked, or the one status that answers a malformed head:
//   400  bad syntax, a NUL or control character, a line ending in a bare LF (answered at once, not
//        after the head timeout), Content-Length with Transfer-Encoding, an invalid, negative or
//        conflicting Content-Length, a missing Host in HTTP/1.1, a second Host, Authorization or
//        Inference-Header-Content-Length line, a target that is not origin-form or absolute-form
//        (absolute-form is accepted: its path is used)
//   417  an Expect other than 100-continue
//   431  a head over `max_head_bytes`
//   501  an unknown method, a transfer coding other than chunked
//   505  a version other than HTTP/1.0 and HTTP/1.1
// The path is percent-decoded; a decoded NUL, control character or '/' (%2F) is 400. Every error closes the
// connection (the framing of what follows cannot be trusted). Pure function: no I/O, no clock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace reformer::serving {

struct HttpHeader {
  std::string name;
  std::string value;
};

struct HttpRequestHead {
  std::string method;
  std::string target;  // as sent
  std::string path;    // percent-decoded, without the query
  std::string query;   // after '?', as sent
  bool http11 = true;
  std::vector<HttpHeader> headers;
  int64_t content_length = -1;  // -1 = none given
  bool chunked = false;
  bool keep_alive = true;  // HTTP/1.1 without Connection: close
  bool expect_continue = false;

  // The header's value, nullopt when absent (case-insensitive name; the first of several).
  std::optional<absl::string_view> Header(absl::string_view name) const;
  bool has_body() const { return chunked || content_length > 0; }
};

struct HeadParse {
  enum Kind { kIncomplete, kComplete, kError };
  Kind kind = kIncomplete;
  size_t head_bytes = 0;  // kComplete: bytes of the head including its blank line
  int status = 0;         // kError: the HTTP status that answers it
  std::string message;    // kError: why
  HttpRequestHead head;   // kComplete
};

// Looks for a whole head at the start of `bytes` (leading empty lines are skipped, RFC 9112 2.2).
HeadParse ParseRequestHead(absl::string_view bytes, size_t max_head_bytes);

// The reason phrase of a status ("Not Found"); "Unknown" for others.
const char* HttpReason(int status);

}  // namespace reformer::serving
