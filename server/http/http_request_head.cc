#include "server/http/http_request_head.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace reformer::serving {
namespace {

// Methods this server knows (RFC 9110 9.3 + PATCH); others are 501. Routing answers 405 for a
// known method an endpoint does not take.
bool KnownMethod(absl::string_view m) {
  for (absl::string_view known :
       {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"}) {
    if (m == known) return true;
  }
  return false;
}

bool IsTchar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         absl::StrContains("!#$%&'*+-.^_`|~", c);
}

bool IsToken(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTchar(c)) return false;
  }
  return true;
}

// Field values: visible characters, spaces and tabs, obs-text; never NUL or other controls.
bool IsFieldValue(absl::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
  }
  return true;
}

HeadParse Error(int status, std::string message) {
  HeadParse p;
  p.kind = HeadParse::kError;
  p.status = status;
  p.message = std::move(message);
  return p;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes a path; nullopt for a bad escape, a decoded control character or an encoded '/'
// (%2F would turn data into a path separator after routing checked the segments: the path
// "/v2/models/default%2Finfer" would run an inference; RFC 3986 2.2 keeps reserved characters
// encoded as data, and no model name holds a '/').
std::optional<std::string> DecodePath(absl::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '%') {
      if (i + 2 >= raw.size()) return std::nullopt;
      const int hi = HexValue(raw[i + 1]), lo = HexValue(raw[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      c = static_cast<char>(hi * 16 + lo);
      if (c == '/') return std::nullopt;
      i += 2;
    }
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return std::nullopt;
    out.push_back(c);
  }
  return out;
}

// The request line "METHOD SP target SP HTTP/x.y" into `head`; 0 or the error status.
int ParseRequestLine(absl::string_view line, HttpRequestHead* head, std::string* why) {
  const std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
  if (parts.size() != 3 || !IsToken(parts[0]) || parts[1].empty()) {
    *why = "malformed request line";
    return 400;
  }
  if (!absl::StartsWith(parts[2], "HTTP/") || parts[2].size() != 8 || parts[2][6] != '.' ||
      !absl::ascii_isdigit(parts[2][5]) || !absl::ascii_isdigit(parts[2][7])) {
    *why = "malformed HTTP version";
    return 400;
  }
  if (parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0") {
    *why = absl::StrCat(parts[2], " is not served (HTTP/1.0 and HTTP/1.1 are)");
    return 505;
  }
  head->method = std::string(parts[0]);
  head->target = std::string(parts[1]);
  head->http11 = parts[2] == "HTTP/1.1";
  head->keep_alive = head->http11;
  if (!KnownMethod(head->method)) {
    *why = absl::StrCat("method ", head->method, " is not implemented");
    return 501;
  }
  absl::string_view target = parts[1];
  for (char c : target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      *why = "the request target has a control or non-ASCII character";
      return 400;
    }
  }
  // absolute-form (RFC 9112 3.2.2): the path of "http://host[:port]/path".
  if (absl::ConsumePrefix(&target, "http://") || absl::ConsumePrefix(&target, "https://")) {
    const size_t slash = target.find('/');
    target = slash == absl::string_view::npos ? absl::string_view("/") : target.substr(slash);
  }
  if (target.empty() || target[0] != '/') {
    *why = "the request target is neither origin-form (/path) nor absolute-form";
    return 400;
  }
  const size_t q = target.find('?');
  if (q != absl::string_view::npos) {
    head->query = std::string(target.substr(q + 1));
    target = target.substr(0, q);
  }
  std::optional<std::string> path = DecodePath(target);
  if (!path) {
    *why = "the request path has a bad percent-escape, an encoded control character or an encoded '/'";
    return 400;
  }
  head->path = *std::move(path);
  return 0;
}

// One "name: value" line into `head`; 0 or the error status.
int ParseField(absl::string_view line, HttpRequestHead* head, std::string* why) {
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos || !IsToken(line.substr(0, colon))) {
    *why = "malformed header field";  // also catches obs-fold and whitespace before the colon
    return 400;
  }
  const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
  if (!IsFieldValue(value)) {
    *why = "a header field has a NUL or control character";
    return 400;
  }
  head->headers.push_back({std::string(line.substr(0, colon)), std::string(value)});
  return 0;
}

// Content-Length: digits only; repeated (or listed) values must agree (RFC 9112 6.3).
int ApplyContentLength(absl::string_view value, HttpRequestHead* head, std::string* why) {
  for (absl::string_view v : absl::StrSplit(value, ',')) {
    v = absl::StripAsciiWhitespace(v);
    int64_t n = 0;
    bool digits = !v.empty() && v.size() <= 18;
    for (char c : v) digits = digits && absl::ascii_isdigit(static_cast<unsigned char>(c));
    if (!digits || !absl::SimpleAtoi(v, &n)) {
      *why = absl::StrCat("invalid Content-Length: ", value);
      return 400;
    }
    if (head->content_length >= 0 && head->content_length != n) {
      *why = "conflicting Content-Length values";
      return 400;
    }
    head->content_length = n;
  }
  return 0;
}

