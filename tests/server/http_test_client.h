// A minimal HTTP/1.1 client over loopback for the HTTP server tests: one request per connection,
// exact status, headers and body (Content-Length or chunked), or a connection kept open by hand.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace reformer::serving::testing {

struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // de-chunked
  bool chunked = false;
};

inline int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

inline bool SendAll(int fd, const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

inline std::string ReadAll(int fd) {
  std::string all;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) all.append(buf, static_cast<size_t>(n));
  return all;
}

// Decodes a chunked body; false when it is malformed.
inline bool Dechunk(const std::string& in, std::string* out) {
  size_t pos = 0;
  while (true) {
    const size_t eol = in.find("\r\n", pos);
    if (eol == std::string::npos) return false;
    const size_t n = std::strtoul(in.substr(pos, eol - pos).c_str(), nullptr, 16);
    pos = eol + 2;
    if (n == 0) return true;
    if (pos + n + 2 > in.size()) return false;
    out->append(in, pos, n);
    pos += n + 2;
  }
}

inline HttpReply ParseReply(const std::string& all) {
  HttpReply r;
  const size_t head_end = all.find("\r\n\r\n");
  if (all.size() < 12 || head_end == std::string::npos) return r;
  r.status = std::atoi(all.substr(9, 3).c_str());
  std::vector<std::string> lines = absl::StrSplit(all.substr(0, head_end), "\r\n");
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    r.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  const std::string rest = all.substr(head_end + 4);
  auto te = r.headers.find("transfer-encoding");
  if (te != r.headers.end() && te->second == "chunked") {
    r.chunked = true;
    if (!Dechunk(rest, &r.body)) r.status = -1;
  } else {
    r.body = rest;
  }
  return r;
}

// One request on a new connection ("Connection: close"); the reply once the server closes.
inline HttpReply HttpCall(int port, const std::string& method, const std::string& path,
                          const std::string& body = "",
                          const std::vector<std::pair<std::string, std::string>>& headers = {},
                          const std::string& version = "HTTP/1.1") {
  HttpReply r;
  const int fd = ConnectLoopback(port);
  if (fd < 0) return r;
  std::string req = absl::StrCat(method, " ", path, " ", version,
                                 "\r\nHost: localhost\r\nConnection: close\r\n");
  if (method == "POST") absl::StrAppend(&req, "Content-Length: ", body.size(), "\r\n");
  for (const auto& [k, v] : headers) absl::StrAppend(&req, k, ": ", v, "\r\n");
  absl::StrAppend(&req, "\r\n", body);
  if (SendAll(fd, req)) r = ParseReply(ReadAll(fd));
  close(fd);
  return r;
}

}  // namespace reformer::serving::testing
