// HttpExchange: one HTTP request on a civetweb connection, as the handler thread that owns it sees
// it: the request line and headers, the body (read with a size limit and a time limit), and the
// response (a head, then the body written once, with Content-Length or chunked). REST inference
// uses it, and so can any endpoint that reads a body or streams an answer (generation, Server-Sent
// Events): StartChunked/WriteChunk/FinishChunked.
//
// civetweb (1.15) runs a handler on one of its worker threads and gives it no way to learn that
// the client went away while the handler waits for work done elsewhere: the socket is not exposed
// and there are no asynchronous handlers. PeerGone() therefore finds the connection's socket once,
// by matching its addresses and ports (getsockname/getpeername over the process's descriptors;
// several matches = unknown), and polls it for a hang-up without reading from it. A client that
// half-closes its side after sending the request counts as gone (as nginx treats it).
//
// Writes never copy the body: Write hands the caller's bytes to the socket (mg_write, in pieces of
// at most 1 GiB, since civetweb takes an int). A client that stops reading makes a write fail
// after civetweb's request timeout. Thread-compatible: the owning handler thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/batching/clock.h"
#include "server/http/json_writer.h"

struct mg_connection;
struct mg_request_info;

namespace reformer::serving {

struct HttpHeader {
  std::string name;
  std::string value;
};

class HttpExchange {
 public:
  explicit HttpExchange(mg_connection* conn);
  HttpExchange(const HttpExchange&) = delete;
  HttpExchange& operator=(const HttpExchange&) = delete;

  absl::string_view method() const { return method_; }
  absl::string_view path() const { return path_; }
  bool http11() const;
  // The header's value, nullopt when absent (case-insensitive name).
  std::optional<absl::string_view> Header(const char* name) const;
  // Content-Length; -1 when not given (a chunked body, or none).
  int64_t content_length() const;

  // The whole body. RESOURCE_EXHAUSTED when it is (or declares to be) over `max_bytes`, checked
  // against Content-Length before anything is read or allocated; DEADLINE_EXCEEDED when it has
  // not arrived by `deadline` (on `clock`); INVALID_ARGUMENT when the client ends it early.
  // Answers `Expect: 100-continue` before reading.
  absl::StatusOr<std::string> ReadBody(int64_t max_bytes, absl::Time deadline, const Clock& clock);
  // Reads and drops what is left of the body (at most `max_bytes`, until `deadline`), so that a
  // client still sending it can read an early answer before the connection closes.
  void DiscardBody(int64_t max_bytes, absl::Time deadline, const Clock& clock);

  // The response head. `content_length` nullopt = Transfer-Encoding: chunked (HTTP/1.1 only).
  // `close` adds Connection: close. False when the client is gone.
  bool SendHead(int status, absl::string_view content_type, std::optional<int64_t> content_length,
                const std::vector<HttpHeader>& headers = {}, bool close = false);
  // Body bytes after a Content-Length head (sent as they are, never copied).
  bool Write(absl::string_view bytes);
  // Chunked bodies: a head with Transfer-Encoding: chunked, chunks, and the last (empty) chunk.
  bool StartChunked(int status, absl::string_view content_type,
                    const std::vector<HttpHeader>& headers = {});
  bool WriteChunk(absl::string_view bytes);
  bool FinishChunked();
  // A whole small response.
  bool Send(int status, absl::string_view content_type, absl::string_view body,
            const std::vector<HttpHeader>& headers = {}, bool close = false);
  bool head_sent() const { return head_sent_; }

  // True once the client has closed its side of the connection or the socket failed; false while
  // it is connected or when its socket cannot be identified (see above).
  bool PeerGone();

 private:
  mg_connection* const conn_;
  const mg_request_info* const info_;
  const std::string method_;
  const std::string path_;
  bool head_sent_ = false;
  bool continue_sent_ = false;
  int socket_ = -2;  // -2 = not looked for yet, -1 = unknown
};

// A body whose length is not known when it starts (JSON of any size): the first piece written is
// held back; a body that ends within it goes out with Content-Length, a longer one chunked
// (HTTP/1.1 clients only: callers count the length first for HTTP/1.0). Holds at most one piece.
class StreamingBody final : public ByteSink {
 public:
  StreamingBody(HttpExchange* exchange, int status, std::string content_type,
                std::vector<HttpHeader> headers = {});
  bool Write(absl::string_view bytes) override;
  // Ends the body (sends the head first when nothing was sent yet).
  bool Finish();

 private:
  HttpExchange* const exchange_;
  const int status_;
  const std::string content_type_;
  const std::vector<HttpHeader> headers_;
  std::string held_;
  bool chunked_ = false;
  bool ok_ = true;
};

// Body bytes straight to the connection, after a Content-Length head.
class ConnectionSink final : public ByteSink {
 public:
  explicit ConnectionSink(HttpExchange* exchange) : exchange_(exchange) {}
  bool Write(absl::string_view bytes) override { return exchange_->Write(bytes); }

 private:
  HttpExchange* const exchange_;
};

// A POST handler's body: `run`'s status, an exception it throws as its status (naming `what`), and,
// when the exchange ends unanswered (an exception, or a client taken as gone: one that half-closed its
// side still reads this), `refuse` writes that status, never civetweb's default 404.
absl::Status RunAnswered(HttpExchange* exchange, const char* what,
                         const std::function<absl::Status()>& run,
                         const std::function<void(const absl::Status&)>& refuse);

}  // namespace reformer::serving
