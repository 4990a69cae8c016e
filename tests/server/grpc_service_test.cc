// In-process gRPC tests (localhost:0) of the KServe v2 and reformer.v1 services on a fake
// InferenceService: every RPC, every documented error code, deadlines, cancellation, draining,
// health, streaming, statistics and per-row padding invariance of the RPC layer.
#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "grpcpp/impl/codegen/client_unary_call.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/grpc/generate_reactor.h"
#include "tests/server/grpc_test_util.h"

namespace reformer::serving::testing {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using ::testing::HasSubstr;

// A [B,T] batch with a mask; rows given as (left pad, tokens, right pad).
struct Row {
  int64_t left = 0;
  std::vector<int32_t> tokens;
  int64_t right = 0;
};

ModelInferRequest IdsRequest(const std::vector<Row>& rows, bool raw = true,
                             const std::string& id_dtype = "INT64",
                             const std::string& mask_dtype = "INT64", bool with_mask = true) {
  ModelInferRequest req;
  req.set_model_name("fake");
  req.set_id("req-7");
  const int64_t b = static_cast<int64_t>(rows.size());
  const int64_t t = rows.empty() ? 0
                                 : rows[0].left + static_cast<int64_t>(rows[0].tokens.size()) +
                                       rows[0].right;
  std::vector<int64_t> ids, mask;
  for (const Row& r : rows) {
    for (int64_t i = 0; i < r.left; ++i) ids.push_back(5), mask.push_back(0);
    for (int32_t tok : r.tokens) ids.push_back(tok), mask.push_back(1);
    for (int64_t i = 0; i < r.right; ++i) ids.push_back(0), mask.push_back(0);
  }
  auto* in_ids = req.add_inputs();
  in_ids->set_name("input_ids");
  in_ids->set_datatype(id_dtype);
  in_ids->add_shape(b);
  in_ids->add_shape(t);
  inference::ModelInferRequest::InferInputTensor* in_mask = nullptr;
  if (with_mask) {
    in_mask = req.add_inputs();
    in_mask->set_name("attention_mask");
    in_mask->set_datatype(mask_dtype);
    in_mask->add_shape(b);
    in_mask->add_shape(t);
  }
  auto encode = [&](const std::vector<int64_t>& v, const std::string& dtype) {
    std::string out;
    for (int64_t x : v) {
      if (dtype == "INT64") {
        out.append(reinterpret_cast<const char*>(&x), 8);
      } else if (dtype == "INT32") {
        int32_t y = static_cast<int32_t>(x);
        out.append(reinterpret_cast<const char*>(&y), 4);
      } else {
        out.push_back(static_cast<char>(x != 0));
      }
    }
    return out;
  };
  if (raw) {
    req.add_raw_input_contents(encode(ids, id_dtype));
    if (with_mask) req.add_raw_input_contents(encode(mask, mask_dtype));
  } else {
    for (int64_t x : ids) {
      if (id_dtype == "INT64") in_ids->mutable_contents()->add_int64_contents(x);
      else in_ids->mutable_contents()->add_int_contents(static_cast<int32_t>(x));
    }
    if (with_mask) {
      for (int64_t x : mask) {
        if (mask_dtype == "INT64") in_mask->mutable_contents()->add_int64_contents(x);
        else if (mask_dtype == "INT32") in_mask->mutable_contents()->add_int_contents(static_cast<int32_t>(x));
        else in_mask->mutable_contents()->add_bool_contents(x != 0);
      }
    }
  }
  return req;
}

ModelInferRequest TextRequest(const std::vector<std::string>& texts) {
  ModelInferRequest req;
  req.set_model_name("fake");
  auto* in = req.add_inputs();
  in->set_name("text");
  in->set_datatype("BYTES");
  in->add_shape(static_cast<int64_t>(texts.size()));
  std::string raw;
  for (const std::string& s : texts) {
    uint32_t n = static_cast<uint32_t>(s.size());
    raw.append(reinterpret_cast<const char*>(&n), 4);
    raw += s;
  }
  req.add_raw_input_contents(raw);
  return req;
}

template <typename T>
std::vector<T> Output(const ModelInferResponse& resp, const std::string& name,
                      std::vector<int64_t>* shape = nullptr) {
  for (int i = 0; i < resp.outputs_size(); ++i) {
    if (resp.outputs(i).name() != name) continue;
    const std::string& raw = resp.raw_output_contents(i);
    std::vector<T> v(raw.size() / sizeof(T));
    std::memcpy(v.data(), raw.data(), raw.size());
    if (shape) shape->assign(resp.outputs(i).shape().begin(), resp.outputs(i).shape().end());
    return v;
  }
  ADD_FAILURE() << "no output " << name;
  return {};
}

grpc::Status Infer(TestServer& s, const ModelInferRequest& req, ModelInferResponse* resp,
                   absl::Duration deadline = absl::Seconds(30)) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(deadline));
  return s.kserve().ModelInfer(&ctx, req, resp);
}

void ExpectError(TestServer& s, const ModelInferRequest& req, grpc::StatusCode code,
                 const std::vector<std::string>& fragments) {
  ModelInferResponse resp;
  grpc::Status st = Infer(s, req, &resp);
  EXPECT_EQ(st.error_code(), code) << st.error_message();
  for (const std::string& f : fragments) EXPECT_THAT(st.error_message(), HasSubstr(f));
}

std::vector<int32_t> Tokens(int n, int seed) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back((i * 7 + seed * 13 + 1) % 40);
  return t;
}

// --- Metadata RPCs -------------------------------------------------------------------------------

