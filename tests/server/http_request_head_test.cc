// ParseRequestHead (server/http/http_request_head.h): each malformed head gets its one status, a
// complete head its fields, an incomplete one waits.
#include "server/http/http_request_head.h"

#include <string>

#include "gtest/gtest.h"

namespace reformer::serving {
namespace {

constexpr size_t kMax = 16 << 10;

HeadParse Parse(const std::string& bytes) { return ParseRequestHead(bytes, kMax); }

int StatusOf(const std::string& bytes) {
  const HeadParse p = Parse(bytes);
  EXPECT_EQ(p.kind, HeadParse::kError) << bytes;
  EXPECT_FALSE(p.message.empty());
  return p.status;
}

TEST(HttpRequestHeadTest, CompleteHeadWithBodyStartAfterIt) {
  const std::string head =
      "POST /v2/models/a%20b/infer?x=1 HTTP/1.1\r\nHost: h\r\ncontent-length: 5\r\n"
      "Expect: 100-continue\r\n\r\n";
  const HeadParse p = Parse(head + "hello");
  ASSERT_EQ(p.kind, HeadParse::kComplete);
  EXPECT_EQ(p.head_bytes, head.size());
  EXPECT_EQ(p.head.method, "POST");
  EXPECT_EQ(p.head.path, "/v2/models/a b/infer");
  EXPECT_EQ(p.head.query, "x=1");
  EXPECT_EQ(p.head.content_length, 5);
  EXPECT_TRUE(p.head.expect_continue);
  EXPECT_TRUE(p.head.keep_alive);
  EXPECT_EQ(p.head.Header("CONTENT-LENGTH").value_or(""), "5");
}

TEST(HttpRequestHeadTest, IncompleteWaitsAndOversizedIs431) {
  EXPECT_EQ(Parse("GET /readyz HTTP/1.1\r\nHost: x\r\n").kind, HeadParse::kIncomplete);
  EXPECT_EQ(Parse("").kind, HeadParse::kIncomplete);
  EXPECT_EQ(StatusOf("GET / HTTP/1.1\r\nX: " + std::string(kMax, 'a')), 431);
  EXPECT_EQ(StatusOf("GET / HTTP/1.1\r\nX: " + std::string(kMax, 'a') + "\r\n\r\n"), 431);
}

TEST(HttpRequestHeadTest, FramingErrors) {
  EXPECT_EQ(StatusOf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
  // Repeated equal lengths are one length (RFC 9112 6.3).
  const HeadParse same = Parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\n");
  ASSERT_EQ(same.kind, HeadParse::kComplete);
  EXPECT_EQ(same.head.content_length, 2);
}

TEST(HttpRequestHeadTest, LineAndFieldErrors) {
  EXPECT_EQ(StatusOf("FOO / HTTP/1.1\r\nHost: x\r\n\r\n"), 501);
  EXPECT_EQ(StatusOf("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
  EXPECT_EQ(StatusOf("GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf("GET / HTTP/1.1\r\n\r\n"), 400);  // no Host
  EXPECT_EQ(StatusOf("GET * HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf("GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf("GET /a%1 HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf(std::string("GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n", 35)), 400);
  EXPECT_EQ(StatusOf("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf("GET / HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n"), 417);
}

TEST(HttpRequestHeadTest, AbsoluteFormHttp10AndClose) {
  HeadParse p = Parse("GET http://host:8000/readyz HTTP/1.1\r\nHost: host\r\nConnection: Close\r\n\r\n");
  ASSERT_EQ(p.kind, HeadParse::kComplete);
  EXPECT_EQ(p.head.path, "/readyz");
  EXPECT_FALSE(p.head.keep_alive);
  p = Parse("\r\nGET /metrics HTTP/1.0\r\n\r\n");  // a leading empty line is skipped
  ASSERT_EQ(p.kind, HeadParse::kComplete);
  EXPECT_FALSE(p.head.http11);
  EXPECT_FALSE(p.head.keep_alive);
}

// %2F would become a separator after decoding: "/v2/models/default%2Finfer" ran an inference.
TEST(HttpRequestHeadTest, EncodedSlashIsRefused) {
  EXPECT_EQ(StatusOf("POST /v2/models/default%2Finfer HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf("GET /v2/models/a%2fb HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
  const HeadParse p = Parse("GET /v2/models/a%2Eb HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_EQ(p.kind, HeadParse::kComplete);
  EXPECT_EQ(p.head.path, "/v2/models/a.b");
}

// A head whose lines end in a bare LF never ends in CRLF CRLF: refused at once, before it is whole.
TEST(HttpRequestHeadTest, BareLfIsRefusedAtOnce) {
  EXPECT_EQ(StatusOf("GET /v2 HTTP/1.1\nHost: x\n\n"), 400);
  EXPECT_EQ(StatusOf("GET /v2 HTTP/1.1\nHo"), 400);
  EXPECT_EQ(StatusOf("GET /v2 HTTP/1.1\r\nHost: x\nX: y\r\n\r\n"), 400);
  EXPECT_EQ(Parse("GET /v2 HTTP/1.1\r\nHost: x\r\n").kind, HeadParse::kIncomplete);
  // A body after a complete head may hold any bytes.
  EXPECT_EQ(Parse("POST /v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\na\nb").kind,
            HeadParse::kComplete);
}

// Two readers of a repeated Host, token or JSON length could see two different requests.
TEST(HttpRequestHeadTest, RepeatedSingletonFieldsAre400) {
  EXPECT_EQ(StatusOf("GET /v2 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
  EXPECT_EQ(StatusOf("GET /v2 HTTP/1.1\r\nHost: a\r\nauthorization: Bearer x\r\n"
                     "Authorization: Bearer y\r\n\r\n"),
            400);
  const HeadParse p = Parse(
      "POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n"
      "Inference-Header-Content-Length: 9\r\ninference-header-content-length: 2\r\n\r\n");
  ASSERT_EQ(p.kind, HeadParse::kError);
  EXPECT_EQ(p.status, 400);
  EXPECT_NE(p.message.find("Inference-Header-Content-Length"), std::string::npos) << p.message;
  // Other fields may repeat.
  EXPECT_EQ(Parse("GET /v2 HTTP/1.1\r\nHost: a\r\nAccept: x\r\nAccept: y\r\n\r\n").kind,
            HeadParse::kComplete);
}

}  // namespace
}  // namespace reformer::serving
