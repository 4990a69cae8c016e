#include "server/http/http_exchange.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/request/exception_status.h"

namespace reformer::serving {
namespace {

// mg_write and mg_send_chunk take an int / unsigned length.
constexpr size_t kMaxPiece = size_t{1} << 30;
constexpr size_t kReadPiece = size_t{64} << 10;

// Port and printable address of a socket address; port -1 for other families.
int PortOf(const sockaddr_storage& a, std::string* address) {
  char text[INET6_ADDRSTRLEN] = "";
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a);
    inet_ntop(AF_INET, &in.sin_addr, text, sizeof(text));
    *address = text;
    return ntohs(in.sin_port);
  }
  if (a.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a);
    inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof(text));
    *address = text;
    return ntohs(in6.sin6_port);
  }
  return -1;
}

// The descriptor of the TCP connection local port `server_port` <-> `remote_addr`:`remote_port`,
// or -1 when none or several match. Reads addresses only (getsockname/getpeername).
int FindConnectionSocket(int server_port, int remote_port, const std::string& remote_addr) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  std::vector<int> by_port, by_address;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    const int fd = std::atoi(entry->d_name);
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof(local), peer_len = sizeof(peer);
    std::string ignored, address;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
        PortOf(local, &ignored) != server_port ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0 ||
        PortOf(peer, &address) != remote_port) {
      continue;
    }
    by_port.push_back(fd);
    if (address == remote_addr) by_address.push_back(fd);
  }
  closedir(dir);
  if (by_address.size() == 1) return by_address[0];
  return by_port.size() == 1 ? by_port[0] : -1;
}

}  // namespace

HttpExchange::HttpExchange(mg_connection* conn)
    : conn_(conn),
      info_(mg_get_request_info(conn)),
      method_(info_->request_method != nullptr ? info_->request_method : ""),
      path_(info_->local_uri != nullptr ? info_->local_uri : "/") {}

bool HttpExchange::http11() const {
  return info_->http_version != nullptr && std::strcmp(info_->http_version, "1.0") != 0;
}

std::optional<absl::string_view> HttpExchange::Header(const char* name) const {
  const char* value = mg_get_header(conn_, name);
  if (value == nullptr) return std::nullopt;
  return absl::string_view(value);
}

int64_t HttpExchange::content_length() const { return info_->content_length; }

absl::StatusOr<std::string> HttpExchange::ReadBody(int64_t max_bytes, absl::Time deadline,
                                                   const Clock& clock) {
  const int64_t declared = content_length();
  if (declared > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the request body has ", declared, " bytes, above the limit of ", max_bytes,
                     " bytes (--http_max_body_bytes); send fewer tokens per request or use gRPC"));
  }
  std::optional<absl::string_view> expect = Header("Expect");
  if (expect && absl::EqualsIgnoreCase(*expect, "100-continue") && !continue_sent_) {
    continue_sent_ = true;
    mg_printf(conn_, "HTTP/1.1 100 Continue\r\n\r\n");
  }
  // A declared length is read into a buffer of exactly that size; a chunked body grows its
  // buffer up to one byte over the limit, which is how "over the limit" is noticed.
  const size_t cap =
      declared >= 0 ? static_cast<size_t>(declared) : static_cast<size_t>(max_bytes) + 1;
  std::string body;
  if (declared >= 0) body.resize(cap);
  size_t got = 0;
  while (got < cap) {
    if (body.size() - got < kReadPiece && body.size() < cap) {
      body.resize(std::min(cap, std::max(body.size() * 2, got + kReadPiece)));
    }
    const int n = mg_read(conn_, body.data() + got, std::min(kReadPiece, body.size() - got));
    if (n <= 0) break;
    got += static_cast<size_t>(n);
    if (got < cap && clock.Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("the request body did not arrive in time (", got, " bytes received)"));
    }
  }
  if (declared < 0 && got > static_cast<size_t>(max_bytes)) {
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
  if (content_length() == 0 || (!continue_sent_ && Header("Expect").has_value())) return;
  char scratch[4096];
  int64_t dropped = 0;
  while (dropped < max_bytes && clock.Now() <= deadline) {
    const int n = mg_read(conn_, scratch, sizeof(scratch));
    if (n <= 0) return;
    dropped += n;
  }
}

bool HttpExchange::SendHead(int status, absl::string_view content_type,
                            std::optional<int64_t> content_length,
                            const std::vector<HttpHeader>& headers, bool close) {
  std::string head =
      absl::StrCat("HTTP/1.1 ", status, " ", mg_get_response_code_text(conn_, status),
                   "\r\nContent-Type: ", content_type, "\r\n");
  if (content_length) {
    absl::StrAppend(&head, "Content-Length: ", *content_length, "\r\n");
  } else {
    absl::StrAppend(&head, "Transfer-Encoding: chunked\r\n");
  }
  absl::StrAppend(&head, "Cache-Control: no-store\r\n");
  for (const HttpHeader& h : headers) absl::StrAppend(&head, h.name, ": ", h.value, "\r\n");
  if (close) absl::StrAppend(&head, "Connection: close\r\n");
  absl::StrAppend(&head, "\r\n");
  head_sent_ = true;
  return mg_write(conn_, head.data(), head.size()) == static_cast<int>(head.size());
}

bool HttpExchange::Write(absl::string_view bytes) {
  while (!bytes.empty()) {
    const size_t n = std::min(bytes.size(), kMaxPiece);
    if (mg_write(conn_, bytes.data(), n) != static_cast<int>(n)) return false;
    bytes.remove_prefix(n);
  }
  return true;
}

bool HttpExchange::StartChunked(int status, absl::string_view content_type,
                                const std::vector<HttpHeader>& headers) {
  return SendHead(status, content_type, std::nullopt, headers);
}

bool HttpExchange::WriteChunk(absl::string_view bytes) {
  while (!bytes.empty()) {
    const size_t n = std::min(bytes.size(), kMaxPiece);
    if (mg_send_chunk(conn_, bytes.data(), static_cast<unsigned>(n)) < 0) return false;
    bytes.remove_prefix(n);
  }
  return true;
}

bool HttpExchange::FinishChunked() { return mg_write(conn_, "0\r\n\r\n", 5) == 5; }

bool HttpExchange::Send(int status, absl::string_view content_type, absl::string_view body,
                        const std::vector<HttpHeader>& headers, bool close) {
  if (!SendHead(status, content_type, static_cast<int64_t>(body.size()), headers, close)) {
    return false;
  }
  return method_ == "HEAD" || Write(body);
}

bool HttpExchange::PeerGone() {
  if (socket_ == -2) {
    socket_ = FindConnectionSocket(info_->server_port, info_->remote_port, info_->remote_addr);
  }
  if (socket_ < 0) return false;
  pollfd p{socket_, POLLIN | POLLRDHUP, 0};
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
