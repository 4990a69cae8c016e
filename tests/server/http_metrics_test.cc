// HTTP endpoints (the HTTP front on localhost:0), the metric set's exposition and the health state machine.
// (main's configuration: tests/server/server_config_test.cc.)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/batching/clock.h"
#include "server/health/health_state.h"
#include "server/http/http_server.h"
#include "server/metrics/server_metrics.h"

namespace reformer::serving {
namespace {

using ::testing::HasSubstr;

struct HttpReply {
  int status = 0;
  std::string body;
};

// Minimal HTTP/1.1 GET over loopback.
HttpReply Get(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  HttpReply reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return reply;
  }
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return reply;
  }
  std::string all;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) all.append(buf, static_cast<size_t>(n));
  close(fd);
  if (all.size() > 12) reply.status = std::atoi(all.substr(9, 3).c_str());
  size_t body = all.find("\r\n\r\n");
  if (body != std::string::npos) reply.body = all.substr(body + 4);
  return reply;
}


int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

// Reads until `count` responses' heads are in, or the peer closes.
std::string ReadResponses(int fd, int count) {
  std::string all;
  char buf[4096];
  size_t at = 0;
  int seen = 0;
  while (seen < count) {
    const size_t head = all.find("HTTP/1.1 ", at);
    if (head != std::string::npos && all.find("\r\n\r\n", head) != std::string::npos) {
      ++seen;
      at = head + 1;
      continue;
    }
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
  }
  return all;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_.name = "tiny";
    model_.config.vocab_size = 64;
    model_.config.hidden_size = 8;
    metrics_ = std::make_unique<ServerMetrics>(&registry_, MetricsOptions{});
    HttpOptions o;
    o.port = 0;
    o.bind_address = "127.0.0.1";
    o.num_threads = 2;
    ServiceEnv env;
    env.model = &model_;
    env.health = &health_;
    env.metrics = metrics_.get();
    env.clock = &clock_;
    env.limits.max_tokens_per_request = 256;
    auto server = HttpServer::Start(o, &registry_, env);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
  }
  RealClock clock_;
  ServedModel model_;
  HealthState health_;
  prometheus::Registry registry_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, ProbesFollowTheHealthState) {
  const int port = server_->port();
  EXPECT_EQ(Get(port, "/healthz").status, 200);
  EXPECT_EQ(Get(port, "/v2/health/live").status, 200);
  HttpReply r = Get(port, "/readyz");
  EXPECT_EQ(r.status, 503);
  EXPECT_THAT(r.body, HasSubstr("STARTING"));
  EXPECT_EQ(Get(port, "/v2/health/ready").status, 503);
  EXPECT_EQ(Get(port, "/v2/models/tiny/ready").status, 503);
  health_.SetReady();
  EXPECT_EQ(Get(port, "/readyz").status, 200);
  EXPECT_EQ(Get(port, "/v2/health/ready").status, 200);
  EXPECT_EQ(Get(port, "/v2/models/tiny/ready").status, 200);
  health_.StartDraining();
  r = Get(port, "/readyz");
  EXPECT_EQ(r.status, 503);
  EXPECT_THAT(r.body, HasSubstr("DRAINING"));
  EXPECT_EQ(Get(port, "/healthz").status, 200);
}

TEST_F(HttpServerTest, KServeRestMetadata) {
  const int port = server_->port();
  HttpReply r = Get(port, "/v2");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("\"name\":\"reformer-server\""));
  r = Get(port, "/v2/models/tiny");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("\"name\":\"logits\""));
  EXPECT_THAT(r.body, HasSubstr("[-1,-1,64]"));
  EXPECT_THAT(r.body, HasSubstr("[-1,16]"));
  EXPECT_EQ(Get(port, "/v2/models/tiny/versions/1").status, 200);
  EXPECT_EQ(Get(port, "/v2/models/other").status, 404);
  EXPECT_EQ(Get(port, "/v2/models/other/ready").status, 404);
  EXPECT_EQ(Get(port, "/nothing").status, 404);
  EXPECT_EQ(server_->Handle("POST", "/v2").status, 405);
  EXPECT_EQ(server_->Handle("GET", "/v2/models/tiny/infer").status, 405);
  // The same extensions and properties as gRPC ServerMetadata / ModelMetadata.
  EXPECT_THAT(Get(port, "/v2").body, HasSubstr("\"binary_tensor_data\""));
  EXPECT_THAT(Get(port, "/v2/models/tiny").body, HasSubstr("\"max_tokens_per_request\":\"256\""));
  // Triton's configuration and statistics documents.
  r = Get(port, "/v2/models/tiny/config");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("\"name\":\"input_ids\",\"data_type\":\"TYPE_INT64\",\"dims\":[-1]"));
  EXPECT_THAT(r.body, HasSubstr("\"name\":\"logits\",\"data_type\":\"TYPE_FP32\",\"dims\":[-1,64]"));
  r = Get(port, "/v2/models/tiny/versions/1/stats");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr("\"model_stats\":[{\"name\":\"tiny\",\"version\":\"1\""));
  EXPECT_EQ(Get(port, "/v2/models/stats").status, 200);
  EXPECT_EQ(Get(port, "/v2/models/other/config").status, 404);
  EXPECT_EQ(Get(port, "/v2/models/tiny/versions/2/stats").status, 404);
}