// Fields that hold one value, where a second line would let two readers (a proxy and this server)
// see different requests: Host (RFC 9112 3.2: more than one is 400), the bearer token, the binary
// tensor extension's JSON length.
bool IsSingletonField(absl::string_view name) {
  for (absl::string_view single : {"Host", "Authorization", "Inference-Header-Content-Length"}) {
    if (absl::EqualsIgnoreCase(name, single)) return true;
  }
  return false;
}

// 0, or 400 when a singleton field comes twice.
int CheckSingletonFields(const HttpRequestHead& head, std::string* why) {
  for (size_t i = 0; i < head.headers.size(); ++i) {
    if (!IsSingletonField(head.headers[i].name)) continue;
    for (size_t j = i + 1; j < head.headers.size(); ++j) {
      if (absl::EqualsIgnoreCase(head.headers[i].name, head.headers[j].name)) {
        *why = absl::StrCat("the header field ", head.headers[i].name, " is given more than once");
        return 400;
      }
    }
  }
  return 0;
}

// The framing and connection headers, checked once all fields are in.
int ApplyHeaders(HttpRequestHead* head, std::string* why) {
  if (int s = CheckSingletonFields(*head, why)) return s;
  bool has_te = false, has_host = false;
  for (const HttpHeader& h : head->headers) {
    if (absl::EqualsIgnoreCase(h.name, "Content-Length")) {
      if (int s = ApplyContentLength(h.value, head, why)) return s;
    } else if (absl::EqualsIgnoreCase(h.name, "Transfer-Encoding")) {
      if (has_te || !absl::EqualsIgnoreCase(h.value, "chunked")) {
        *why = absl::StrCat("Transfer-Encoding ", h.value, " is not implemented (only chunked)");
        return 501;
      }
      has_te = head->chunked = true;
    } else if (absl::EqualsIgnoreCase(h.name, "Connection")) {
      for (absl::string_view t : absl::StrSplit(h.value, ',')) {
        t = absl::StripAsciiWhitespace(t);
        if (absl::EqualsIgnoreCase(t, "close")) head->keep_alive = false;
      }
    } else if (absl::EqualsIgnoreCase(h.name, "Expect")) {
      if (!absl::EqualsIgnoreCase(h.value, "100-continue")) {
        *why = absl::StrCat("Expect: ", h.value, " cannot be met (only 100-continue)");
        return 417;
      }
      head->expect_continue = head->http11;
    } else if (absl::EqualsIgnoreCase(h.name, "Host")) {
      has_host = true;
    }
  }
  if (has_te && head->content_length >= 0) {
    *why = "a request may not have both Content-Length and Transfer-Encoding";
    return 400;
  }
  if (head->http11 && !has_host) {
    *why = "an HTTP/1.1 request needs a Host header";
    return 400;
  }
  return 0;
}

// A LF without the CR before it (RFC 9112 2.2 lets a server refuse it).
bool HasBareLf(absl::string_view head) {
  for (size_t i = head.find('\n'); i != absl::string_view::npos; i = head.find('\n', i + 1)) {
    if (i == 0 || head[i - 1] != '\r') return true;
  }
  return false;
}

}  // namespace

std::optional<absl::string_view> HttpRequestHead::Header(absl::string_view name) const {
  for (const HttpHeader& h : headers) {
    if (absl::EqualsIgnoreCase(h.name, name)) return absl::string_view(h.value);
  }
  return std::nullopt;
}

HeadParse ParseRequestHead(absl::string_view bytes, size_t max_head_bytes) {
  size_t start = 0;
  while (bytes.size() - start >= 2 && bytes.substr(start, 2) == "\r\n") start += 2;
  const size_t end = bytes.find("\r\n\r\n", start);
  const size_t head_end = end == absl::string_view::npos ? bytes.size() : end;
  if (HasBareLf(bytes.substr(start, head_end - start))) {
    // Such a head never ends in CRLF CRLF: answer now, not with a 408 after the head timeout.
    return Error(400, "a line of the request head ends in a bare LF (HTTP needs CRLF)");
  }
  if (end == absl::string_view::npos) {
    if (bytes.size() > max_head_bytes) {
      return Error(431, absl::StrCat("the request head is over ", max_head_bytes, " bytes"));
    }
    return HeadParse();
  }
  if (end + 4 > max_head_bytes) {
    return Error(431, absl::StrCat("the request head is over ", max_head_bytes, " bytes"));
  }
  HeadParse p;
  std::string why;
  const std::vector<absl::string_view> lines =
      absl::StrSplit(bytes.substr(start, end - start), "\r\n");
  int status = ParseRequestLine(lines[0], &p.head, &why);
  for (size_t i = 1; status == 0 && i < lines.size(); ++i) {
    status = ParseField(lines[i], &p.head, &why);
  }
  if (status == 0) status = ApplyHeaders(&p.head, &why);
  if (status != 0) return Error(status, why);
  p.kind = HeadParse::kComplete;
  p.head_bytes = end + 4;
  return p;
}

const char* HttpReason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

}  // namespace reformer::serving