TEST(KServeTest, LiveReadyAndMetadata) {
  TestServer s;
  {
    grpc::ClientContext ctx;
    inference::ServerLiveResponse r;
    ASSERT_TRUE(s.kserve().ServerLive(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.live());
  }
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse r;
    ASSERT_TRUE(s.kserve().ServerReady(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.ready());
  }
  {
    grpc::ClientContext ctx;
    inference::ModelReadyRequest q;
    q.set_name("fake");
    inference::ModelReadyResponse r;
    ASSERT_TRUE(s.kserve().ModelReady(&ctx, q, &r).ok());
    EXPECT_TRUE(r.ready());
  }
  {
    grpc::ClientContext ctx;
    inference::ModelReadyRequest q;
    q.set_name("other");
    inference::ModelReadyResponse r;
    EXPECT_EQ(s.kserve().ModelReady(&ctx, q, &r).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    inference::ServerMetadataResponse r;
    ASSERT_TRUE(s.kserve().ServerMetadata(&ctx, {}, &r).ok());
    EXPECT_EQ(r.name(), "reformer-server");
    EXPECT_THAT(r.extensions(), ::testing::Contains("statistics"));
  }
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest q;
    q.set_name("fake");
    inference::ModelMetadataResponse r;
    ASSERT_TRUE(s.kserve().ModelMetadata(&ctx, q, &r).ok());
    EXPECT_EQ(r.versions(0), "1");
    ASSERT_GE(r.outputs_size(), 4);
    EXPECT_EQ(r.outputs(0).name(), "logits");
    EXPECT_THAT(r.outputs(0).shape(), ::testing::ElementsAre(-1, -1, 40));
    EXPECT_EQ(r.properties().at("max_tokens_per_document"), "64");
  }
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest q;
    q.set_name("fake");
    q.set_version("2");
    inference::ModelMetadataResponse r;
    EXPECT_EQ(s.kserve().ModelMetadata(&ctx, q, &r).error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

TEST(KServeTest, ModelConfigDescribesTensors) {
  TestServer s;
  grpc::ClientContext ctx;
  inference::ModelConfigRequest q;
  q.set_name("fake");
  inference::ModelConfigResponse r;
  ASSERT_TRUE(s.kserve().ModelConfig(&ctx, q, &r).ok());
  const inference::ModelConfig& c = r.config();
  EXPECT_EQ(c.name(), "fake");
  EXPECT_EQ(c.max_batch_size(), 16);
  EXPECT_EQ(c.backend(), "reformer");
  ASSERT_EQ(c.input_size(), 3);
  EXPECT_EQ(c.input(0).name(), "input_ids");
  EXPECT_EQ(c.input(0).data_type(), inference::TYPE_INT64);
  EXPECT_THAT(c.input(0).dims(), ::testing::ElementsAre(-1));
  EXPECT_EQ(c.input(2).data_type(), inference::TYPE_STRING);
  ASSERT_GE(c.output_size(), 4);
  EXPECT_EQ(c.output(0).name(), "logits");
  EXPECT_THAT(c.output(0).dims(), ::testing::ElementsAre(-1, 40));
  EXPECT_THAT(c.output(3).dims(), ::testing::ElementsAre(6));
  grpc::ClientContext ctx2;
  q.set_name("other");
  EXPECT_EQ(s.kserve().ModelConfig(&ctx2, q, &r).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(KServeTest, NotReadyWhileStarting) {
  TestServerOptions o;
  o.ready = false;
  TestServer s(o);
  grpc::ClientContext ctx;
  inference::ServerReadyResponse r;
  ASSERT_TRUE(s.kserve().ServerReady(&ctx, {}, &r).ok());
  EXPECT_FALSE(r.ready());
  ExpectError(s, IdsRequest({{0, Tokens(4, 1), 0}}), grpc::StatusCode::UNAVAILABLE, {"starting"});
}

// --- ModelInfer ----------------------------------------------------------------------------------

TEST(KServeTest, InferRightPaddedRawInt64) {
  TestServer s;
  ModelInferRequest req = IdsRequest({{0, Tokens(6, 1), 0}, {0, Tokens(4, 2), 2}});
  ModelInferResponse resp;
  ASSERT_TRUE(Infer(s, req, &resp).ok());
  EXPECT_EQ(resp.id(), "req-7");
  EXPECT_EQ(resp.model_name(), "fake");
  EXPECT_EQ(resp.model_version(), "1");
  EXPECT_EQ(resp.parameters().at("tokens").int64_param(), 10);
  EXPECT_TRUE(resp.parameters().contains("queue_ms"));
  EXPECT_TRUE(resp.parameters().contains("compute_ms"));
  EXPECT_EQ(resp.outputs_size(), 4);
  EXPECT_EQ(resp.raw_output_contents_size(), 4);
  std::vector<int64_t> shape;
  std::vector<float> logits = Output<float>(resp, "logits", &shape);
  EXPECT_THAT(shape, ::testing::ElementsAre(2, 6, 40));
  DocumentOutput row1 = FakeCompute(Tokens(4, 2), kOutputAll, 40, 6);
  for (int t = 0; t < 4; ++t)
    for (int v = 0; v < 40; ++v) EXPECT_EQ(logits[(6 + t) * 40 + v], row1.logits[t * 40 + v]);
  for (int t = 4; t < 6; ++t)
    for (int v = 0; v < 40; ++v) EXPECT_EQ(logits[(6 + t) * 40 + v], 0.f);
  std::vector<float> emb = Output<float>(resp, "embedding", &shape);
  EXPECT_THAT(shape, ::testing::ElementsAre(2, 6));
  for (int k = 0; k < 6; ++k) EXPECT_EQ(emb[6 + k], row1.embedding[k]);
  Output<float>(resp, "token_logprobs", &shape);
  EXPECT_THAT(shape, ::testing::ElementsAre(2, 6));
  Output<float>(resp, "hidden_states", &shape);
  EXPECT_THAT(shape, ::testing::ElementsAre(2, 6, 6));
  // The service got the documents without padding.
  auto last = s.inference().last();
  ASSERT_EQ(last->documents.size(), 2u);
  EXPECT_EQ(last->documents[1], Tokens(4, 2));
  EXPECT_EQ(last->id, "req-7");
  EXPECT_EQ(last->method, "ModelInfer");
}

// The same documents with left, right and no padding, raw and typed, INT32/INT64/BOOL masks,
// sent concurrently, give the same per-document outputs as each sent alone without padding.
TEST(KServeTest, PaddingAndConcurrencyInvariance) {
  TestServer s;
  const std::vector<int32_t> a = Tokens(9, 3), b = Tokens(5, 4);
  ModelInferResponse alone_a, alone_b;
  ASSERT_TRUE(Infer(s, IdsRequest({{0, a, 0}}, true, "INT64", "INT64", false), &alone_a).ok());
  ASSERT_TRUE(Infer(s, IdsRequest({{0, b, 0}}), &alone_b).ok());
  const std::vector<float> la = Output<float>(alone_a, "logits");
  const std::vector<float> lb = Output<float>(alone_b, "logits");
  struct Variant {
    std::vector<Row> rows;
    bool raw;
    std::string id_dtype, mask_dtype;
  };
  const std::vector<Variant> variants = {
      {{{0, a, 0}, {0, b, 4}}, true, "INT64", "INT64"},   // right padding
      {{{0, a, 0}, {4, b, 0}}, false, "INT32", "INT32"},  // left padding, typed
      {{{1, a, 1}, {2, b, 4}}, true, "INT32", "BOOL"},    // both sides
      {{{3, a, 0}, {2, b, 5}}, false, "INT64", "BOOL"},
  };
  std::vector<ModelInferResponse> responses(variants.size() * 3);
  std::vector<grpc::Status> statuses(responses.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < responses.size(); ++i) {
    threads.emplace_back([&, i] {
      const Variant& v = variants[i % variants.size()];
      statuses[i] = Infer(s, IdsRequest(v.rows, v.raw, v.id_dtype, v.mask_dtype), &responses[i]);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < responses.size(); ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    const Variant& v = variants[i % variants.size()];
    std::vector<int64_t> shape;
    std::vector<float> logits = Output<float>(responses[i], "logits", &shape);
    const int64_t t = shape[1];
    for (int r = 0; r < 2; ++r) {
      const std::vector<float>& ref = r == 0 ? la : lb;
      const int64_t n = static_cast<int64_t>(ref.size() / 40);
      for (int64_t p = 0; p < n; ++p)
        for (int64_t k = 0; k < 40; ++k)
          ASSERT_NEAR(logits[(r * t + v.rows[r].left + p) * 40 + k], ref[p * 40 + k], 1e-5);
    }
  }
}

TEST(KServeTest, OnlyRequestedOutputs) {
  TestServer s;
  ModelInferRequest req = IdsRequest({{0, Tokens(5, 1), 0}});
  req.add_outputs()->set_name("token_logprobs");
  req.add_outputs()->set_name("embedding");
  ModelInferResponse resp;
  ASSERT_TRUE(Infer(s, req, &resp).ok());
  ASSERT_EQ(resp.outputs_size(), 2);
  EXPECT_EQ(resp.outputs(0).name(), "token_logprobs");
  EXPECT_EQ(resp.outputs(1).name(), "embedding");
  EXPECT_EQ(s.inference().last()->outputs, kOutputTokenLogprobs | kOutputEmbedding);
}

// Triton's classification extension is refused by name, not ignored (QA: all logits came back instead).
TEST(KServeTest, ClassificationOutputParameterIsRefused) {
  TestServer s;
  ModelInferRequest req = IdsRequest({{0, Tokens(5, 1), 0}});
  auto* out = req.add_outputs();
  out->set_name("logits");
  (*out->mutable_parameters())["classification"].set_int64_param(2);
  ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT,
              {"output 'logits': parameter 'classification' (Triton's classification extension) is not supported"});
}

TEST(KServeTest, TextInputReturnsTokenIdsAndLengths) {
  TestServer s;
  ModelInferResponse resp;
  ASSERT_TRUE(Infer(s, TextRequest({"hi!", "a"}), &resp).ok());
  std::vector<int64_t> shape;
  std::vector<int64_t> ids = Output<int64_t>(resp, "token_ids", &shape);
  EXPECT_THAT(shape, ::testing::ElementsAre(2, 3));
  const std::vector<int32_t> hi = *ByteTokenizer().Encode("hi!");
  EXPECT_THAT(ids, ::testing::ElementsAre(hi[0], hi[1], hi[2], *ByteTokenizer().Encode("a")->data(), 0, 0));
  EXPECT_THAT(Output<int32_t>(resp, "lengths"), ::testing::ElementsAre(3, 1));
  std::vector<float> lp = Output<float>(resp, "token_logprobs", &shape);
  EXPECT_THAT(shape, ::testing::ElementsAre(2, 3));
}

TEST(KServeTest, PriorityAndTimeoutParameters) {
  TestServer s;
  ModelInferRequest req = IdsRequest({{0, Tokens(3, 1), 0}});
  (*req.mutable_parameters())["priority"].set_uint64_param(1);
  (*req.mutable_parameters())["timeout"].set_int64_param(5'000'000);  // 5 s, below the RPC's 30 s
  const absl::Time before = absl::Now();
  ModelInferResponse resp;
  ASSERT_TRUE(Infer(s, req, &resp).ok());
  auto last = s.inference().last();
  EXPECT_EQ(last->priority, 1);
  EXPECT_GE(last->deadline, before + absl::Seconds(5));
  EXPECT_LE(last->deadline, absl::Now() + absl::Seconds(5));
  // Without a timeout the RPC deadline applies.
  ModelInferRequest plain = IdsRequest({{0, Tokens(3, 1), 0}});
  ASSERT_TRUE(Infer(s, plain, &resp, absl::Seconds(20)).ok());
  // (the wire carries the RPC timeout rounded up, so allow a second)
  EXPECT_LE(s.inference().last()->deadline, absl::Now() + absl::Seconds(21));
  EXPECT_GE(s.inference().last()->deadline, absl::Now() + absl::Seconds(15));
}

TEST(KServeTest, InvalidArgumentErrors) {
  TestServerOptions o;
  TestServer s(o);
  // Mask with a hole, naming row and position.
  {
    ModelInferRequest req = IdsRequest({{0, Tokens(4, 1), 0}, {0, Tokens(4, 2), 0}});
    std::string mask = req.raw_input_contents(1);
    int64_t zero = 0;
    std::memcpy(mask.data() + (4 + 2) * 8, &zero, 8);
    req.set_raw_input_contents(1, mask);
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT, {"row 1", "hole", "position 2"});
  }
  // Empty row.
  ExpectError(s, IdsRequest({{0, Tokens(3, 1), 0}, {3, {}, 0}}), grpc::StatusCode::INVALID_ARGUMENT,
              {"row 1", "empty"});
  // Id out of range, naming row and position.
  ExpectError(s, IdsRequest({{0, Tokens(3, 1), 1}, {1, {1, 2, 40}, 0}}),
              grpc::StatusCode::INVALID_ARGUMENT, {"row 1", "position 3", "40", "[0, 40)"});
  ExpectError(s, IdsRequest({{0, {1, -1}, 0}}), grpc::StatusCode::INVALID_ARGUMENT,
              {"row 0", "position 1"});
  // Document longer than the context, with the limit.
  ExpectError(s, IdsRequest({{0, Tokens(65, 1), 0}}), grpc::StatusCode::INVALID_ARGUMENT,
              {"row 0", "65 tokens", "context of 64"});
  // Sum over rows above max_tokens_per_request.
  ExpectError(s, IdsRequest({{0, Tokens(60, 1), 0}, {0, Tokens(60, 2), 0}, {0, Tokens(60, 3), 0}}),
              grpc::StatusCode::INVALID_ARGUMENT, {"180 tokens", "--max_tokens_per_request=128"});
  // Mixing raw and typed contents.
  {
    ModelInferRequest req = IdsRequest({{0, Tokens(3, 1), 0}});
    req.mutable_inputs(1)->mutable_contents()->add_int64_contents(1);
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT, {"raw_input_contents"});
  }
  // Raw byte length must match shape x dtype.
  {
    ModelInferRequest req = IdsRequest({{0, Tokens(3, 1), 0}});
    req.set_raw_input_contents(0, req.raw_input_contents(0).substr(0, 20));
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT, {"20 bytes", "needs 24"});
  }
  // Typed count mismatch.
  {
    ModelInferRequest req = IdsRequest({{0, Tokens(3, 1), 0}}, false);
    req.mutable_inputs(0)->mutable_contents()->add_int64_contents(1);
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT, {"4 typed elements", "needs 3"});
  }
  // Typed values in another datatype's field are refused, not dropped (QA: int_contents beside an
  // INT64 input's int64_contents was ignored and the request ran).
  {
    ModelInferRequest req = IdsRequest({{0, Tokens(3, 1), 0}}, false);
    req.mutable_inputs(0)->mutable_contents()->add_int_contents(7);
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT,
                {"'input_ids'", "1 values in contents.int_contents", "contents.int64_contents only"});
  }
  {
    ModelInferRequest req = IdsRequest({{0, Tokens(3, 1), 0}}, false);
    req.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1.5f);
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT, {"contents.fp32_contents"});
  }
  // Wrong dtypes, shapes, names.
  ExpectError(s, IdsRequest({{0, Tokens(3, 1), 0}}, true, "FP32"), grpc::StatusCode::INVALID_ARGUMENT,
              {"FP32"});
  ExpectError(s, IdsRequest({{0, Tokens(3, 1), 0}}, true, "INT64", "FP32"),
              grpc::StatusCode::INVALID_ARGUMENT, {"attention_mask", "FP32"});
  {
    ModelInferRequest req = IdsRequest({{0, Tokens(3, 1), 0}});
    req.mutable_inputs(0)->set_name("ids");
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT, {"unknown input 'ids'"});
  }
  {
    ModelInferRequest req = IdsRequest({{0, Tokens(4, 1), 0}});
    req.mutable_inputs(0)->clear_shape();
    req.mutable_inputs(0)->add_shape(4);
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT, {"[B,T]"});
  }
  {
    ModelInferRequest req = IdsRequest({{0, Tokens(4, 1), 0}});
    req.add_outputs()->set_name("attention");
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT, {"unknown output 'attention'"});
  }
  {
    ModelInferRequest req = IdsRequest({{0, Tokens(4, 1), 0}});
    req.add_outputs()->set_name("token_ids");
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT, {"only for 'text'"});
  }
  {
    ModelInferRequest req = IdsRequest({{0, Tokens(4, 1), 0}});
    (*req.mutable_parameters())["priority"].set_string_param("high");
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT, {"priority"});
  }
  {
    ModelInferRequest req = TextRequest({"x"});
    *req.add_inputs() = IdsRequest({{0, Tokens(1, 1), 0}}).inputs(0);
    req.add_raw_input_contents(IdsRequest({{0, Tokens(1, 1), 0}}).raw_input_contents(0));
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT, {"not both"});
  }
  ExpectError(s, TextRequest({"ok", ""}), grpc::StatusCode::INVALID_ARGUMENT, {"text row 1", "empty"});
  {
    ModelInferRequest req;
    req.set_model_name("fake");
    ExpectError(s, req, grpc::StatusCode::INVALID_ARGUMENT, {"missing input"});
  }
  // Nothing reached the engine.
  EXPECT_EQ(s.inference().submitted(), 0);
}

