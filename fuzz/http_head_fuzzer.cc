// Fuzz target: the HTTP front's request-head parser, ParseRequestHead (server/http/http_request_head.h),
// on the bytes a connection has received so far, with a 1 KiB head limit (the server's is 16 KiB).
// Checks: a complete head ends within the input and the limit, has a known method, a path that starts
// with '/' and holds no control character, HTTP/1.0 or /1.1, never both Content-Length and chunked, a
// Content-Length >= -1; parsing exactly its bytes gives the same head (no look-ahead); an error is one
// of the documented statuses with a message; "incomplete" only while the input is within the limit.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "server/http/http_request_head.h"

namespace {

using reformer::serving::HeadParse;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz target: invariant broken: %s\n", what);
    std::abort();
  }
}

constexpr size_t kMaxHead = 1024;

void CheckComplete(absl::string_view input, const HeadParse& p) {
  Check(p.head_bytes <= input.size() && p.head_bytes <= kMaxHead, "a head within input and limit");
  const auto& h = p.head;
  Check(!h.method.empty(), "a method");
  Check(!h.path.empty() && h.path[0] == '/', "an origin-form path");
  for (char c : h.path) {
    const auto u = static_cast<unsigned char>(c);
    Check(u >= 0x20 && u != 0x7f, "no control character in the path");
  }
  Check(!(h.chunked && h.content_length >= 0), "never Content-Length with chunked");
  Check(h.content_length >= -1, "Content-Length >= -1");
  Check(!h.expect_continue || h.http11, "100-continue only for HTTP/1.1");
  const HeadParse again = reformer::serving::ParseRequestHead(input.substr(0, p.head_bytes), kMaxHead);
  Check(again.kind == HeadParse::kComplete && again.head_bytes == p.head_bytes &&
            again.head.path == h.path && again.head.content_length == h.content_length,
        "the head's own bytes parse the same");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  const HeadParse p = reformer::serving::ParseRequestHead(input, kMaxHead);
  if (std::getenv("REFORMER_FUZZ_VERBOSE") != nullptr) {  // to check what seeds reach
    std::fprintf(stderr, "  kind %d status %d %s\n", p.kind, p.status, p.message.c_str());
  }
  switch (p.kind) {
    case HeadParse::kComplete:
      CheckComplete(input, p);
      break;
    case HeadParse::kError:
      Check(p.status == 400 || p.status == 417 || p.status == 431 || p.status == 501 ||
                p.status == 505,
            "a documented status");
      Check(!p.message.empty(), "an error says why");
      break;
    case HeadParse::kIncomplete:
      Check(size <= kMaxHead, "incomplete only within the limit");
      break;
  }
  return 0;
}
