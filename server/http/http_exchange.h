// HttpExchange: one HTTP request on a connection of the HTTP front (http_front.h), as the handler
// thread that owns it sees it: the request line and headers (parsed and checked by the front), the
// body (read with a size limit and a time limit; Content-Length or chunked, strictly: a bad chunk
// size is INVALID_ARGUMENT and the connection closes after the answer), and the response (a head,
// then the body written once, with Content-Length or chunked). REST inference uses it, and so can
// any endpoint that reads a body or streams an answer (generation, Server-Sent Events):
// StartChunked/WriteChunk/FinishChunked.
//
// The handler thread owns the connection's descriptor while it serves the request: reads and
// writes block with poll deadlines (a write that makes no progress for `write_stall` fails; a body
// read gives up at its deadline on the injected clock). PeerGone() polls the descriptor for a
// hang-up without reading from it; a client that half-closes its side after sending the request
// counts as gone (as nginx treats it). Bytes the front read beyond the head (the body's start) are
// read first; bytes beyond the body (a pipelined request) stay in the connection's buffer.
//
// Writes never copy the body: Write hands the caller's bytes to the socket. Reusable() says whether
// the connection may carry another request: the body was read to its end, the response is complete
// and neither side asked to close. Thread-compatible: the owning handler thread only.
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
#include "server/http/http_front.h"
#include "server/http/http_request_head.h"
#include "server/http/json_writer.h"

namespace reformer::serving {

class HttpExchange {
 public:
  // Borrows `conn` and `head` for its lifetime; gives back the unread bytes on destruction.
  HttpExchange(HttpConnection* conn, const HttpRequestHead& head, absl::Duration write_stall);
  ~HttpExchange();
  HttpExchange(const HttpExchange&) = delete;
  HttpExchange& operator=(const HttpExchange&) = delete;

  absl::string_view method() const { return head_.method; }
  absl::string_view path() const { return head_.path; }
  bool http11() const { return head_.http11; }
  // The header's value, nullopt when absent (case-insensitive name).
  std::optional<absl::string_view> Header(const char* name) const;
  // Content-Length; -1 when not given (a chunked body, or none).
  int64_t content_length() const;

  // The whole body. RESOURCE_EXHAUSTED when it is (or declares to be) over `max_bytes`, checked
  // against Content-Length before anything is read or allocated; DEADLINE_EXCEEDED when it has
  // not arrived by `deadline` (on `clock`); INVALID_ARGUMENT when the client ends it early;
  // UNAVAILABLE when the front drains (SIGTERM) before it has all arrived: the request could not
  // be served anyway (the services refuse new work), so the client learns at once (503, close)
  // instead of uploading into a connection cut at the end of the drain.
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
  // The response (not sent yet) says Connection: close and the connection closes after it (the
  // server is draining: clients reconnect elsewhere).
  void CloseAfterResponse() { close_requested_ = true; }

  // True once the client has closed its side of the connection or the socket failed.
  bool PeerGone();
  // See the file comment.
  bool Reusable() const;

 private:
  // Up to `cap` body bytes into `dst`; 0 at the body's end.
  absl::StatusOr<size_t> ReadSome(char* dst, size_t cap, absl::Time deadline, const Clock& clock);
  absl::StatusOr<size_t> ReadChunked(char* dst, size_t cap, absl::Time deadline,
                                     const Clock& clock);
  // Raw connection bytes (buffered first); 0 = the client closed.
  absl::StatusOr<size_t> RawRead(char* dst, size_t cap, absl::Time deadline, const Clock& clock);
  absl::StatusOr<size_t> Recv(char* dst, size_t cap, absl::Time deadline, const Clock& clock);
  // One CRLF-terminated line (without CRLF) of the chunked framing.
  absl::StatusOr<std::string> ReadLine(absl::Time deadline, const Clock& clock);
  absl::Status WaitReadable(absl::Time deadline, const Clock& clock);
  bool Draining() const { return conn_->draining != nullptr && conn_->draining->load(); }
  void SendContinue();
  bool SendRaw(absl::string_view bytes);

  HttpConnection* const conn_;
  const HttpRequestHead& head_;
  const absl::Duration write_stall_;
  size_t pos_ = 0;            // read position in conn_->buffer
  int64_t body_left_ = 0;     // Content-Length bytes not read yet
  int64_t chunk_left_ = 0;    // chunked: bytes left in the current chunk
  bool chunk_crlf_ = false;   // chunked: a chunk's closing CRLF is due
  int64_t chunk_data_ = 0;    // chunked: data bytes read so far
  int64_t framing_ = 0;       // chunked: bytes of chunk-size lines, extensions and trailers so far
  bool body_done_ = false;    // the whole body has been read
  bool broken_ = false;       // not reusable: a read or write failed, bad framing, over the limit
  bool read_failed_ = false;  // the body cannot be read further (bad framing, early end, timeout)
  bool write_failed_ = false;
  bool closing_ = false;      // Connection: close was sent
  bool close_requested_ = false;  // CloseAfterResponse
  bool chunked_open_ = false; // a chunked response not finished yet
  bool head_sent_ = false;
  bool continue_sent_ = false;
  bool reading_body_ = false;  // within ReadBody: a wait gives up when the front drains
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
// side still reads this), `refuse` writes that status, never an empty connection.
absl::Status RunAnswered(HttpExchange* exchange, const char* what,
                         const std::function<absl::Status()>& run,
                         const std::function<void(const absl::Status&)>& refuse);

}  // namespace reformer::serving