// The exposition carries exactly the metric names, in base units, with our buckets.
TEST_F(HttpServerTest, MetricsExposition) {
  metrics_->RpcStarted("unary", "inference.GRPCInferenceService", "ModelInfer");
  metrics_->RpcHandled("unary", "inference.GRPCInferenceService", "ModelInfer",
                       absl::StatusCode::kUnavailable, 0.02);
  metrics_->RequestFinished("ModelInfer", "anonymous", absl::StatusCode::kOk, 0.3, 700, 2, 1000);
  metrics_->OnRequestDone("ModelInfer", absl::OkStatus(), 700, 0.01, 0.25);
  metrics_->OnBatch(3, 1500);
  metrics_->OnBatchComputed(3, 0.2);
  metrics_->OnQueueChanged(4, 2048);
  metrics_->OnInflightChanged(5);
  metrics_->OnRejected("queue_full");
  metrics_->OnWorkspaceBytes(1, 1 << 20);
  metrics_->OnMemoryBudget(size_t{4} << 30);
  metrics_->OnMemoryReserved("output", 3000);
  HttpReply r = Get(server_->port(), "/metrics");
  ASSERT_EQ(r.status, 200);
  const std::string& t = r.body;
  for (const char* name :
       {"reformer_requests_total", "reformer_request_duration_seconds", "reformer_queue_duration_seconds",
        "reformer_batch_size", "reformer_batch_tokens", "reformer_input_tokens", "reformer_queue_requests",
        "reformer_queue_tokens", "reformer_inflight_requests", "reformer_rejected_total",
        "reformer_workspace_bytes", "reformer_tokens_processed_total", "reformer_build_info",
        "grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds"}) {
    EXPECT_THAT(t, HasSubstr(std::string("# TYPE ") + name + " ")) << name;
  }
  EXPECT_THAT(t, HasSubstr("reformer_requests_total{code=\"OK\",method=\"ModelInfer\",tenant=\"anonymous\"} 1"));
  EXPECT_THAT(t, HasSubstr("reformer_request_duration_seconds_bucket{method=\"ModelInfer\",le=\"0.5\"} 1"));
  EXPECT_THAT(t, HasSubstr("reformer_request_duration_seconds_bucket{method=\"ModelInfer\",le=\"0.25\"} 0"));
  EXPECT_THAT(t, HasSubstr("reformer_batch_size_bucket{le=\"4\"} 1"));
  EXPECT_THAT(t, HasSubstr("reformer_batch_tokens_bucket{le=\"1024\"} 0"));
  EXPECT_THAT(t, HasSubstr("reformer_batch_tokens_bucket{le=\"2048\"} 1"));
  EXPECT_THAT(t, HasSubstr("reformer_queue_tokens 2048"));
  EXPECT_THAT(t, HasSubstr("reformer_inflight_requests 5"));
  EXPECT_THAT(t, HasSubstr("reformer_rejected_total{reason=\"queue_full\"} 1"));
  EXPECT_THAT(t, HasSubstr("reformer_rejected_total{reason=\"draining\"} 0"));
  // Generate's per-connection cap (--generate_max_streams_per_connection) from start-up too.
  EXPECT_THAT(t, HasSubstr("reformer_rejected_total{reason=\"connection_streams\"} 0"));
  EXPECT_THAT(t, HasSubstr("reformer_workspace_bytes{worker=\"1\"} 1048576"));
  EXPECT_THAT(t, HasSubstr("reformer_memory_budget_bytes 4294967296"));
  EXPECT_THAT(t, HasSubstr("reformer_memory_reserved_bytes{kind=\"output\"} 3000"));
  EXPECT_THAT(t, HasSubstr("reformer_memory_reserved_bytes{kind=\"working\"} 0"));
  EXPECT_THAT(t, HasSubstr("reformer_tokens_processed_total 700"));
  EXPECT_THAT(t, HasSubstr("reformer_build_info{model=\"default\",version=\"0.1.0\"} 1"));
  EXPECT_THAT(t, HasSubstr("grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"ModelInfer\","
                           "grpc_service=\"inference.GRPCInferenceService\",grpc_type=\"unary\"} 1"));
  // Snapshot (ModelStatistics) reads the same calls.
  ModelStatsSnapshot s = metrics_->Snapshot();
  EXPECT_EQ(s.inference_count, 2u);
  EXPECT_EQ(s.execution_count, 1u);
  EXPECT_EQ(s.success.count, 1u);
  EXPECT_EQ(s.success.ns, 300'000'000u);
  EXPECT_EQ(s.compute.ns, 250'000'000u);
  EXPECT_EQ(s.batch_sizes.at(3).count, 1u);
  EXPECT_EQ(s.batch_sizes.at(3).ns, 200'000'000u);  // the batch's engine time, not a placeholder
}

