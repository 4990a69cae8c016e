#include "server/http/http_front.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <deque>
#include <optional>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/http/idle_connections.h"
#include "server/http/json_writer.h"

namespace reformer::serving {
namespace {

constexpr absl::Duration kSweepEvery = absl::Milliseconds(100);
constexpr absl::Duration kLinger = absl::Seconds(2);  // an answered bad request: time to read it
constexpr size_t kReadPiece = 16 << 10;
// Idle-listed connections examined per new connection at a limit (http_front.h, eviction).
constexpr int kEvictionCandidates = 8;
// At most this much of a refused connection's waiting input is read and dropped before it closes.
constexpr size_t kRefusalDrain = 64 << 10;

std::string ErrorResponse(int status, absl::string_view message) {
  const std::string body = JsonErrorBody(message);
  return absl::StrCat("HTTP/1.1 ", status, " ", HttpReason(status),
                      "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(),
                      "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n", body);
}

// A non-blocking listening socket on `address`:`port`, or an error.
absl::StatusOr<int> Listen(const std::string& address, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const char* host = address.empty() ? "0.0.0.0" : address.c_str();
  if (getaddrinfo(host, service.c_str(), &hints, &found) != 0 || found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve the HTTP bind address ", host));
  }
  const int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  const bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
                  bind(fd, found->ai_addr, found->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0;
  freeaddrinfo(found);
  if (!ok) {
    if (fd >= 0) close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot start the HTTP server on ", host, ":", port, " (port in use?)"));
  }
  return fd;
}

int BoundPort(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof(a);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return -1;
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in&>(a).sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6&>(a).sin6_port);
}

// Raises the soft descriptor limit so that `connections` fit beside the rest of the process (the
// hard limit stays the ceiling).
void RaiseDescriptorLimit(int connections) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  const rlim_t want = std::min<rlim_t>(limit.rlim_max, static_cast<rlim_t>(connections) + 1024);
  if (limit.rlim_cur < want) {
    limit.rlim_cur = want;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

std::string ClientKey(const sockaddr_storage& peer) {
  char text[INET6_ADDRSTRLEN] = "";
  if (peer.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(peer).sin_addr, text, sizeof(text));
    return text;
  }
  if (peer.ss_family != AF_INET6) return text;
  in6_addr a = reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr;
  if (IN6_IS_ADDR_V4MAPPED(&a)) {  // ::ffff:a.b.c.d, an IPv4 client of a dual-stack socket
    inet_ntop(AF_INET, &a.s6_addr[12], text, sizeof(text));
    return text;
  }
  std::fill(&a.s6_addr[8], &a.s6_addr[16], 0);  // the interface identifier: the client's to pick
  inet_ntop(AF_INET6, &a, text, sizeof(text));
  return absl::StrCat(text, "/64");
}

bool SendAll(int fd, const char* bytes, size_t size, absl::Duration stall) {
  const int stall_ms = static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(stall)));
  while (size > 0) {
    const ssize_t n = send(fd, bytes, size, MSG_NOSIGNAL);
    if (n > 0) {
      bytes += n;
      size -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      if (poll(&p, 1, stall_ms) <= 0 || (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) {
        return false;
      }
      continue;
    }
    return false;
  }
  return true;
}

// A fixed set of threads running the handler on submitted connections, in order.
class HttpFront::Pool {
 public:
  using Done = std::function<void(std::unique_ptr<HttpConnection>, bool keep)>;
  Pool(int threads, const Handler* handler, Done done) : handler_(handler), done_(std::move(done)) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
  }
  ~Pool() { Stop(); }

  void Submit(std::unique_ptr<HttpConnection> conn, HttpRequestHead head) {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      close(conn->fd);
      return;
    }
    queue_.push_back({std::move(conn), std::move(head)});
  }

  // Cuts the connections being served (their I/O fails at once), drops the queued ones, joins.
  void Stop() {
    std::deque<Job> dropped;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ && threads_.empty()) return;
      stopping_ = true;
      for (int fd : busy_) shutdown(fd, SHUT_RDWR);
      dropped.swap(queue_);
    }
    for (Job& job : dropped) done_(std::move(job.conn), false);
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

 private:
  struct Job {
    std::unique_ptr<HttpConnection> conn;
    HttpRequestHead head;
  };

  void Run() {
    while (true) {
      Job job;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || !queue_.empty();
        };
        mu_.Await(absl::Condition(&ready));
        if (queue_.empty()) return;  // stopping
        job = std::move(queue_.front());
        queue_.pop_front();
        busy_.insert(job.conn->fd);
      }
      bool keep = false;
      try {
        keep = (*handler_)(job.conn.get(), job.head);
      } catch (...) {  // the handler answers its own exceptions; this only keeps the thread alive
      }
      {
        absl::MutexLock lock(&mu_);
        busy_.erase(job.conn->fd);
        keep = keep && !stopping_;
      }
      done_(std::move(job.conn), keep);
    }
  }

  const Handler* const handler_;
  const Done done_;
  absl::Mutex mu_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  std::set<int> busy_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // set before Run starts, joined by Stop
};

