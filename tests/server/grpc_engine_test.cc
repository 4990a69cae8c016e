// End to end through gRPC with the real InferenceService and engine on a fixture model: requests
// sent concurrently, with left, right and no padding, give the same per-document outputs as the
// same documents sent one by one without padding (batch invariance end to end, <= 1e-5).
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "engine/model/engine_api.h"
#include "grpcpp/grpcpp.h"
#include "proto/grpc_service.grpc.pb.h"
#include "server/batching/clock.h"
#include "server/grpc/grpc_server.h"
#include "server/health/health_state.h"
#include "server/inference/inference_service.h"
#include "server/metrics/server_metrics.h"

namespace reformer::serving {
namespace {

constexpr char kFixture[] = "f1_mixed_causal_multihash_rightpad";

struct Padded {
  std::vector<int64_t> left;  // per row
  int64_t length = 0;
};

inference::ModelInferRequest MakeRequest(const std::vector<std::vector<int32_t>>& docs,
                                         const std::vector<int64_t>& left, int64_t t) {
  inference::ModelInferRequest req;
  req.set_model_name(kFixture);
  const int64_t b = static_cast<int64_t>(docs.size());
  std::string ids(static_cast<size_t>(b * t * 8), '\0'), mask(static_cast<size_t>(b * t * 8), '\0');
  for (int64_t r = 0; r < b; ++r) {
    for (size_t p = 0; p < docs[r].size(); ++p) {
      const int64_t pos = r * t + left[r] + static_cast<int64_t>(p);
      const int64_t id = docs[r][p], one = 1;
      std::memcpy(ids.data() + pos * 8, &id, 8);
      std::memcpy(mask.data() + pos * 8, &one, 8);
    }
  }
  for (const char* name : {"input_ids", "attention_mask"}) {
    auto* in = req.add_inputs();
    in->set_name(name);
    in->set_datatype("INT64");
    in->add_shape(b);
    in->add_shape(t);
  }
  req.add_raw_input_contents(ids);
  req.add_raw_input_contents(mask);
  req.add_outputs()->set_name("logits");
  req.add_outputs()->set_name("hidden_states");
  return req;
}

std::vector<float> Floats(const inference::ModelInferResponse& resp, int index) {
  const std::string& raw = resp.raw_output_contents(index);
  std::vector<float> v(raw.size() / 4);
  std::memcpy(v.data(), raw.data(), raw.size());
  return v;
}

TEST(GrpcEngineTest, ConcurrentPaddedEqualsOneByOne) {
  const char* src = std::getenv("REFORMER_SOURCE_DIR");
  const std::string dir = std::string(src ? src : ".") + "/tests/fixtures/" + kFixture;
  auto loaded = ReformerModel::Load(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  std::shared_ptr<const ReformerModel> model = *loaded;

  RealClock clock;
  prometheus::Registry registry;
  ServerMetrics metrics(&registry, MetricsOptions{});
  HealthState health;
  InferenceOptions options;
  options.workers = 2;
  options.threads_per_worker = 1;
  options.max_queue_delay = absl::Milliseconds(20);  // let concurrent requests batch together
  auto inference = InferenceService::Create(model, options, &clock, &metrics);
  ASSERT_TRUE(inference.ok()) << inference.status();
  ServedModel served;
  served.name = kFixture;
  served.config = model->config();
  ServiceEnv env;
  env.inference = inference->get();
  env.model = &served;
  env.health = &health;
  env.metrics = &metrics;
  env.clock = &clock;
  env.limits.max_tokens_per_request = 8 * served.context();
  GrpcServerOptions go;
  go.address = "127.0.0.1:0";
  auto server = GrpcServer::Start(go, env, &health);
  ASSERT_TRUE(server.ok()) << server.status();
  health.SetReady();
  auto stub = inference::GRPCInferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*server)->port()), grpc::InsecureChannelCredentials()));

  // Documents of assorted lengths (some not multiples of the chunk length).
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> docs;
  for (int64_t n : {256, 170, 37, 100, 64, 1, 129}) {
    std::vector<int32_t> d(static_cast<size_t>(n));
    for (auto& x : d) x = static_cast<int32_t>(rng() % served.config.vocab_size);
    docs.push_back(d);
  }
  const int64_t v = served.config.vocab_size, e = served.embedding_size();

  // One by one, unpadded.
  std::vector<std::vector<float>> solo_logits, solo_hidden;
  for (const auto& d : docs) {
    grpc::ClientContext ctx;
    inference::ModelInferResponse resp;
    grpc::Status st = stub->ModelInfer(&ctx, MakeRequest({d}, {0}, static_cast<int64_t>(d.size())), &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    solo_logits.push_back(Floats(resp, 0));
    solo_hidden.push_back(Floats(resp, 1));
  }

  // Concurrent batches: each picks 3 documents and a padding style.
  const int kRequests = 12;
  std::vector<std::vector<int>> picks(kRequests);
  std::vector<std::vector<int64_t>> lefts(kRequests);
  std::vector<int64_t> lengths(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    int64_t t = 0;
    for (int k = 0; k < 3; ++k) {
      picks[i].push_back(static_cast<int>((i * 3 + k) % docs.size()));
      t = std::max<int64_t>(t, static_cast<int64_t>(docs[picks[i].back()].size()));
    }
    const int style = i % 3;  // 0 right, 1 left, 2 both sides
    t += style == 2 ? std::min<int64_t>(5, served.context() - t) : 0;  // padding stays within the context
    lengths[i] = t;
    for (int idx : picks[i]) {
      const int64_t pad = t - static_cast<int64_t>(docs[idx].size());
      lefts[i].push_back(style == 0 ? 0 : style == 1 ? pad : pad / 2);
    }
  }
  std::vector<inference::ModelInferResponse> responses(kRequests);
  std::vector<grpc::Status> statuses(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      std::vector<std::vector<int32_t>> batch;
      for (int idx : picks[i]) batch.push_back(docs[idx]);
      grpc::ClientContext ctx;
      statuses[i] = stub->ModelInfer(&ctx, MakeRequest(batch, lefts[i], lengths[i]), &responses[i]);
    });
  }
  for (auto& t : threads) t.join();
  double worst = 0;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    const std::vector<float> logits = Floats(responses[i], 0), hidden = Floats(responses[i], 1);
    for (int r = 0; r < 3; ++r) {
      const int idx = picks[i][r];
      const int64_t n = static_cast<int64_t>(docs[idx].size());
      for (int64_t p = 0; p < n; ++p) {
        const int64_t pos = r * lengths[i] + lefts[i][r] + p;
        for (int64_t k = 0; k < v; ++k) {
          const double d = std::abs(logits[pos * v + k] - solo_logits[idx][p * v + k]);
          worst = std::max(worst, d);
          ASSERT_LE(d, 1e-5) << "request " << i << " row " << r << " pos " << p;
        }
        for (int64_t k = 0; k < e; ++k) {
          ASSERT_LE(std::abs(hidden[pos * e + k] - solo_hidden[idx][p * e + k]), 1e-5);
        }
      }
    }
  }
  std::printf("max |concurrent - one-by-one| logits: %g\n", worst);
  inference->get()->Shutdown();
  (*server)->Shutdown();
}

}  // namespace
}  // namespace reformer::serving
