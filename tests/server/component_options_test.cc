// server/config/component_options.h: the configuration tree becomes the components' option structs,
// and a default ServerConfig gives exactly the components' own defaults (each default has one value,
// wherever it is spelled), while the flags that are set reach their component.
#include "server/config/component_options.h"

#include "gtest/gtest.h"

namespace reformer::serving {
namespace {

TEST(ComponentOptionsTest, DefaultsAgreeWithTheComponents) {
  const ServerConfig c;
  const InferenceOptions i = ToInferenceOptions(c), id;
  EXPECT_EQ(i.workspace_budget_bytes, id.workspace_budget_bytes);
  EXPECT_EQ(i.max_batch_size, id.max_batch_size);
  EXPECT_EQ(i.long_batch_tokens, id.long_batch_tokens);
  EXPECT_EQ(i.batch_fill_tokens, id.batch_fill_tokens);
  EXPECT_EQ(i.length_ratio, id.length_ratio);
  EXPECT_EQ(i.memory_budget_bytes, id.memory_budget_bytes);
  EXPECT_EQ(i.max_queue_delay, id.max_queue_delay);
  EXPECT_EQ(i.max_queue_requests, id.max_queue_requests);
  EXPECT_EQ(i.max_queue_tokens, id.max_queue_tokens);
  EXPECT_EQ(i.priority_aging, id.priority_aging);
  EXPECT_EQ(i.max_response_bytes, id.max_response_bytes);
  // (workers, threads, max_batch_tokens, max_tokens_per_request: automatic, see ResolveServerConfig.)

  const GenerationOptions n = ToGenerationOptions(c), nd;
  EXPECT_EQ(n.workers, nd.workers);
  EXPECT_EQ(n.workspace_budget_bytes, nd.workspace_budget_bytes);
  EXPECT_EQ(n.max_active, nd.max_active);
  EXPECT_EQ(n.max_prefill_tokens, nd.max_prefill_tokens);
  EXPECT_EQ(n.max_waiting, nd.max_waiting);
  EXPECT_EQ(n.max_unsent, nd.max_unsent);
  EXPECT_EQ(n.stalled_timeout, nd.stalled_timeout);
  EXPECT_EQ(n.priority_aging, nd.priority_aging);
  // (threads_per_worker: automatic, see ResolveServerConfig.)

  const GrpcServerOptions g = ToGrpcServerOptions(c), gd;
  EXPECT_EQ(g.address, gd.address);
  EXPECT_EQ(g.keepalive_time, gd.keepalive_time);
  EXPECT_EQ(g.keepalive_timeout, gd.keepalive_timeout);
  EXPECT_EQ(g.min_client_ping_interval, gd.min_client_ping_interval);
  EXPECT_EQ(g.max_connection_age, gd.max_connection_age);
  EXPECT_EQ(g.max_connection_age_grace, gd.max_connection_age_grace);
  EXPECT_EQ(g.max_connection_idle, gd.max_connection_idle);
  EXPECT_EQ(g.resource_quota_bytes, gd.resource_quota_bytes);
  EXPECT_EQ(g.resource_quota_threads, gd.resource_quota_threads);
  EXPECT_EQ(g.max_concurrent_streams, gd.max_concurrent_streams);
  EXPECT_EQ(g.stream.max_unsent_responses, gd.stream.max_unsent_responses);
  EXPECT_EQ(g.stream.stalled_timeout, gd.stream.stalled_timeout);
  // (stream.max_unsent_bytes: automatic, see ResolveServerConfig.)
  EXPECT_EQ(ToServiceLimits(c).max_generate_streams_per_connection, ServiceLimits().max_generate_streams_per_connection);

  const HttpOptions h = ToHttpOptions(c), hd;
  EXPECT_EQ(h.port, hd.port);
  EXPECT_EQ(h.bind_address, hd.bind_address);
  EXPECT_EQ(h.num_threads, hd.num_threads);
  EXPECT_EQ(h.request_timeout, hd.request_timeout);
  EXPECT_EQ(h.keep_alive_timeout, hd.keep_alive_timeout);
  EXPECT_EQ(h.infer_threads, hd.infer_threads);
  EXPECT_EQ(h.rest.max_body_bytes, hd.rest.max_body_bytes);
  EXPECT_EQ(h.rest.body_timeout, hd.rest.body_timeout);
}

TEST(ComponentOptionsTest, FlagsReachTheirComponent) {
  ServerConfig c;
  std::vector<std::pair<std::string, std::string>> env;
  ASSERT_TRUE(ParseServerCommandLine({"--bind_address=127.0.0.1", "--grpc_port=9001", "--http_port=9000",
                                      "--max_concurrent_streams=8", "--http_request_timeout_s=1.5",
                                      "--priority_aging_s=2", "--stream_max_unsent_bytes=1024",
                                      "--max_response_bytes=4096", "--model_dir=m",
                                      "--generate_max_unsent=4"},
                                     env, &c)
                  .ok());
  ASSERT_TRUE(ResolveServerConfig({4096, 2}, &c).ok());
  const GrpcServerOptions g = ToGrpcServerOptions(c);
  EXPECT_EQ(g.address, "127.0.0.1:9001");
  EXPECT_EQ(g.max_concurrent_streams, 8);
  EXPECT_EQ(g.stream.max_unsent_bytes, 1024);
  EXPECT_EQ(g.max_send_message_bytes, 4096 + (1 << 20));
  const HttpOptions h = ToHttpOptions(c);
  EXPECT_EQ(h.bind_address, "127.0.0.1");
  EXPECT_EQ(h.port, 9000);
  EXPECT_EQ(h.request_timeout, absl::Milliseconds(1500));
  EXPECT_EQ(h.infer_threads, 96);  // 3/4 of the default 128 threads
  EXPECT_EQ(h.rest.max_body_bytes, g.max_receive_message_bytes);
  EXPECT_EQ(h.rest.max_body_bytes, DefaultRestBodyBytes(ToServiceLimits(c)));
  const InferenceOptions i = ToInferenceOptions(c);
  EXPECT_EQ(i.priority_aging, absl::Seconds(2));
  EXPECT_EQ(i.workers, 2);
  EXPECT_EQ(i.max_batch_tokens, 65536);
  EXPECT_EQ(i.max_tokens_per_request, 8 * 4096);
  EXPECT_EQ(ToServiceLimits(c).max_response_bytes, 4096);
  EXPECT_EQ(ToGenerationOptions(c).threads_per_worker, 2);  // the CPUs of the one generation worker
  EXPECT_TRUE(i.Validate().ok());
  EXPECT_EQ(ToGenerationOptions(c).max_unsent, 4);
  EXPECT_TRUE(ToGenerationOptions(c).Validate().ok());
}

}  // namespace
}  // namespace reformer::serving
