#include "server/http/http_exchange.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/request/exception_status.h"

namespace reformer::serving {
namespace {

constexpr size_t kReadPiece = size_t{64} << 10;
constexpr size_t kMaxChunkLine = 4096;  // a chunk-size line with its extensions, or a trailer
// The chunked framing (size lines, extensions, CRLFs, trailers) may take this much plus 8 bytes per
// data byte ("1\r\nx\r\n" takes 5): --http_max_body_bytes bounds the data only, so without this a
// client could send gigabytes of trailers or extensions around a small body (QA7: 666 MiB of
// trailers in 5 s were read and dropped).
constexpr int64_t kFramingAllowance = int64_t{64} << 10;
constexpr int64_t kFramingPerDataByte = 8;
constexpr absl::Duration kPollSlice = absl::Milliseconds(100);  // re-reads the clock this often

absl::Status DrainingError() {
  return absl::UnavailableError(
      "the server is shutting down (draining): the request body was not read; retry on another "
      "replica");
}

// A chunk-size line: hex digits, optionally followed by ";extensions" (RFC 9112 7.1).
std::optional<int64_t> ChunkSize(absl::string_view line) {
  const size_t semi = line.find(';');
  absl::string_view hex = absl::StripTrailingAsciiWhitespace(line.substr(0, semi));
  if (hex.empty() || hex.size() > 15) return std::nullopt;
  int64_t size = 0;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
    size = size * 16 + (absl::ascii_isdigit(static_cast<unsigned char>(c))
                            ? c - '0'
                            : absl::ascii_tolower(static_cast<unsigned char>(c)) - 'a' + 10);
  }
  return size;
}

}  // namespace

HttpExchange::HttpExchange(HttpConnection* conn, const HttpRequestHead& head,
                           absl::Duration write_stall)
    : conn_(conn), head_(head), write_stall_(write_stall) {
  body_left_ = std::max<int64_t>(0, head.content_length);
  body_done_ = !head.chunked && body_left_ == 0;
}

HttpExchange::~HttpExchange() { conn_->buffer.erase(0, pos_); }

std::optional<absl::string_view> HttpExchange::Header(const char* name) const {
  return head_.Header(name);
}

int64_t HttpExchange::content_length() const { return head_.content_length; }

bool HttpExchange::Reusable() const {
  return body_done_ && head_sent_ && !broken_ && !closing_ && !chunked_open_ && head_.keep_alive;
}

absl::Status HttpExchange::WaitReadable(absl::Time deadline, const Clock& clock) {
  while (true) {
    if (reading_body_ && Draining()) return DrainingError();
    const absl::Duration left = deadline - clock.Now();
    if (left < absl::ZeroDuration()) return absl::DeadlineExceededError("");
    pollfd p{conn_->fd, POLLIN, 0};
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(std::min(left, kPollSlice))) + 1;
    const int r = poll(&p, 1, ms);
    if (r > 0) return absl::OkStatus();
    if (r < 0 && errno != EINTR) return absl::InternalError(std::strerror(errno));
  }
}

absl::StatusOr<size_t> HttpExchange::RawRead(char* dst, size_t cap, absl::Time deadline,
                                             const Clock& clock) {
  if (pos_ < conn_->buffer.size()) {
    const size_t n = std::min(cap, conn_->buffer.size() - pos_);
    std::memcpy(dst, conn_->buffer.data() + pos_, n);
    pos_ += n;
    if (pos_ == conn_->buffer.size()) {
      conn_->buffer.clear();
      pos_ = 0;
    }
    return n;
  }
  return Recv(dst, cap, deadline, clock);
}

absl::StatusOr<size_t> HttpExchange::Recv(char* dst, size_t cap, absl::Time deadline,
                                          const Clock& clock) {
  while (true) {
    const ssize_t n = recv(conn_->fd, dst, cap, 0);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return absl::InternalError(std::strerror(errno));
    absl::Status ready = WaitReadable(deadline, clock);
    if (!ready.ok()) return ready;
  }
}

absl::StatusOr<std::string> HttpExchange::ReadLine(absl::Time deadline, const Clock& clock) {
  while (true) {
    const size_t end = conn_->buffer.find("\r\n", pos_);
    if (end != std::string::npos) {
      std::string line = conn_->buffer.substr(pos_, end - pos_);
      pos_ = end + 2;
      framing_ += static_cast<int64_t>(line.size()) + 2;
      if (framing_ > kFramingAllowance + kFramingPerDataByte * chunk_data_) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the chunked body's framing (chunk-size lines, extensions, trailers) has ", framing_,
            " bytes for ", chunk_data_, " bytes of data, above 64 KiB + 8 per data byte"));
      }
      return line;
    }
    if (conn_->buffer.size() - pos_ > kMaxChunkLine) {
      return absl::InvalidArgumentError("a chunk-size line of the request body is too long");
    }
    conn_->buffer.erase(0, pos_);
    pos_ = 0;
    char piece[1024];
    absl::StatusOr<size_t> n = Recv(piece, sizeof(piece), deadline, clock);
    if (!n.ok()) return n.status();
    if (*n == 0) return absl::InvalidArgumentError("the client ended the chunked body early");
    conn_->buffer.append(piece, *n);
  }
}

