// HttpFront: the HTTP/1.1 front of the HTTP port (our own; it replaced civetweb, which parked one
// thread per connection from accept to close, so ~200 idle connections starved probes and /metrics).
//
// One event-loop thread (epoll) owns the listening socket and every connection while it waits for
// a request head or idles between kept-alive requests: such a connection costs a descriptor and a
// buffer, never a thread. The loop reads heads (ParseRequestHead: strict, at most max_head_bytes),
// answers a malformed one itself (its status, Connection: close), and enforces the limits:
//   - max_connections open at once, max_connections_per_client from one client (an IPv4 address,
//     an IPv6 /64: ClientKey). A new
//     connection beyond either first evicts the oldest idle connection (kept alive between
//     requests, or open without a byte of a head yet): the client's own at the per-client limit,
//     anyone's at the total one. A listed one whose request already waits unread in the kernel is
//     not idle: it is read at once and the next oldest examined (a few per new connection, never a
//     scan). It is closed (shutdown(SHUT_WR), then close; nothing sent: RFC 9112 9.6 lets a server
//     close an idle connection) and counted (`evicted`), so that a client holding idle connections
//     cannot lock out its own probes behind one NAT address, nor anyone else. Connections in the
//     middle of a request (part of a head, in a handler, lingering after an error) are never
//     evicted; when none can be, the new one gets 503 and close (its waiting request read and
//     dropped first, so that the 503 is not lost to a reset). The choice is O(1)
//     (IdleConnections, idle_connections.h);
//   - head_timeout for a whole head to arrive once its first byte has (and for a fresh connection
//     to send anything): 408 and close;
//   - keep_alive_timeout for an idle kept-alive connection: closed.
// Draining (StartDraining, on SIGTERM): connections kept alive between requests (one whose next
// request waits unread is served instead) are closed at once — not those that have sent nothing
// yet, whose request may be on its way (served, or closed at the head timeout) — and a connection is
// closed after the request it is serving (the handler says Connection: close; see
// HttpExchange::CloseAfterResponse), so that clients reconnect to another replica. A request
// body still arriving is not waited for: 503 and close at once (HttpExchange::ReadBody; the
// services refuse new work while draining, so letting it finish would only delay the same 503).
// New connections are still accepted and served (readiness probes must see the 503).
// A complete head hands the connection, with any bytes already read beyond the head (the body's
// start, pipelined requests), to a pool: `probe_threads` threads for requests `is_probe` picks
// (bodiless GET/HEAD: probes, /metrics, metadata), `handler_threads` for the rest, so that probes
// never queue behind uploads. The handler runs blocking on the descriptor (poll with deadlines,
// HttpExchange) and says whether the connection may carry another request; if so it goes back to
// the loop (with its pipelined bytes), else the loop closes it.
//
// Ownership: a connection belongs to exactly one thread at a time (the loop, or the handler thread
// serving it); it moves through the pools' queues and the loop's return queue under their mutexes.
// Connection counts are the loop's alone. Time decisions use the injected Clock.
//
// Stop (also on destruction): the loop closes the listener and every connection it holds at once;
// connections in handlers are shut down (their reads and writes fail at once) and the pools joined.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/batching/clock.h"
#include "server/http/http_request_head.h"

namespace reformer::serving {

// A client connection. The thread that holds it owns it.
struct HttpConnection {
  int fd = -1;
  std::string client;  // the per-client limit's key (ClientKey)
  std::string buffer;  // received, not consumed yet (the start of a head or body)
  absl::Time deadline = absl::InfiniteFuture();  // while in the loop: when it is given up
  bool idle = false;       // kept alive, no byte of the next request yet
  bool lingering = false;  // answered with an error: draining input until the peer closes
  // Set by the front once it drains (SIGTERM); a body still arriving then is not waited for
  // (HttpExchange::ReadBody: UNAVAILABLE, the handler answers 503 and closes). Outlives handlers.
  const std::atomic<bool>* draining = nullptr;
};

struct HttpFrontOptions {
  std::string bind_address;  // empty = all interfaces
  int port = 0;              // 0 = any free port
  int handler_threads = 128;
  int probe_threads = 4;
  int max_connections = 4096;
  int max_connections_per_client = 256;
  size_t max_head_bytes = 16 << 10;
  absl::Duration head_timeout = absl::Seconds(5);
  absl::Duration keep_alive_timeout = absl::Seconds(2);
};

class HttpFront {
 public:
  // Serves one request whose head is complete; true when the connection may carry the next one.
  using Handler = std::function<bool(HttpConnection*, const HttpRequestHead&)>;
  using IsProbe = std::function<bool(const HttpRequestHead&)>;
  // Called on the loop's thread for each evicted connection with the limit that evicted it:
  // "per_client" or "total". Must not block.
  using Evicted = std::function<void(const char* limit)>;

  // Borrows `clock`. Binds and starts the loop and the pools.
  static absl::StatusOr<std::unique_ptr<HttpFront>> Start(const HttpFrontOptions& options,
                                                          const Clock* clock, Handler handler,
                                                          IsProbe is_probe, Evicted evicted = {});
  ~HttpFront();
  HttpFront(const HttpFront&) = delete;
  HttpFront& operator=(const HttpFront&) = delete;

  int port() const { return port_; }
  // Closes the idle connections now and every other one after its current request
  // (see the file comment). Thread-safe, non-blocking, idempotent.
  void StartDraining();
  // Idempotent; see the file comment.
  void Stop();

 private:
  class Pool;
  class Loop;
  HttpFront() = default;

  int port_ = 0;
  Handler handler_;
  std::unique_ptr<Pool> probes_;
  std::unique_ptr<Pool> handlers_;
  std::unique_ptr<Loop> loop_;
};

// The per-client limit's key of a peer: an IPv4 address as text (also when it reaches a dual-stack
// socket as ::ffff:a.b.c.d); an IPv6 address by its /64 prefix ("2001:db8:1:2::/64"), since a
// single host or site usually holds a whole /64 and could otherwise take a new address per
// connection to escape the limit.
std::string ClientKey(const sockaddr_storage& peer);

// Writes all of `bytes` to a non-blocking socket, waiting at most `stall` for each bit of progress.
bool SendAll(int fd, const char* bytes, size_t size, absl::Duration stall);

}  // namespace reformer::serving