TEST(KServeTest, TextWithoutTokenizerIsInvalid) {
  TestServerOptions o;
  o.tokenizer = false;
  TestServer s(o);
  ExpectError(s, TextRequest({"abc"}), grpc::StatusCode::INVALID_ARGUMENT, {"no tokenizer"});
}

TEST(KServeTest, UnknownModelIsNotFound) {
  TestServer s;
  ModelInferRequest req = IdsRequest({{0, Tokens(3, 1), 0}});
  req.set_model_name("gpt");
  ExpectError(s, req, grpc::StatusCode::NOT_FOUND, {"'gpt'", "'fake'"});
  req.set_model_name("fake");
  req.set_model_version("3");
  ExpectError(s, req, grpc::StatusCode::NOT_FOUND, {"version"});
}

TEST(KServeTest, ResponseTooLargeIsRefusedUpFrontWithNumbers) {
  TestServerOptions o;
  o.max_response_bytes = 10000;
  TestServer s(o);
  // logits alone: 2 x 60 x 40 x 4 = 19200 bytes.
  ModelInferRequest req = IdsRequest({{0, Tokens(60, 1), 0}, {0, Tokens(60, 2), 0}});
  ExpectError(s, req, grpc::StatusCode::RESOURCE_EXHAUSTED,
              {"logits 19200", "--max_response_bytes=10000", "fewer outputs"});
  EXPECT_EQ(s.inference().submitted(), 0);
  req.add_outputs()->set_name("embedding");
  ModelInferResponse resp;
  EXPECT_TRUE(Infer(s, req, &resp).ok());
}