absl::StatusOr<size_t> HttpExchange::ReadChunked(char* dst, size_t cap, absl::Time deadline,
                                                 const Clock& clock) {
  if (chunk_left_ == 0) {
    if (chunk_crlf_) {
      absl::StatusOr<std::string> crlf = ReadLine(deadline, clock);
      if (!crlf.ok()) return crlf.status();
      if (!crlf->empty()) return absl::InvalidArgumentError("a chunk is longer than its size");
      chunk_crlf_ = false;
    }
    absl::StatusOr<std::string> line = ReadLine(deadline, clock);
    if (!line.ok()) return line.status();
    const std::optional<int64_t> size = ChunkSize(*line);
    if (!size) return absl::InvalidArgumentError(absl::StrCat("bad chunk size: ", *line));
    if (*size == 0) {  // the last chunk; trailer fields up to an empty line are dropped
      while (true) {
        absl::StatusOr<std::string> trailer = ReadLine(deadline, clock);
        if (!trailer.ok()) return trailer.status();
        if (trailer->empty()) break;
      }
      body_done_ = true;
      return 0;
    }
    chunk_left_ = *size;
    chunk_crlf_ = true;
  }
  absl::StatusOr<size_t> n =
      RawRead(dst, std::min<size_t>(cap, static_cast<size_t>(chunk_left_)), deadline, clock);
  if (!n.ok()) return n.status();
  if (*n == 0) return absl::InvalidArgumentError("the client ended the chunked body early");
  chunk_left_ -= static_cast<int64_t>(*n);
  chunk_data_ += static_cast<int64_t>(*n);
  return *n;
}

absl::StatusOr<size_t> HttpExchange::ReadSome(char* dst, size_t cap, absl::Time deadline,
                                              const Clock& clock) {
  if (body_done_ || cap == 0) return 0;
  absl::StatusOr<size_t> n = head_.chunked ? ReadChunked(dst, cap, deadline, clock) : [&] {
    return RawRead(dst, std::min<size_t>(cap, static_cast<size_t>(body_left_)), deadline, clock);
  }();
  if (!n.ok()) {
    broken_ = read_failed_ = true;
    return n.status();
  }
  if (head_.chunked) return n;
  if (*n == 0) {  // ended early (ReadBody says how)
    broken_ = read_failed_ = true;
    return 0;
  }
  body_left_ -= static_cast<int64_t>(*n);
  body_done_ = body_left_ == 0;
  return n;
}

void HttpExchange::SendContinue() {
  if (head_.expect_continue && !continue_sent_ && !body_done_ && !head_sent_) {
    continue_sent_ = true;
    SendRaw("HTTP/1.1 100 Continue\r\n\r\n");
  }
}

absl::StatusOr<std::string> HttpExchange::ReadBody(int64_t max_bytes, absl::Time deadline,
                                                   const Clock& clock) {
  const int64_t declared = content_length();
  if (declared > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the request body has ", declared, " bytes, above the limit of ", max_bytes,
                     " bytes (--http_max_body_bytes); send fewer tokens per request or use gRPC"));
  }
  SendContinue();
  // A declared length is read into a buffer of exactly that size; a chunked body grows its
  // buffer up to one byte over the limit, which is how "over the limit" is noticed.
  const size_t cap =
      declared >= 0 ? static_cast<size_t>(declared) : static_cast<size_t>(max_bytes) + 1;
  std::string body;
  if (declared >= 0) body.resize(cap);
  size_t got = 0;
  reading_body_ = true;
  const auto done_reading = absl::MakeCleanup([this] { reading_body_ = false; });
  while (got < cap && !body_done_) {
    if (Draining()) {
      broken_ = read_failed_ = true;
      return DrainingError();
    }
    if (body.size() - got < kReadPiece && body.size() < cap) {
      body.resize(std::min(cap, std::max(body.size() * 2, got + kReadPiece)));
    }
    absl::StatusOr<size_t> n =
        ReadSome(body.data() + got, std::min(kReadPiece, body.size() - got), deadline, clock);
    if (absl::IsUnavailable(n.status())) return n.status();
    if (absl::IsDeadlineExceeded(n.status())) {
      return absl::DeadlineExceededError(
          absl::StrCat("the request body did not arrive in time (", got, " bytes received)"));
    }
    if (!n.ok() && head_.chunked && absl::IsInvalidArgument(n.status())) return n.status();
    if (!n.ok() && head_.chunked) {
      return absl::InvalidArgumentError(absl::StrCat("the chunked request body ended early (",
                                                     n.status().message(), ")"));
    }
    if (!n.ok() || *n == 0) break;
    got += *n;
  }
  if (declared < 0 && got > static_cast<size_t>(max_bytes)) {
    broken_ = true;
    return absl::ResourceExhaustedError(
        absl::StrCat("the request body is above the limit of ", max_bytes,
                     " bytes (--http_max_body_bytes); send fewer tokens per request or use gRPC"));
  }
  if (declared >= 0 && got < cap) {
    return absl::InvalidArgumentError(absl::StrCat("the request body ended after ", got, " of ",
                                                   declared, " bytes (Content-Length)"));
  }
  body.resize(got);
  return body;
}