TEST(MetricsTest, BucketsCoverTheirRange) {
  auto b = ServerMetrics::PowerOfTwoBuckets(16, 4096);
  EXPECT_EQ(b.front(), 16);
  EXPECT_EQ(b.back(), 4096);
  b = ServerMetrics::PowerOfTwoBuckets(16, 5000);
  EXPECT_EQ(b.back(), 8192);
  auto s = ServerMetrics::SecondsBuckets();
  EXPECT_EQ(s.front(), 0.001);
  EXPECT_GE(s.back(), 300);
  EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
}

TEST(HealthStateTest, MovesForwardOnlyAndNotifies) {
  HealthState h;
  std::vector<ServingState> seen;
  h.AddListener([&](ServingState s) { seen.push_back(s); });
  EXPECT_FALSE(h.ready());
  EXPECT_TRUE(h.live());
  h.SetReady();
  EXPECT_TRUE(h.ready());
  h.SetReady();
  h.StartDraining();
  EXPECT_TRUE(h.draining());
  EXPECT_FALSE(h.ready());
  h.SetReady();  // ignored once draining
  h.StartDraining();
  EXPECT_TRUE(h.draining());
  EXPECT_EQ(seen, (std::vector<ServingState>{ServingState::kReady, ServingState::kDraining}));
}

// Idle connections and half-sent heads wait in the event loop, not on the 2 handler threads (nor
// the probe threads): probes still answer; a kept-alive connection serves pipelined requests in
// order; stopping the server with all of them open closes them.
TEST_F(HttpServerTest, FrontHoldsIdleConnectionsOffThreads) {
  const int port = server_->port();
  std::vector<int> held;
  for (int i = 0; i < 200; ++i) held.push_back(Connect(port));
  for (int i = 0; i < 50; ++i) {
    held.push_back(Connect(port));
    const std::string half = "GET /readyz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    ASSERT_EQ(write(held.back(), half.data(), half.size()), static_cast<ssize_t>(half.size()));
  }
  health_.SetReady();
  EXPECT_EQ(Get(port, "/readyz").status, 200);
  EXPECT_EQ(Get(port, "/metrics").status, 200);
  const int fd = Connect(port);
  const std::string two =
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(write(fd, two.data(), two.size()), static_cast<ssize_t>(two.size()));
  const std::string replies = ReadResponses(fd, 2);
  const size_t first = replies.find("HTTP/1.1 200 OK");
  const size_t second = replies.find("HTTP/1.1 404 Not Found");
  ASSERT_NE(first, std::string::npos) << replies;
  ASSERT_NE(second, std::string::npos) << replies;
  EXPECT_LT(first, second);
  held.push_back(fd);
  server_.reset();  // closes every connection it holds
  for (int h : held) {  // each reads to its end (what is left of an answer, then EOF or reset)
    timeval limit{10, 0};
    setsockopt(h, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    char buf[4096];
    ssize_t n;
    while ((n = read(h, buf, sizeof(buf))) > 0) {
    }
    EXPECT_TRUE(n == 0 || errno == ECONNRESET) << "still open: " << std::strerror(errno);
    close(h);
  }
}

}  // namespace
}  // namespace reformer::serving