TEST(KServeTest, ServiceRejectionsPassThrough) {
  TestServer s;
  s.inference().SetReject(absl::ResourceExhaustedError("needs 9 GiB, budget 4 GiB"));
  ExpectError(s, IdsRequest({{0, Tokens(3, 1), 0}}), grpc::StatusCode::RESOURCE_EXHAUSTED, {"9 GiB"});
  s.inference().SetReject(absl::OkStatus());
  // Queue full -> UNAVAILABLE.
  s.inference().SetHold(true);
  s.inference().SetMaxQueue(1);
  std::thread first([&] {
    ModelInferResponse resp;
    EXPECT_TRUE(Infer(s, IdsRequest({{0, Tokens(3, 1), 0}}), &resp).ok());
  });
  ASSERT_TRUE(s.inference().WaitSubmitted(1));
  ExpectError(s, IdsRequest({{0, Tokens(3, 2), 0}}), grpc::StatusCode::UNAVAILABLE, {"queue full"});
  s.inference().SetHold(false);
  first.join();
}

TEST(KServeTest, EngineErrorsPassThrough) {
  TestServer s;
  s.inference().SetFail(absl::InternalError("engine returned garbage"));
  ExpectError(s, IdsRequest({{0, Tokens(3, 1), 0}}), grpc::StatusCode::INTERNAL, {"engine returned"});
  s.inference().SetFail(absl::ResourceExhaustedError("cannot allocate 9 bytes for a response output"));
  ExpectError(s, IdsRequest({{0, Tokens(3, 1), 0}}), grpc::StatusCode::RESOURCE_EXHAUSTED, {"cannot allocate"});
}

// --- Deadlines, cancellation, draining ---------------------------------------------------------

TEST(KServeTest, RpcDeadlineExceeded) {
  TestServer s;
  s.inference().SetHold(true);
  ModelInferResponse resp;
  const absl::Time before = absl::Now();
  grpc::Status st = Infer(s, IdsRequest({{0, Tokens(3, 1), 0}}), &resp, absl::Milliseconds(300));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server-side request carried the RPC deadline (the wire rounds the timeout up a little).
  EXPECT_GE(s.inference().last()->deadline, before + absl::Milliseconds(250));
  EXPECT_LE(s.inference().last()->deadline, before + absl::Milliseconds(1300));
}

TEST(KServeTest, TimeoutParameterExpiresOnTheServer) {
  TestServer s;
  s.inference().SetHold(true);
  ModelInferRequest req = IdsRequest({{0, Tokens(3, 1), 0}});
  (*req.mutable_parameters())["timeout"].set_int64_param(100'000);  // 100 ms
  ModelInferResponse resp;
  grpc::Status st = Infer(s, req, &resp, absl::Seconds(30));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(st.error_message(), HasSubstr("deadline"));  // the server's answer, not the client's
}

TEST(KServeTest, ClientCancellationSetsTheCancelFlag) {
  TestServer s;
  s.inference().SetHold(true);
  grpc::ClientContext ctx;
  grpc::Status st;
  std::thread call([&] {
    ModelInferResponse resp;
    st = s.kserve().ModelInfer(&ctx, IdsRequest({{0, Tokens(3, 1), 0}}), &resp);
  });
  ASSERT_TRUE(s.inference().WaitSubmitted(1));
  auto request = s.inference().last();
  ctx.TryCancel();
  call.join();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::CANCELLED);
  const absl::Time limit = absl::Now() + absl::Seconds(10);
  while (!request->cancelled->load() && absl::Now() < limit) absl::SleepFor(absl::Milliseconds(2));
  EXPECT_TRUE(request->cancelled->load());
}

TEST(KServeTest, DrainingRefusesNewWorkAndFinishesQueued) {
  TestServer s;
  s.inference().SetHold(true);
  grpc::Status first_status;
  std::thread first([&] {
    ModelInferResponse resp;
    first_status = Infer(s, IdsRequest({{0, Tokens(3, 1), 0}}), &resp);
  });
  ASSERT_TRUE(s.inference().WaitSubmitted(1));
  s.health().StartDraining();
  ExpectError(s, IdsRequest({{0, Tokens(3, 2), 0}}), grpc::StatusCode::UNAVAILABLE, {"shutting down"});
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse r;
    ASSERT_TRUE(s.kserve().ServerReady(&ctx, {}, &r).ok());
    EXPECT_FALSE(r.ready());
  }
  s.inference().SetHold(false);
  first.join();
  EXPECT_TRUE(first_status.ok()) << first_status.error_message();
}

// --- Health service -----------------------------------------------------------------------------

grpc::health::v1::HealthCheckResponse::ServingStatus Check(TestServer& s, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(s.channel());
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status st = stub->Check(&ctx, req, &resp);
  EXPECT_TRUE(st.ok()) << service << ": " << st.error_message();
  return resp.status();
}

TEST(HealthServiceTest, FollowsStartingReadyDraining) {
  using S = grpc::health::v1::HealthCheckResponse;
  TestServerOptions o;
  o.ready = false;
  TestServer s(o);
  EXPECT_EQ(Check(s, "liveness"), S::SERVING);
  EXPECT_EQ(Check(s, "readiness"), S::NOT_SERVING);
  EXPECT_EQ(Check(s, ""), S::NOT_SERVING);
  s.health().SetReady();
  EXPECT_EQ(Check(s, "readiness"), S::SERVING);
  EXPECT_EQ(Check(s, ""), S::SERVING);
  s.health().StartDraining();
  EXPECT_EQ(Check(s, "readiness"), S::NOT_SERVING);
  EXPECT_EQ(Check(s, ""), S::NOT_SERVING);
  EXPECT_EQ(Check(s, "liveness"), S::SERVING);
}

// --- Streaming, statistics, metrics -------------------------------------------------------------