void HttpExchange::DiscardBody(int64_t max_bytes, absl::Time deadline, const Clock& clock) {
  // Nothing to read, or the client waits for "100 Continue" before it sends the body.
  if (body_done_ || read_failed_ || (head_.expect_continue && !continue_sent_)) return;
  char scratch[4096];
  int64_t dropped = 0;
  while (dropped < max_bytes && clock.Now() <= deadline) {
    absl::StatusOr<size_t> n = ReadSome(scratch, sizeof(scratch), deadline, clock);
    if (!n.ok() || *n == 0) return;
    dropped += static_cast<int64_t>(*n);
  }
}

bool HttpExchange::SendRaw(absl::string_view bytes) {
  if (write_failed_) return false;
  if (!SendAll(conn_->fd, bytes.data(), bytes.size(), write_stall_)) broken_ = write_failed_ = true;
  return !write_failed_;
}

bool HttpExchange::SendHead(int status, absl::string_view content_type,
                            std::optional<int64_t> content_length,
                            const std::vector<HttpHeader>& headers, bool close) {
  // An unread body, or a client that asked for it, closes the connection after this answer.
  closing_ = close || close_requested_ || !body_done_ || broken_ || !head_.keep_alive;
  std::string head = absl::StrCat("HTTP/1.1 ", status, " ", HttpReason(status),
                                  "\r\nContent-Type: ", content_type, "\r\n");
  if (content_length) {
    absl::StrAppend(&head, "Content-Length: ", *content_length, "\r\n");
  } else {
    absl::StrAppend(&head, "Transfer-Encoding: chunked\r\n");
    chunked_open_ = true;
  }
  absl::StrAppend(&head, "Cache-Control: no-store\r\n");
  for (const HttpHeader& h : headers) absl::StrAppend(&head, h.name, ": ", h.value, "\r\n");
  if (closing_) absl::StrAppend(&head, "Connection: close\r\n");
  absl::StrAppend(&head, "\r\n");
  head_sent_ = true;
  return SendRaw(head);
}

bool HttpExchange::Write(absl::string_view bytes) { return SendRaw(bytes); }

bool HttpExchange::StartChunked(int status, absl::string_view content_type,
                                const std::vector<HttpHeader>& headers) {
  return SendHead(status, content_type, std::nullopt, headers);
}

bool HttpExchange::WriteChunk(absl::string_view bytes) {
  if (bytes.empty()) return !write_failed_;  // an empty chunk would end the body
  const std::string size = absl::StrFormat("%x\r\n", bytes.size());
  if (bytes.size() <= kReadPiece) return SendRaw(absl::StrCat(size, bytes, "\r\n"));
  return SendRaw(size) && SendRaw(bytes) && SendRaw("\r\n");
}

bool HttpExchange::FinishChunked() {
  chunked_open_ = false;
  return SendRaw("0\r\n\r\n");
}

bool HttpExchange::Send(int status, absl::string_view content_type, absl::string_view body,
                        const std::vector<HttpHeader>& headers, bool close) {
  if (!SendHead(status, content_type, static_cast<int64_t>(body.size()), headers, close)) {
    return false;
  }
  return head_.method == "HEAD" || Write(body);
}

bool HttpExchange::PeerGone() {
  if (write_failed_) return true;
  pollfd p{conn_->fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

StreamingBody::StreamingBody(HttpExchange* exchange, int status, std::string content_type,
                             std::vector<HttpHeader> headers)
    : exchange_(exchange),
      status_(status),
      content_type_(std::move(content_type)),
      headers_(std::move(headers)) {}

bool StreamingBody::Write(absl::string_view bytes) {
  if (!ok_) return false;
  if (!chunked_ && held_.empty()) {
    held_.assign(bytes.data(), bytes.size());
    return true;
  }
  if (!chunked_) {
    chunked_ = true;
    ok_ = exchange_->StartChunked(status_, content_type_, headers_) && exchange_->WriteChunk(held_);
    held_.clear();
    held_.shrink_to_fit();
  }
  ok_ = ok_ && exchange_->WriteChunk(bytes);
  return ok_;
}

bool StreamingBody::Finish() {
  if (!ok_) return false;
  if (chunked_) return ok_ = exchange_->FinishChunked();
  ok_ = exchange_->Send(status_, content_type_, held_, headers_);
  return ok_;
}

absl::Status RunAnswered(HttpExchange* exchange, const char* what,
                         const std::function<absl::Status()>& run,
                         const std::function<void(const absl::Status&)>& refuse) {
  absl::Status status;
  try {
    status = run();
  } catch (...) {
    status = CurrentExceptionStatus(what);
  }
  try {
    if (!exchange->head_sent()) refuse(status.ok() ? absl::InternalError("no answer") : status);
  } catch (...) {  // out of memory even for the error: the connection closes unanswered
  }
  return status;
}

}  // namespace reformer::serving