// The event loop (see the file comment). Everything but Return and Stop runs on its thread.
class HttpFront::Loop {
 public:
  using Dispatch = std::function<void(std::unique_ptr<HttpConnection>, HttpRequestHead)>;
  Loop(const HttpFrontOptions& options, const Clock* clock, int listen_fd, Evicted evicted)
      : options_(options), clock_(clock), listen_fd_(listen_fd), evicted_(std::move(evicted)) {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    Watch(listen_fd_);
    Watch(wake_);
  }
  ~Loop() { Stop(); }

  void Start(Dispatch dispatch) {
    dispatch_ = std::move(dispatch);
    thread_ = std::thread([this] { Run(); });
  }

  // From a handler thread: the connection is done with (keep = it may carry another request).
  void Return(std::unique_ptr<HttpConnection> conn, bool keep) {
    {
      absl::MutexLock lock(&mu_);
      if (!stopped_) {
        returned_.push_back({std::move(conn), keep});
        Wake();
        return;
      }
    }
    close(conn->fd);
  }

  // Thread-safe: the loop closes its idle kept-alive connections at its next turn.
  void StartDraining() {
    draining_.store(true);
    Wake();
  }

  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    stop_.store(true);
    Wake();
    if (thread_.joinable()) thread_.join();
    for (auto& [fd, conn] : waiting_) close(fd);
    waiting_.clear();
    absl::MutexLock lock(&mu_);
    for (Returned& r : returned_) close(r.conn->fd);
    returned_.clear();
    close(listen_fd_);
    close(wake_);
    close(epoll_);
  }

 private:
  struct Returned {
    std::unique_ptr<HttpConnection> conn;
    bool keep;
  };
  // The connection limit a new connection would go beyond.
  enum class Limit { kNone, kPerClient, kTotal };

  void Wake() {
    const uint64_t one = 1;
    (void)!write(wake_, &one, sizeof(one));
  }

  void Watch(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
  }

  void Run() {
    std::vector<epoll_event> events(256);
    absl::Time next_sweep = clock_->Now() + kSweepEvery;
    while (!stop_.load()) {
      const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()),
                               static_cast<int>(absl::ToInt64Milliseconds(kSweepEvery)));
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == listen_fd_) {
          Accept();
        } else if (fd == wake_) {
          OnWake();
        } else {
          OnReadable(fd);
        }
      }
      const absl::Time now = clock_->Now();
      if (now >= next_sweep) {
        Sweep(now);
        next_sweep = now + kSweepEvery;
      }
    }
  }

  void Accept() {
    while (true) {
      sockaddr_storage peer{};
      socklen_t len = sizeof(peer);
      const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        // Out of descriptors: stop watching the listener until the next sweep (else the loop spins).
        if (errno == EMFILE || errno == ENFILE) PauseAccepting();
        return;
      }
      std::string client = ClientKey(peer);
      const Limit full = Full(client);
      if (full != Limit::kNone && !EvictFor(full, client)) {
        Refuse(fd, full);
      } else {
        Admit(fd, std::move(client));
      }
    }
  }

  // The limit a new connection from `client` would go beyond; the per-client one first (an
  // eviction for it also makes room under the total).
  Limit Full(const std::string& client) const {
    const auto it = per_client_.find(client);
    if (it != per_client_.end() && it->second >= options_.max_connections_per_client) {
      return Limit::kPerClient;
    }
    return open_ >= options_.max_connections ? Limit::kTotal : Limit::kNone;
  }

  // Closes the oldest truly idle connection (the client's own for kPerClient, anyone's for
  // kTotal); false when there is none (every connection is in the middle of a request). A listed
  // connection whose request bytes already wait in the kernel (the loop has not read them yet) is
  // not idle: closing it would reset a request the client has sent. It is read at once (which
  // takes it off the list, or closes it on EOF) and the next oldest examined, at most
  // kEvictionCandidates per new connection, so that an accept never scans thousands.
  bool EvictFor(Limit limit, const std::string& client) {
    for (int examined = 0; examined < kEvictionCandidates; ++examined) {
      const std::optional<int> oldest =
          limit == Limit::kPerClient ? idle_.OldestOf(client) : idle_.Oldest();
      if (!oldest) return false;
      if (HasUnreadBytes(*oldest)) {
        OnReadable(*oldest);
        if (Full(client) == Limit::kNone) return true;  // it was EOF: closed, room made
        continue;
      }
      CloseIdle(*oldest);
      if (evicted_) evicted_(limit == Limit::kPerClient ? "per_client" : "total");
      return true;
    }
    return false;
  }

  // True when bytes (or an EOF) wait to be read on `fd`.
  static bool HasUnreadBytes(int fd) {
    char byte;
    const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
  }

  // Evicts an idle connection: FIN first (shutdown(SHUT_WR)), then close. There is no response
  // to protect, but should a request race in after HasUnreadBytes, the close resets the
  // connection either way; the FIN first lets a client that reads see an orderly end before the
  // reset (RFC 9112 9.6: a client retries an idempotent request on a closed idle connection).
  void CloseIdle(int fd) {
    shutdown(fd, SHUT_WR);
    Close(fd);
  }

  void Refuse(int fd, Limit limit) {
    const std::string refusal = ErrorResponse(
        503, limit == Limit::kTotal ? "too many open HTTP connections (--http_max_connections)"
                                    : "too many open HTTP connections from this client "
                                      "(--http_max_connections_per_client)");
    (void)!send(fd, refusal.data(), refusal.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    // The request the client sent at once (already in the kernel) is read and dropped first: a
    // close with unread input resets the connection, and the client could lose the 503.
    shutdown(fd, SHUT_WR);
    char piece[kReadPiece];
    for (size_t dropped = 0; dropped < kRefusalDrain;) {
      const ssize_t n = recv(fd, piece, sizeof(piece), MSG_DONTWAIT);
      if (n <= 0) break;
      dropped += static_cast<size_t>(n);
    }
    close(fd);
  }

  void Admit(int fd, std::string client) {
    ++open_;
    ++per_client_[client];
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto conn = std::make_unique<HttpConnection>();
    conn->fd = fd;
    conn->client = std::move(client);
    conn->draining = &draining_;
    conn->deadline = clock_->Now() + options_.head_timeout;
    idle_.Add(fd, conn->client);  // nothing of a head yet
    Watch(fd);
    waiting_[fd] = std::move(conn);
  }

  void PauseAccepting() {
    epoll_ctl(epoll_, EPOLL_CTL_DEL, listen_fd_, nullptr);
    accept_paused_ = true;
  }

  void OnWake() {
    uint64_t count;
    (void)!read(wake_, &count, sizeof(count));
    if (draining_.load() && !drained_idle_) CloseIdleForDrain();
    TakeReturned();
  }

  // Once, when draining starts: every connection kept alive between requests (its client has had
  // its answers and reconnects elsewhere). One whose next request already waits unread is read
  // instead (served, with Connection: close). A connection that has not sent a byte yet stays: it
  // was most likely opened for a request on its way (a probe, a scrape, a client's last call),
  // and closing it would drop that request unanswered; it is served with Connection: close, or
  // closed at its head timeout or the end of the drain.
  void CloseIdleForDrain() {
    drained_idle_ = true;
    std::vector<int> idle;
    for (const auto& [fd, conn] : waiting_) {
      if (conn->idle && idle_.Contains(fd)) idle.push_back(fd);
    }
    for (int fd : idle) {
      if (HasUnreadBytes(fd)) {
        OnReadable(fd);
      } else {
        CloseIdle(fd);
      }
    }
  }

  void TakeReturned() {
    std::vector<Returned> returned;
    {
      absl::MutexLock lock(&mu_);
      returned.swap(returned_);
    }
    for (Returned& r : returned) {
      if (!r.keep || draining_.load()) {
        Forget(r.conn->client);
        close(r.conn->fd);
        continue;
      }
      const int fd = r.conn->fd;
      r.conn->idle = r.conn->buffer.empty();
      r.conn->deadline =
          clock_->Now() + (r.conn->idle ? options_.keep_alive_timeout : options_.head_timeout);
      if (r.conn->idle) idle_.Add(fd, r.conn->client);
      Watch(fd);
      waiting_[fd] = std::move(r.conn);
      if (!waiting_[fd]->buffer.empty()) Parse(fd, /*eof=*/false);  // a pipelined request
    }
  }

  // Reads what has arrived; dispatches a complete head, answers a bad one, closes on EOF.
  void OnReadable(int fd) {
    auto it = waiting_.find(fd);
    if (it == waiting_.end()) return;
    HttpConnection& c = *it->second;
    bool eof = false;
    char piece[kReadPiece];
    while (c.lingering || c.buffer.size() <= options_.max_head_bytes) {
      const ssize_t n = recv(fd, piece, sizeof(piece), 0);
      if (n > 0) {
        if (!c.lingering) c.buffer.append(piece, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      eof = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
      break;
    }
    if (c.lingering) {
      if (eof) Close(fd);
      return;
    }
    if (!c.buffer.empty()) idle_.Remove(fd);  // a request has begun: never evicted
    if (c.idle && !c.buffer.empty()) {
      c.idle = false;
      c.deadline = clock_->Now() + options_.head_timeout;
    }
    Parse(fd, eof);
  }

  void Parse(int fd, bool eof) {
    HttpConnection& c = *waiting_[fd];
    HeadParse p = ParseRequestHead(c.buffer, options_.max_head_bytes);
    if (p.kind == HeadParse::kComplete) {
      c.buffer.erase(0, p.head_bytes);
      idle_.Remove(fd);
      epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
      std::unique_ptr<HttpConnection> conn = std::move(waiting_[fd]);
      waiting_.erase(fd);
      dispatch_(std::move(conn), std::move(p.head));
    } else if (p.kind == HeadParse::kError) {
      AnswerAndLinger(&c, p.status, p.message);
    } else if (eof) {
      Close(fd);
    }
  }

  // Sends an error answer (best effort, never blocking), then reads and drops input until the
  // client closes or kLinger passes, so that the answer is not lost to a reset.
  void AnswerAndLinger(HttpConnection* c, int status, absl::string_view message) {
    const std::string answer = ErrorResponse(status, message);
    (void)!send(c->fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    shutdown(c->fd, SHUT_WR);
    idle_.Remove(c->fd);
    c->lingering = true;
    c->buffer.clear();
    c->buffer.shrink_to_fit();
    c->deadline = clock_->Now() + kLinger;
  }

  void Sweep(absl::Time now) {
    if (accept_paused_) {
      accept_paused_ = false;
      Watch(listen_fd_);
    }
    std::vector<int> expired;
    for (const auto& [fd, conn] : waiting_) {
      if (now >= conn->deadline) expired.push_back(fd);
    }
    for (int fd : expired) {
      HttpConnection& c = *waiting_[fd];
      if (!c.lingering && !c.idle && !c.buffer.empty()) {
        AnswerAndLinger(&c, 408, "the request head did not arrive in time (--http_request_timeout_s)");
      } else {
        Close(fd);
      }
    }
  }

  void Close(int fd) {
    auto it = waiting_.find(fd);
    Forget(it->second->client);
    idle_.Remove(fd);
    epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
    waiting_.erase(it);
  }

  void Forget(const std::string& client) {
    --open_;
    auto it = per_client_.find(client);
    if (it != per_client_.end() && --it->second <= 0) per_client_.erase(it);
  }

  const HttpFrontOptions options_;
  const Clock* const clock_;
  const int listen_fd_;
  const Evicted evicted_;
  int epoll_ = -1;
  int wake_ = -1;
  Dispatch dispatch_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> draining_{false};
  // The loop thread's own.
  absl::flat_hash_map<int, std::unique_ptr<HttpConnection>> waiting_;
  absl::flat_hash_map<std::string, int> per_client_;  // open connections by client address
  IdleConnections idle_;  // the evictable ones of waiting_, oldest first
  int open_ = 0;
  bool accept_paused_ = false;
  bool drained_idle_ = false;  // CloseIdleForDrain has run

  absl::Mutex mu_;
  std::vector<Returned> returned_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

absl::StatusOr<std::unique_ptr<HttpFront>> HttpFront::Start(const HttpFrontOptions& options,
                                                            const Clock* clock, Handler handler,
                                                            IsProbe is_probe, Evicted evicted) {
  RaiseDescriptorLimit(options.max_connections);
  absl::StatusOr<int> listen_fd = Listen(options.bind_address, options.port);
  if (!listen_fd.ok()) return listen_fd.status();
  std::unique_ptr<HttpFront> front(new HttpFront());
  front->port_ = BoundPort(*listen_fd);
  front->handler_ = std::move(handler);
  front->loop_ = std::make_unique<Loop>(options, clock, *listen_fd, std::move(evicted));
  Loop* loop = front->loop_.get();
  auto done = [loop](std::unique_ptr<HttpConnection> conn, bool keep) {
    loop->Return(std::move(conn), keep);
  };
  front->probes_ = std::make_unique<Pool>(std::max(1, options.probe_threads), &front->handler_, done);
  front->handlers_ =
      std::make_unique<Pool>(std::max(1, options.handler_threads), &front->handler_, done);
  Pool* probes = front->probes_.get();
  Pool* handlers = front->handlers_.get();
  loop->Start([probes, handlers, is_probe = std::move(is_probe)](
                  std::unique_ptr<HttpConnection> conn, HttpRequestHead head) {
    (is_probe(head) ? probes : handlers)->Submit(std::move(conn), std::move(head));
  });
  return front;
}

HttpFront::~HttpFront() { Stop(); }

void HttpFront::StartDraining() {
  if (loop_) loop_->StartDraining();
}

void HttpFront::Stop() {
  if (loop_) loop_->Stop();  // no new dispatches; idle connections closed
  if (probes_) probes_->Stop();
  if (handlers_) handlers_->Stop();
}

}  // namespace reformer::serving