TEST(KServeTest, StreamInferAnswersEveryRequestAndReportsErrorsInline) {
  TestServer s;
  grpc::ClientContext ctx;
  auto stream = s.kserve().ModelStreamInfer(&ctx);
  for (int i = 0; i < 3; ++i) {
    ModelInferRequest req = IdsRequest({{0, Tokens(4 + i, i), 0}});
    req.set_id("s" + std::to_string(i));
    if (i == 1) req.set_model_name("nope");
    ASSERT_TRUE(stream->Write(req));
  }
  stream->WritesDone();
  std::map<std::string, inference::ModelStreamInferResponse> got;
  inference::ModelStreamInferResponse r;
  while (stream->Read(&r)) got[r.infer_response().id()] = r;
  EXPECT_TRUE(stream->Finish().ok());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got["s0"].error_message(), "");
  EXPECT_THAT(got["s1"].error_message(), HasSubstr("NOT_FOUND"));
  EXPECT_EQ(got["s2"].infer_response().outputs_size(), 4);
  std::vector<int64_t> shape;
  Output<float>(got["s2"].infer_response(), "logits", &shape);
  EXPECT_THAT(shape, ::testing::ElementsAre(1, 6, 40));
}

TEST(KServeTest, StreamAnswersWhileDrainingCarryTheMessageId) {
  TestServer s;
  grpc::ClientContext ctx;
  auto stream = s.kserve().ModelStreamInfer(&ctx);
  s.health().StartDraining();
  ModelInferRequest req = IdsRequest({{0, Tokens(4, 1), 0}});
  req.set_id("late-1");
  ASSERT_TRUE(stream->Write(req));
  stream->WritesDone();
  inference::ModelStreamInferResponse r;
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_THAT(r.error_message(), HasSubstr("UNAVAILABLE"));
  EXPECT_EQ(r.infer_response().id(), "late-1");
  EXPECT_FALSE(stream->Read(&r));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(KServeTest, CancelledStreamCancelsPendingRequestsAndFinishes) {
  TestServer s;
  s.inference().SetHold(true);
  grpc::ClientContext ctx;
  auto stream = s.kserve().ModelStreamInfer(&ctx);
  ASSERT_TRUE(stream->Write(IdsRequest({{0, Tokens(4, 1), 0}})));
  ASSERT_TRUE(s.inference().WaitSubmitted(1));
  auto first = s.inference().last();
  ASSERT_TRUE(stream->Write(IdsRequest({{0, Tokens(5, 2), 0}})));
  ASSERT_TRUE(s.inference().WaitSubmitted(2));
  auto second = s.inference().last();
  ctx.TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  const absl::Time limit = absl::Now() + absl::Seconds(10);
  while ((!first->cancelled->load() || !second->cancelled->load()) && absl::Now() < limit) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_TRUE(first->cancelled->load());
  EXPECT_TRUE(second->cancelled->load());
  // Both were answered (CANCELLED) by the service; the stream reactor finished after them.
  EXPECT_TRUE(s.inference().WaitIdle(absl::Seconds(10)));
}

TEST(KServeTest, StatisticsAndMetricsCountRequests) {
  TestServer s;
  ModelInferResponse resp;
  ASSERT_TRUE(Infer(s, IdsRequest({{0, Tokens(3, 1), 0}, {0, Tokens(3, 2), 0}}), &resp).ok());
  ExpectError(s, IdsRequest({{0, {99}, 0}}), grpc::StatusCode::INVALID_ARGUMENT, {});
  grpc::ClientContext ctx;
  inference::ModelStatisticsResponse stats;
  ASSERT_TRUE(s.kserve().ModelStatistics(&ctx, {}, &stats).ok());
  ASSERT_EQ(stats.model_stats_size(), 1);
  const auto& m = stats.model_stats(0);
  EXPECT_EQ(m.name(), "fake");
  EXPECT_EQ(m.inference_count(), 2u);
  EXPECT_EQ(m.inference_stats().success().count(), 1u);
  EXPECT_EQ(m.inference_stats().fail().count(), 1u);
  EXPECT_GT(m.last_inference(), 0u);
  grpc::ClientContext ctx2;
  inference::ModelStatisticsRequest q;
  q.set_name("x");
  EXPECT_EQ(s.kserve().ModelStatistics(&ctx2, q, &stats).error_code(), grpc::StatusCode::NOT_FOUND);

  const std::string text = prometheus::TextSerializer().Serialize(s.registry().Collect());
  EXPECT_THAT(text, HasSubstr("reformer_requests_total{code=\"OK\",method=\"ModelInfer\",tenant=\"anonymous\"} 1"));
  EXPECT_THAT(text, HasSubstr("reformer_requests_total{code=\"InvalidArgument\",method=\"ModelInfer\",tenant=\"anonymous\"} 1"));
  EXPECT_THAT(text, HasSubstr("grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"ModelInfer\","
                              "grpc_service=\"inference.GRPCInferenceService\",grpc_type=\"unary\"} 1"));
  EXPECT_THAT(text, HasSubstr("grpc_server_started_total{grpc_method=\"ModelInfer\""));
  EXPECT_THAT(text, HasSubstr("grpc_server_handling_seconds_bucket{grpc_method=\"ModelInfer\""));
  EXPECT_THAT(text, HasSubstr("reformer_rejected_total{reason=\"invalid\"} 1"));
  EXPECT_THAT(text, HasSubstr("reformer_input_tokens_count 1"));
}

// --- reformer.v1 --------------------------------------------------------------------------------

TEST(ReformerApiTest, ScoreTextAndIds) {
  TestServer s;
  reformer::v1::ScoreRequest req;
  req.add_documents()->set_text("abcd");
  auto* ids_doc = req.add_documents()->mutable_ids();
  for (int32_t id : {3, 4, 5}) ids_doc->add_ids(id);
  req.set_return_token_logprobs(true);
  req.set_priority(2);
  grpc::ClientContext ctx;
  reformer::v1::ScoreResponse resp;
  grpc::Status st = s.api().Score(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.scores_size(), 2);
  const std::vector<int32_t> ids = *ByteTokenizer().Encode("abcd");
  DocumentOutput ref = FakeCompute(ids, kOutputTokenLogprobs, 40, 6);
  double total = ref.token_logprobs[1] + ref.token_logprobs[2] + ref.token_logprobs[3];
  EXPECT_NEAR(resp.scores(0).total_logprob(), total, 1e-6);
  EXPECT_EQ(resp.scores(0).num_tokens(), 4);
  EXPECT_EQ(resp.scores(0).num_bytes(), 3);
  EXPECT_NEAR(resp.scores(0).bits_per_byte(), -total / std::log(2.0) / 3, 1e-6);
  EXPECT_EQ(resp.scores(0).token_logprobs_size(), 4);
  EXPECT_THAT(resp.scores(0).token_ids(), ::testing::ElementsAreArray(ids));
  EXPECT_EQ(resp.scores(1).token_ids_size(), 0);
  EXPECT_EQ(resp.usage().tokens(), 7);
  EXPECT_EQ(s.inference().last()->priority, 2);
  EXPECT_EQ(s.inference().last()->outputs, kOutputTokenLogprobs);
}

TEST(ReformerApiTest, ScoreErrors) {
  TestServer s;
  auto score = [&](const reformer::v1::ScoreRequest& req) {
    grpc::ClientContext ctx;
    reformer::v1::ScoreResponse resp;
    return s.api().Score(&ctx, req, &resp);
  };
  reformer::v1::ScoreRequest empty_doc;
  empty_doc.add_documents()->set_text("ok");
  empty_doc.add_documents()->set_text("");
  grpc::Status st = score(empty_doc);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("document 1 is empty"));
  reformer::v1::ScoreRequest bad_id;
  bad_id.add_documents()->mutable_ids()->add_ids(1);
  bad_id.mutable_documents(0)->mutable_ids()->add_ids(77);
  st = score(bad_id);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("document 0 position 1"));
  reformer::v1::ScoreRequest none;
  none.add_documents();
  EXPECT_EQ(score(none).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(score(reformer::v1::ScoreRequest()).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  TestServerOptions o;
  o.causal = false;
  TestServer mlm(o);
  grpc::ClientContext ctx;
  reformer::v1::ScoreResponse resp;
  reformer::v1::ScoreRequest req;
  req.add_documents()->set_text("abc");
  EXPECT_EQ(mlm.api().Score(&ctx, req, &resp).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST(ReformerApiTest, EmbedNormalizes) {
  TestServer s;
  reformer::v1::EmbedRequest req;
  req.add_documents()->set_text("hello");
  req.add_documents()->mutable_ids()->add_ids(9);
  req.set_normalize(true);
  grpc::ClientContext ctx;
  reformer::v1::EmbedResponse resp;
  ASSERT_TRUE(s.api().Embed(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.embeddings_size(), 2);
  for (const auto& e : resp.embeddings()) {
    ASSERT_EQ(e.values_size(), 6);
    double norm = 0;
    for (float v : e.values()) norm += v * v;
    EXPECT_NEAR(norm, 1.0, 1e-5);
  }
  EXPECT_EQ(resp.embeddings(1).num_tokens(), 1);
  EXPECT_EQ(s.inference().last()->outputs, kOutputEmbedding);
}

TEST(ReformerApiTest, GetModelInfo) {
  TestServer s;
  grpc::ClientContext ctx;
  reformer::v1::GetModelInfoResponse info;
  ASSERT_TRUE(s.api().GetModelInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.name(), "fake");
  EXPECT_EQ(info.vocab_size(), 40);
  EXPECT_EQ(info.max_tokens_per_document(), 64);
  EXPECT_EQ(info.max_tokens_per_request(), 128);
  EXPECT_EQ(info.embedding_size(), 6);
  EXPECT_THAT(info.attn_layers(), ::testing::ElementsAre("local", "lsh"));
  EXPECT_TRUE(info.causal());
  EXPECT_EQ(info.tokenizer(), "bytes");
}

TEST(ReformerApiTest, TokenizeGivesTheIdsScoreComputesOn) {
  TestServer s;
  reformer::v1::TokenizeRequest req;
  req.add_texts("abcd");
  req.add_texts("x");
  req.add_texts("");
  grpc::ClientContext ctx;
  reformer::v1::TokenizeResponse resp;
  ASSERT_TRUE(s.api().Tokenize(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.tokens_size(), 3);
  EXPECT_THAT(resp.tokens(0).ids(), ::testing::ElementsAreArray(*ByteTokenizer().Encode("abcd")));
  EXPECT_THAT(resp.tokens(1).ids(), ::testing::ElementsAreArray(*ByteTokenizer().Encode("x")));
  EXPECT_EQ(resp.tokens(2).ids_size(), 0);
  EXPECT_THAT(resp.predicted_bytes(), ::testing::ElementsAre(3, 0, 0));
  EXPECT_EQ(s.inference().last(), nullptr);  // no inference

  TestServerOptions o;
  o.tokenizer = false;
  TestServer ids_only(o);
  grpc::ClientContext ctx2;
  reformer::v1::TokenizeResponse resp2;
  grpc::Status st = ids_only.api().Tokenize(&ctx2, req, &resp2);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("no tokenizer"));
  EXPECT_EQ(resp2.tokens_size(), 0);
}

// reformer.v1 methods called with bytes that are not their request message (as a client with a
// different .proto, or a bug, sends them): every method answers INVALID_ARGUMENT naming the message
// type, counted in the metrics, and the server keeps serving.
grpc::Status RawUnary(TestServer& s, const std::string& method, const std::string& bytes) {
  grpc::Slice slice(bytes);
  const grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext ctx;
  return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
      s.channel().get(), grpc::internal::RpcMethod(method.c_str(), grpc::internal::RpcMethod::NORMAL_RPC), &ctx,
      request, &response);
}

grpc::Status RawGenerate(TestServer& s, const std::string& bytes) {
  grpc::Slice slice(bytes);
  const grpc::ByteBuffer request(&slice, 1);
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(
          s.channel().get(),
          grpc::internal::RpcMethod("/reformer.v1.ReformerService/Generate", grpc::internal::RpcMethod::SERVER_STREAMING),
          &ctx, request));
  grpc::ByteBuffer message;
  while (reader->Read(&message)) {
  }
  return reader->Finish();
}

TEST(ReformerApiTest, UnparseableMessagesAreInvalidArgumentNamingTheirType) {
  TestServer s;
  const std::string garbage = "\xff\xff\xff\xff";
  const std::string bad_utf8 = std::string("\x0a\x02\xff\xfe", 4);  // field 1 (a string) of 2 bytes
  const struct {
    const char* method;
    std::string bytes;
    const char* type;
  } cases[] = {
      {"Score", garbage, "reformer.v1.ScoreRequest"},
      {"Embed", garbage, "reformer.v1.EmbedRequest"},
      {"Tokenize", garbage, "reformer.v1.TokenizeRequest"},
      {"Tokenize", bad_utf8, "reformer.v1.TokenizeRequest"},
      {"GetModelInfo", garbage, "reformer.v1.GetModelInfoRequest"},
  };
  for (const auto& c : cases) {
    const grpc::Status st = RawUnary(s, std::string("/reformer.v1.ReformerService/") + c.method, c.bytes);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.method;
    EXPECT_THAT(st.error_message(), HasSubstr(std::string("is not a valid ") + c.type)) << c.method;
  }
  // Generate: a stop string (field 7) and prompt text (field 1 of the prompt, field 1) not UTF-8.
  for (const std::string& bytes : {garbage, std::string("\x3a\x02\xff\xfe", 4),
                                   std::string("\x0a\x04\x0a\x02\xff\xfe", 6)}) {
    const grpc::Status st = RawGenerate(s, bytes);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(st.error_message(), HasSubstr("is not a valid reformer.v1.GenerateRequest"));
  }
  const std::string text = prometheus::TextSerializer().Serialize(s.registry().Collect());
  EXPECT_THAT(text, HasSubstr("grpc_server_handled_total{grpc_code=\"InvalidArgument\",grpc_method=\"Score\""));
  EXPECT_THAT(text, HasSubstr("grpc_server_handled_total{grpc_code=\"InvalidArgument\",grpc_method=\"Tokenize\""));
  EXPECT_THAT(text, HasSubstr("grpc_server_handled_total{grpc_code=\"InvalidArgument\",grpc_method=\"Generate\""));
  EXPECT_THAT(text, HasSubstr("reformer_requests_total{code=\"InvalidArgument\",method=\"Embed\""));
  // Still serving, the typed way.
  grpc::ClientContext ctx;
  reformer::v1::TokenizeRequest req;
  req.add_texts("ok");
  reformer::v1::TokenizeResponse resp;
  ASSERT_TRUE(s.api().Tokenize(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.tokens_size(), 1);
}

// Enum fields take only the values the server knows: an unknown Generate mode is named, never
// read as the default (DecodeGenerate, the wire decoding both RPC paths share).
TEST(ReformerApiTest, UnknownGenerateModeIsInvalidArgument) {
  ServedModel model;
  model.config.vocab_size = 40;
  reformer::v1::GenerateRequest wire;
  wire.mutable_prompt()->mutable_ids()->add_ids(3);
  wire.set_mode(reformer::v1::DECODE_MODE_RECOMPUTE);
  absl::StatusOr<std::unique_ptr<GenerateRequest>> ok = DecodeGenerate(wire, model);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->mode, DecodeMode::kRecompute);
  wire.set_mode(static_cast<reformer::v1::DecodeMode>(7));
  const absl::Status bad = DecodeGenerate(wire, model).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), HasSubstr("mode 7 is not a DecodeMode"));
}

// Tokenize with no texts is refused as Score and Embed with no documents are.
TEST(ReformerApiTest, TokenizeWithoutTextsIsInvalidArgument) {
  TestServer s;
  grpc::ClientContext ctx;
  reformer::v1::TokenizeResponse resp;
  const grpc::Status st = s.api().Tokenize(&ctx, reformer::v1::TokenizeRequest(), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("the request has no texts"));
}

// Without a GenerationService, Generate says why (main sets the reason: a flag, the model, the CPU).
TEST(ReformerApiTest, GenerateWithoutGenerationSaysWhy) {
  TestServer s;
  grpc::ClientContext ctx;
  reformer::v1::GenerateRequest req;
  req.mutable_prompt()->set_text("hi");
  auto reader = s.api().Generate(&ctx, req);
  reformer::v1::GenerateResponse m;
  EXPECT_FALSE(reader->Read(&m));
  const grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("this server does not serve generation: it was started without"));
}

TEST(ReformerApiTest, DrainingIsUnavailable) {
  TestServer s;
  s.health().StartDraining();
  reformer::v1::EmbedRequest req;
  req.add_documents()->set_text("x");
  grpc::ClientContext ctx;
  reformer::v1::EmbedResponse resp;
  EXPECT_EQ(s.api().Embed(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace reformer::serving::testing

namespace reformer::serving::testing {
namespace {

// --- Hostile clients: declared sizes, bad stream messages, slow readers, shutdown --------------

// An input tensor that declares `shape` but carries only `raw` (or `typed` int64 values).
ModelInferRequest Declared(const std::string& name, const std::string& dtype, std::vector<int64_t> shape,
                           const std::string& raw, bool typed = false) {
  ModelInferRequest req;
  req.set_model_name("fake");
  req.set_id("bomb");
  auto* in = req.add_inputs();
  in->set_name(name);
  in->set_datatype(dtype);
  for (int64_t d : shape) in->add_shape(d);
  if (typed) {
    if (dtype == "BYTES") in->mutable_contents()->add_bytes_contents(raw);
    else for (char c : raw) in->mutable_contents()->add_int64_contents(c);
  } else {
    req.add_raw_input_contents(raw);
  }
  return req;
}

TEST(HostileTest, DeclaredSizesAreCheckedAgainstWhatWasSent) {
  TestServer s;
  const std::string eight(8, '\1');
  ExpectError(s, Declared("input_ids", "INT64", {1, int64_t{1} << 27}, eight), grpc::StatusCode::INVALID_ARGUMENT,
              {"raw content has 8 bytes", "needs 1073741824"});
  ExpectError(s, Declared("input_ids", "INT32", {1, int64_t{1} << 40}, eight), grpc::StatusCode::INVALID_ARGUMENT,
              {"raw content has 8 bytes"});
  ExpectError(s, Declared("input_ids", "INT64", {int64_t{1} << 40, int64_t{1} << 40}, eight),
              grpc::StatusCode::INVALID_ARGUMENT, {"too many elements"});
  ExpectError(s, Declared("input_ids", "INT64", {1, -5}, eight), grpc::StatusCode::INVALID_ARGUMENT,
              {"negative dimension"});
  ExpectError(s, Declared("input_ids", "INT64", {1, int64_t{1} << 27}, "\1\2", /*typed=*/true),
              grpc::StatusCode::INVALID_ARGUMENT, {"2 typed elements", "needs 134217728"});
  ExpectError(s, Declared("input_ids", "INT64", {int64_t{1} << 20, 1}, std::string(int64_t{8} << 20, '\1')),
              grpc::StatusCode::INVALID_ARGUMENT, {"1048576 rows", "--max_tokens_per_request=128"});
  ExpectError(s, Declared("input_ids", "INT64", {3, 0}, ""), grpc::StatusCode::INVALID_ARGUMENT,
              {"at least one token"});
  // Exact: one byte too many is as wrong as one too few.
  ExpectError(s, Declared("input_ids", "INT64", {2, 3}, std::string(49, '\1')), grpc::StatusCode::INVALID_ARGUMENT,
              {"49 bytes", "needs 48"});
  // BYTES: the declared count must fit the bytes (4-byte length each) and match exactly.
  ExpectError(s, Declared("text", "BYTES", {int64_t{1} << 27}, std::string("\0\0\0\0", 4)),
              grpc::StatusCode::INVALID_ARGUMENT, {"cannot hold the 134217728 elements"});
  ExpectError(s, Declared("text", "BYTES", {int64_t{1} << 40}, std::string("\1\0\0\0x", 5)),
              grpc::StatusCode::INVALID_ARGUMENT, {"cannot hold"});
  ExpectError(s, Declared("text", "BYTES", {2}, std::string("\1\0\0\0x\xff\0\0\0y", 10)),
              grpc::StatusCode::INVALID_ARGUMENT, {"element 1 runs past the end"});
  ExpectError(s, Declared("text", "BYTES", {int64_t{1} << 27}, "abc", /*typed=*/true),
              grpc::StatusCode::INVALID_ARGUMENT, {"1 typed elements", "needs 134217728"});
  ExpectError(s, Declared("text", "BYTES", {200}, std::string(800, '\0')), grpc::StatusCode::INVALID_ARGUMENT,
              {"200 text rows", "--max_tokens_per_request=128"});
  // The mask declares what input_ids declares, and must carry it too.
  ModelInferRequest mask = IdsRequest({{0, Tokens(3, 1), 0}});
  mask.mutable_inputs(1)->set_shape(1, int64_t{1} << 27);
  ExpectError(s, mask, grpc::StatusCode::INVALID_ARGUMENT, {"attention_mask", "must match"});
  EXPECT_EQ(s.inference().submitted(), 0);
}

TEST(HostileTest, ReformerApiBoundsDocumentsAndTokensWhileDecoding) {
  TestServer s;  // max_tokens_per_request 128
  reformer::v1::EmbedRequest many;
  for (int i = 0; i < 1000; ++i) many.add_documents()->mutable_ids()->add_ids(1);
  grpc::ClientContext ctx;
  reformer::v1::EmbedResponse resp;
  grpc::Status st = s.api().Embed(&ctx, many, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("1000 tokens in 1000 documents"));
  reformer::v1::ScoreRequest long_text;
  long_text.add_documents()->set_text(std::string(100, 'a'));
  long_text.add_documents()->set_text(std::string(100, 'b'));
  grpc::ClientContext ctx2;
  reformer::v1::ScoreResponse score;
  st = s.api().Score(&ctx2, long_text, &score);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("200 tokens in 2 documents"));
  reformer::v1::TokenizeRequest tok;
  tok.add_texts(std::string(200, 'x'));
  grpc::ClientContext ctx3;
  reformer::v1::TokenizeResponse tokens;
  st = s.api().Tokenize(&ctx3, tok, &tokens);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.inference().submitted(), 0);
}

TEST(HostileTest, AllocationFailureIsResourceExhaustedAndTheRpcFinishes) {
  TestServer s;
  s.inference().SetThrowOnSubmit(true);
  ExpectError(s, IdsRequest({{0, Tokens(3, 1), 0}}), grpc::StatusCode::RESOURCE_EXHAUSTED, {"out of memory"});
  reformer::v1::EmbedRequest embed;
  embed.add_documents()->set_text("abc");
  grpc::ClientContext ctx;
  reformer::v1::EmbedResponse resp;
  EXPECT_EQ(s.api().Embed(&ctx, embed, &resp).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // On a stream: an error response, and the stream goes on.
  grpc::ClientContext sctx;
  auto stream = s.kserve().ModelStreamInfer(&sctx);
  ASSERT_TRUE(stream->Write(IdsRequest({{0, Tokens(3, 1), 0}})));
  inference::ModelStreamInferResponse r;
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_THAT(r.error_message(), HasSubstr("RESOURCE_EXHAUSTED"));
  s.inference().SetThrowOnSubmit(false);
  ASSERT_TRUE(stream->Write(IdsRequest({{0, Tokens(3, 1), 0}})));
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_EQ(r.error_message(), "");
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(HostileTest, StreamAnswersBadMessagesAndKeepsServing) {
  TestServer s;
  grpc::ClientContext ctx;
  auto stream = s.kserve().ModelStreamInfer(&ctx);
  std::vector<ModelInferRequest> messages = {
      Declared("input_ids", "INT64", {1, int64_t{1} << 40}, std::string(8, '\1')),
      IdsRequest({{0, Tokens(3, 1), 0}}),
      IdsRequest({{0, {1, 99}, 0}}),
      Declared("text", "BYTES", {int64_t{1} << 27}, "abc", /*typed=*/true),
      IdsRequest({{0, Tokens(5, 2), 0}}),
  };
  for (size_t i = 0; i < messages.size(); ++i) {
    messages[i].set_id("m" + std::to_string(i));
    ASSERT_TRUE(stream->Write(messages[i]));
    inference::ModelStreamInferResponse r;
    ASSERT_TRUE(stream->Read(&r)) << i;  // one answer per message, in turn
    EXPECT_EQ(r.infer_response().id(), messages[i].id());
    if (i == 1 || i == 4) {
      EXPECT_EQ(r.error_message(), "") << i;
      EXPECT_EQ(r.infer_response().outputs_size(), 4);
      EXPECT_EQ(r.infer_response().raw_output_contents_size(), 4);
    } else {
      EXPECT_THAT(r.error_message(), HasSubstr("INVALID_ARGUMENT")) << i;
    }
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

// Reads nothing from `stream` while the server must pause reading: the fake service sees at most
// `expected` submissions however long the test waits (50 ms here; a pause has no end of its own).
void ExpectSubmissionsStayAt(TestServer& s, int64_t expected) {
  ASSERT_TRUE(s.inference().WaitSubmitted(expected));
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(s.inference().submitted(), expected);
}

TEST(HostileTest, StreamReadsNoMoreWhileItOwesTooManyResponses) {
  TestServerOptions o;
  o.stream.max_unsent_responses = 2;
  TestServer s(o);
  s.inference().SetHold(true);
  grpc::ClientContext ctx;
  auto stream = s.kserve().ModelStreamInfer(&ctx);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(stream->Write(IdsRequest({{0, Tokens(3, i), 0}})));
  ExpectSubmissionsStayAt(s, 2);
  s.inference().SetHold(false);  // answers go out, reading resumes
  inference::ModelStreamInferResponse r;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(stream->Read(&r)) << i;
    EXPECT_EQ(r.error_message(), "");
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(s.inference().submitted(), 5);
}

TEST(HostileTest, StreamReadsNoMoreWhileItOwesTooManyBytes) {
  TestServerOptions o;
  o.stream.max_unsent_bytes = 1;  // any pending response is too much: one message at a time
  TestServer s(o);
  s.inference().SetHold(true);
  grpc::ClientContext ctx;
  auto stream = s.kserve().ModelStreamInfer(&ctx);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(stream->Write(IdsRequest({{0, Tokens(3, i), 0}})));
  ExpectSubmissionsStayAt(s, 1);
  s.inference().SetHold(false);
  inference::ModelStreamInferResponse r;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(stream->Read(&r)) << i;
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(HostileTest, ShutdownFinishesStreamsWhoseClientNeverReads) {
  TestServerOptions o;
  o.vocab = 8000;  // logits of 2 x 60 tokens: 3.8 MB per answer, beyond what flow control lets through
  o.max_response_bytes = 8 << 20;
  auto s = std::make_unique<TestServer>(o);
  grpc::ClientContext ctx;
  auto stream = s->kserve().ModelStreamInfer(&ctx);
  for (int i = 0; i < 40; ++i) {
    if (!stream->Write(IdsRequest({{0, Tokens(60, i), 0}, {0, Tokens(60, i + 1), 0}}))) break;
  }
  ASSERT_TRUE(s->inference().WaitSubmitted(1));
  absl::SleepFor(absl::Milliseconds(100));
  // Reading paused once the stream owed max_unsent_responses (16) answers it could not send.
  std::printf("submitted before shutdown: %ld of 40\n", static_cast<long>(s->inference().submitted()));
  EXPECT_LT(s->inference().submitted(), 40);
  std::atomic<bool> done{false};
  std::thread stopper([&] {
    s->inference().Shutdown();
    s->server().Shutdown(absl::Milliseconds(200));
    done = true;
  });
  const absl::Time limit = absl::Now() + absl::Seconds(30);
  while (!done && absl::Now() < limit) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_TRUE(done) << "GrpcServer::Shutdown did not return with a stream that never reads";
  stopper.join();
  ctx.TryCancel();
}

// A stream whose client never reads: once a response write has waited the stalled timeout (on the
// injected clock) the stream ends RESOURCE_EXHAUSTED, counted under that code, and the client's
// call is over (its transport still holds unread messages, so it sees the cancellation).
TEST(HostileTest, StreamWhoseClientNeverReadsEndsAfterTheStalledTimeout) {
  FakeClock clock;
  TestServerOptions o;
  o.vocab = 8000;  // 3.8 MB per answer, beyond what flow control lets through
  o.max_response_bytes = 8 << 20;
  o.stream.stalled_timeout = absl::Seconds(30);
  o.clock = &clock;
  TestServer s(o);
  grpc::ClientContext ctx;
  auto stream = s.kserve().ModelStreamInfer(&ctx);
  for (int i = 0; i < 20; ++i) {
    if (!stream->Write(IdsRequest({{0, Tokens(60, i), 0}, {0, Tokens(60, i + 1), 0}}))) break;
  }
  ASSERT_TRUE(s.inference().WaitSubmitted(1));
  const std::string stalled =
      "grpc_server_handled_total{grpc_code=\"ResourceExhausted\",grpc_method=\"ModelStreamInfer\"";
  bool ended = false;
  for (int i = 0; i < 3000 && !ended; ++i) {  // the watch polls the injected clock each second
    clock.Advance(absl::Seconds(31));
    absl::SleepFor(absl::Milliseconds(20));
    ended = absl::StrContains(prometheus::TextSerializer().Serialize(s.registry().Collect()), stalled);
  }
  EXPECT_TRUE(ended) << prometheus::TextSerializer().Serialize(s.registry().Collect());
  inference::ModelStreamInferResponse r;
  while (stream->Read(&r)) {
  }
  EXPECT_FALSE(stream->Finish().ok());
}

TEST(HostileTest, BusyPortIsAnError) {
  TestServer first;
  ServedModel model;
  HealthState health;
  ServiceEnv env;
  env.model = &model;
  env.health = &health;
  RealClock clock;
  env.clock = &clock;
  GrpcServerOptions o;
  o.address = "127.0.0.1:" + std::to_string(first.port());
  auto second = GrpcServer::Start(o, env, &health);
  ASSERT_FALSE(second.ok()) << "a second server on a busy port must not start";
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("port in use"));
}

}  // namespace
}  // namespace reformer::serving::testing
