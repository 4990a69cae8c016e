// REST inference (server/http) in-process on loopback, beside the gRPC services on the same fake
// InferenceService: JSON and binary answers equal gRPC ModelInfer's bit for bit, every documented
// status (400/404/405/413/500/503/504), compute slots and probes, client disconnects, streaming
// (chunked) and HTTP/1.0 framing, metrics, Triton's config/stats, bearer tokens (401, 403, the
// tenant label); and the pure parts: the JSON reader, the decoder and the JSON writer.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/text_serializer.h"
#include "server/http/http_server.h"
#include "server/http/infer_json.h"
#include "server/http/json_writer.h"
#include "server/http/rest_infer_decode.h"
#include "server/security/token_store.h"
#include "tests/server/grpc_test_util.h"
#include "tests/server/http_test_client.h"

namespace reformer::serving::testing {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using json = nlohmann::json;
using ::testing::HasSubstr;

// A row of a [B,T] batch: left padding, tokens, right padding.
struct Row {
  int64_t left = 0;
  std::vector<int32_t> tokens;
  int64_t right = 0;
  int64_t width() const { return left + static_cast<int64_t>(tokens.size()) + right; }
};

struct Batch {
  std::vector<int64_t> ids, mask;
  int64_t b = 0, t = 0;
};

Batch Flatten(const std::vector<Row>& rows) {
  Batch out;
  out.b = static_cast<int64_t>(rows.size());
  out.t = rows[0].width();
  for (const Row& r : rows) {
    for (int64_t i = 0; i < r.left; ++i) out.ids.push_back(7), out.mask.push_back(0);
    for (int32_t tok : r.tokens) out.ids.push_back(tok), out.mask.push_back(1);
    for (int64_t i = 0; i < r.right; ++i) out.ids.push_back(0), out.mask.push_back(0);
  }
  return out;
}

template <typename T>
std::string Bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::string LengthPrefixed(const std::vector<std::string>& texts) {
  std::string raw;
  for (const std::string& s : texts) {
    const uint32_t n = static_cast<uint32_t>(s.size());
    raw.append(reinterpret_cast<const char*>(&n), 4);
    raw += s;
  }
  return raw;
}

// One request as both wires carry it.
struct Case {
  std::string name;
  std::vector<Row> rows;            // ids (+ mask) input, or
  std::vector<std::string> texts;   // text input
  std::vector<std::string> outputs;  // empty = all
};

ModelInferRequest GrpcRequest(const Case& c) {
  ModelInferRequest req;
  req.set_model_name("fake");
  req.set_id("id-" + c.name);
  if (!c.texts.empty()) {
    auto* in = req.add_inputs();
    in->set_name("text");
    in->set_datatype("BYTES");
    in->add_shape(static_cast<int64_t>(c.texts.size()));
    req.add_raw_input_contents(LengthPrefixed(c.texts));
  } else {
    const Batch b = Flatten(c.rows);
    for (const char* name : {"input_ids", "attention_mask"}) {
      auto* in = req.add_inputs();
      in->set_name(name);
      in->set_datatype("INT64");
      in->add_shape(b.b);
      in->add_shape(b.t);
    }
    req.add_raw_input_contents(Bytes(b.ids));
    req.add_raw_input_contents(Bytes(b.mask));
  }
  for (const std::string& o : c.outputs) req.add_outputs()->set_name(o);
  return req;
}

// The same request as REST: JSON (flat or nested data) or binary inputs; outputs JSON or binary.
struct RestBody {
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

json Nested(const std::vector<int64_t>& flat, int64_t b, int64_t t) {
  json rows = json::array();
  for (int64_t r = 0; r < b; ++r) {
    rows.push_back(std::vector<int64_t>(flat.begin() + r * t, flat.begin() + (r + 1) * t));
  }
  return rows;
}

RestBody RestRequest(const Case& c, bool binary_in, bool nested, bool binary_out) {
  json j = {{"id", "id-" + c.name}, {"inputs", json::array()}};
  std::string tail;
  auto add = [&](const std::string& name, const std::string& dt, std::vector<int64_t> shape,
                 json data, const std::string& bytes) {
    json in = {{"name", name}, {"datatype", dt}, {"shape", shape}};
    if (binary_in) {
      in["parameters"] = {{"binary_data_size", bytes.size()}};
      tail += bytes;
    } else {
      in["data"] = std::move(data);
    }
    j["inputs"].push_back(in);
  };
  if (!c.texts.empty()) {
    add("text", "BYTES", {static_cast<int64_t>(c.texts.size())}, c.texts, LengthPrefixed(c.texts));
  } else {
    const Batch b = Flatten(c.rows);
    add("input_ids", "INT64", {b.b, b.t}, nested ? Nested(b.ids, b.b, b.t) : json(b.ids), Bytes(b.ids));
    add("attention_mask", "INT64", {b.b, b.t}, nested ? Nested(b.mask, b.b, b.t) : json(b.mask),
        Bytes(b.mask));
  }
  if (!c.outputs.empty()) {
    j["outputs"] = json::array();
    for (const std::string& o : c.outputs) j["outputs"].push_back({{"name", o}});
  }
  if (binary_out) j["parameters"] = {{"binary_data_output", true}};
  RestBody out;
  out.body = j.dump();
  if (binary_in) {
    out.headers.push_back({"Inference-Header-Content-Length", std::to_string(out.body.size())});
    out.headers.push_back({"Content-Type", "application/octet-stream"});
    out.body += tail;
  } else {
    out.headers.push_back({"Content-Type", "application/json"});
  }
  return out;
}

// A REST output's bytes as the datatype's little-endian values: the binary slice as it is, or the
// JSON numbers converted as a client written from the specification would (float32(number)).
std::string JsonDataBytes(const json& data, const std::string& datatype) {
  std::string out;
  for (const json& v : data) {
    if (datatype == "FP32") {
      const float f = static_cast<float>(v.get<double>());
      out.append(reinterpret_cast<const char*>(&f), 4);
    } else if (datatype == "INT64") {
      const int64_t x = v.get<int64_t>();
      out.append(reinterpret_cast<const char*>(&x), 8);
    } else {
      const int32_t x = v.get<int32_t>();
      out.append(reinterpret_cast<const char*>(&x), 4);
    }
  }
  return out;
}

void ExpectSameAsGrpc(const ModelInferResponse& g, const HttpReply& r, const std::string& what) {
  ASSERT_EQ(r.status, 200) << what << ": " << r.body;
  size_t json_len = r.body.size();
  auto h = r.headers.find("inference-header-content-length");
  if (h != r.headers.end()) json_len = std::stoul(h->second);
  const json j = json::parse(r.body.substr(0, json_len));
  size_t at = json_len;
  EXPECT_EQ(j["model_name"], g.model_name()) << what;
  EXPECT_EQ(j["model_version"], g.model_version()) << what;
  EXPECT_EQ(j["id"], g.id()) << what;
  ASSERT_EQ(j["outputs"].size(), static_cast<size_t>(g.outputs_size())) << what;
  for (int i = 0; i < g.outputs_size(); ++i) {
    const json& o = j["outputs"][i];
    EXPECT_EQ(o["name"], g.outputs(i).name()) << what;
    EXPECT_EQ(o["datatype"], g.outputs(i).datatype()) << what;
    EXPECT_EQ(o["shape"].get<std::vector<int64_t>>(),
              std::vector<int64_t>(g.outputs(i).shape().begin(), g.outputs(i).shape().end()))
        << what;
    std::string bytes;
    if (o.contains("data")) {
      bytes = JsonDataBytes(o["data"], o["datatype"]);
    } else {
      const size_t n = o["parameters"]["binary_data_size"].get<size_t>();
      bytes = r.body.substr(at, n);
      at += n;
    }
    EXPECT_TRUE(bytes == g.raw_output_contents(i)) << what << ": output " << o["name"]
                                                   << " differs from gRPC's";
  }
  EXPECT_EQ(at, r.body.size()) << what;
}

class RestTest : public ::testing::Test {
 protected:
  // `tokens`: required bearer tokens (nullptr = none), the store main hands both adapters.
  void Start(const TestServerOptions& so = {}, HttpOptions ho = {},
             const TokenStore* tokens = nullptr) {
    s_ = std::make_unique<TestServer>(so);
    ho.port = 0;
    ho.bind_address = "127.0.0.1";
    if (ho.num_threads == HttpOptions{}.num_threads) ho.num_threads = 8;
    ServiceEnv env = s_->env();
    env.tokens = tokens;
    auto http = HttpServer::Start(ho, &s_->registry(), env);
    ASSERT_TRUE(http.ok()) << http.status();
    http_ = *std::move(http);
  }
  void TearDown() override {
    if (s_) s_->inference().Shutdown();  // answers held requests, so handler threads return
    http_.reset();
    s_.reset();
  }
  int port() const { return http_->port(); }
  HttpReply Post(const std::string& body, const std::vector<std::pair<std::string, std::string>>& h = {},
                 const std::string& path = "/v2/models/fake/infer") {
    return HttpCall(port(), "POST", path, body, h);
  }
  ModelInferResponse Grpc(const ModelInferRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ModelInferResponse resp;
    const grpc::Status st = s_->kserve().ModelInfer(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }
  std::string Metrics() {
    prometheus::TextSerializer serializer;
    return serializer.Serialize(s_->registry().Collect());
  }

  std::unique_ptr<TestServer> s_;
  std::unique_ptr<HttpServer> http_;
};

std::vector<int32_t> Tokens(int n, int seed) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back((i * 7 + seed * 13 + 1) % 40);
  return t;
}

TEST_F(RestTest, JsonAndBinaryAnswersEqualGrpcBitwise) {
  Start();
  const std::vector<Case> cases = {
      {"padded", {{0, Tokens(5, 1), 2}, {3, Tokens(4, 2), 0}, {1, Tokens(6, 3), 0}}, {}, {}},
      {"text", {}, {"hello world", "a", "REST and gRPC"}, {}},
      {"subset", {{0, Tokens(9, 4), 0}}, {}, {"token_logprobs", "embedding"}},
  };
  for (const Case& c : cases) {
    const ModelInferResponse g = Grpc(GrpcRequest(c));
    for (int variant = 0; variant < 5; ++variant) {
      const bool binary_in = variant >= 3, nested = variant == 1, binary_out = variant % 2 == 0;
      const RestBody r = RestRequest(c, binary_in, nested && c.texts.empty(), binary_out);
      ExpectSameAsGrpc(g, Post(r.body, r.headers),
                       absl::StrCat(c.name, " variant ", variant, binary_in ? " binary in" : " JSON in",
                                    binary_out ? ", binary out" : ", JSON out"));
    }
  }
  // The versioned path, one output binary and one JSON.
  const Case c{"mixed", {{0, Tokens(4, 5), 0}}, {}, {"embedding", "hidden_states"}};
  const ModelInferResponse g = Grpc(GrpcRequest(c));
  json j = json::parse(RestRequest(c, false, false, false).body);
  j["outputs"][0]["parameters"] = {{"binary_data", true}};
  const HttpReply r = Post(j.dump(), {}, "/v2/models/fake/versions/1/infer");
  EXPECT_EQ(r.headers.at("content-type"), "application/octet-stream");
  ExpectSameAsGrpc(g, r, "mixed binary and JSON outputs");
}

TEST_F(RestTest, PriorityAndTimeoutReachTheRequest) {
  Start();
  const HttpReply r = Post(R"({"parameters":{"priority":3,"timeout":2000000},
      "inputs":[{"name":"input_ids","datatype":"INT32","shape":[1,2],"data":[1,2]}],
      "outputs":[{"name":"embedding"}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  const auto last = s_->inference().last();
  EXPECT_EQ(last->priority, 3);
  EXPECT_EQ(last->method, "REST.ModelInfer");
  EXPECT_LT(last->deadline - absl::Now(), absl::Seconds(2.1));
  EXPECT_GT(last->deadline - absl::Now(), absl::Seconds(1));
  EXPECT_FALSE(json::parse(r.body).contains("id"));  // no id given, none echoed
}

TEST_F(RestTest, LongJsonStreamsChunkedAndHttp10GetsContentLength) {
  TestServerOptions so;
  so.vocab = 1000;
  Start(so);
  const std::string body = RestRequest({"long", {{0, Tokens(60, 1), 0}}, {}, {"logits"}}, false,
                                       false, false).body;
  const HttpReply r11 = Post(body);
  ASSERT_EQ(r11.status, 200);
  EXPECT_TRUE(r11.chunked);  // 60 x 1000 floats: far more than one 64 KiB piece
  const HttpReply r10 = HttpCall(port(), "POST", "/v2/models/fake/infer", body, {}, "HTTP/1.0");
  ASSERT_EQ(r10.status, 200);
  EXPECT_FALSE(r10.chunked);
  EXPECT_EQ(r10.headers.at("content-length"), std::to_string(r10.body.size()));
  // Same JSON either way, apart from the timings.
  json a = json::parse(r11.body), b = json::parse(r10.body);
  a.erase("parameters");
  b.erase("parameters");
  EXPECT_EQ(a, b);
  // A short answer goes out whole, with Content-Length.
  const HttpReply small = Post(RestRequest({"s", {{0, Tokens(3, 1), 0}}, {}, {"embedding"}}, false,
                                           false, false).body);
  EXPECT_FALSE(small.chunked);
  EXPECT_EQ(small.headers.at("content-length"), std::to_string(small.body.size()));
}

void ExpectError(const HttpReply& r, int status, const std::vector<std::string>& fragments) {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_EQ(r.headers.count("content-type") ? r.headers.at("content-type") : "", "application/json");
  const json j = json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(j.is_object() && j.contains("error")) << r.body;
  for (const std::string& f : fragments) EXPECT_THAT(j["error"].get<std::string>(), HasSubstr(f));
}

const char kIds[] = R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,3],"data":[1,2,3]}],
    "outputs":[{"name":"embedding"}]})";

TEST_F(RestTest, ClientErrors) {
  TestServerOptions so;
  so.max_response_bytes = 4096;
  Start(so);
  ExpectError(Post("{\"inputs\": ["), 400, {"not valid JSON"});
  ExpectError(Post(""), 400, {"not valid JSON"});
  ExpectError(Post("[1]"), 400, {"JSON object"});
  ExpectError(Post(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,4],"data":[1,2,3]}]})"),
              400, {"'data' has 3 elements", "needs 4"});
  ExpectError(Post(R"({"inputs":[{"name":"input_ids","datatype":"FP32","shape":[1,1],"data":[1]}]})"),
              400, {"datatype FP32"});
  ExpectError(Post(R"({"inputs":[{"name":"ids","datatype":"INT64","shape":[1,1],"data":[1]}]})"), 400,
              {"unknown input 'ids'"});
  ExpectError(Post(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,2],"data":[1,2.5]}]})"),
              400, {"element 1 is 2.5, not an integer"});
  ExpectError(Post(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,2],"data":[1,99]}]})"),
              400, {"token id 99 outside [0, 40)"});
  ExpectError(Post(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,1],"data":[1]}],
                       "outputs":[{"name":"attention"}]})"),
              400, {"unknown output 'attention'"});
  ExpectError(Post(R"({"parameters":{"priority":-1},"inputs":[]})"), 400, {"priority"});
  std::string logits = R"({"outputs":[{"name":"logits"}],"inputs":[{"name":"input_ids","datatype":"INT64",)"
                       R"("shape":[1,64],"data":[1)";
  for (int i = 1; i < 64; ++i) logits += ",1";
  ExpectError(Post(logits + "]}]}"),  // 64 x 40 floats: 10240 bytes
              413, {"--max_response_bytes=4096"});
  ExpectError(Post(kIds, {}, "/v2/models/gpt/infer"), 404, {"'gpt'", "'fake'"});
  ExpectError(Post(kIds, {}, "/v2/models/fake/versions/2/infer"), 404, {"version"});
  const HttpReply get = HttpCall(port(), "GET", "/v2/models/fake/infer");
  EXPECT_EQ(get.status, 405);
  EXPECT_EQ(get.headers.at("allow"), "POST");
  // Binary data: sizes must agree with the body exactly, and the header with the body.
  const std::string header =
      R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,2],"parameters":{"binary_data_size":16}}]})";
  const std::string ids = Bytes(std::vector<int64_t>{1, 2});
  auto binary = [&](const std::string& tail, const std::string& length) {
    return Post(header + tail, {{"Inference-Header-Content-Length", length}});
  };
  EXPECT_EQ(binary(ids, std::to_string(header.size())).status, 200);
  ExpectError(binary(ids.substr(0, 12), std::to_string(header.size())), 400, {"add up to 16 bytes", "12 bytes"});
  ExpectError(binary(ids + "x", std::to_string(header.size())), 400, {"17 bytes"});
  ExpectError(binary(ids, "99999"), 400, {"Inference-Header-Content-Length 99999 is beyond the body"});
  ExpectError(binary(ids, "-3"), 400, {"not a byte count"});
  ExpectError(Post(header), 400, {"no Inference-Header-Content-Length"});
  ExpectError(Post(header + ids), 400, {"not valid JSON"});  // without the header it is all JSON
  EXPECT_EQ(s_->inference().submitted(), 1);  // the good request only
}

TEST_F(RestTest, BodyOverTheLimitIs413BeforeItIsRead) {
  HttpOptions ho;
  ho.rest.max_body_bytes = 1000;
  Start({}, ho);
  const HttpReply r = Post(std::string(5000, ' ') + kIds);
  ExpectError(r, 413, {"5", "above the limit of 1000 bytes"});
  EXPECT_EQ(r.headers.at("connection"), "close");
  // Chunked bodies are counted as they arrive.
  const int fd = ConnectLoopback(port());
  std::string req = "POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 4; ++i) req += "1f4\r\n" + std::string(500, ' ') + "\r\n";
  req += "0\r\n\r\n";
  ASSERT_TRUE(SendAll(fd, req));
  ExpectError(ParseReply(ReadAll(fd)), 413, {"above the limit"});
  close(fd);
  EXPECT_EQ(s_->inference().submitted(), 0);
}

// --http_max_body_bytes counts data only: the chunked framing around it is bounded too (QA7: 666 MiB
// of trailers after a small body were read and dropped).
TEST_F(RestTest, ChunkedFramingIsBounded) {
  Start();
  const std::string body = kIds;
  const std::string head =
      "POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
      "Transfer-Encoding: chunked\r\n\r\n";
  auto send = [&](const std::string& req) {
    const int fd = ConnectLoopback(port());
    EXPECT_TRUE(SendAll(fd, req));
    const HttpReply r = ParseReply(ReadAll(fd));
    close(fd);
    return r;
  };
  // One-byte chunks with a trailer: legitimate, served.
  std::string ok = head;
  for (char c : body) ok += "1\r\n" + std::string(1, c) + "\r\n";
  ok += "0\r\nX-Checksum: 1\r\n\r\n";
  EXPECT_EQ(send(ok).status, 200);
  // 68 KB of trailers after ~100 bytes of data.
  std::string trailers = head + absl::StrCat(absl::Hex(body.size())) + "\r\n" + body + "\r\n0\r\n";
  for (int i = 0; i < 17; ++i) trailers += "X-T: " + std::string(4000, 'y') + "\r\n";
  ExpectError(send(trailers + "\r\n"), 400, {"framing", "above 64 KiB + 8 per data byte"});
  // Long extensions on tiny chunks.
  std::string extensions = head;
  for (char c : body) extensions += "1;e=" + std::string(1000, 'z') + "\r\n" + std::string(1, c) + "\r\n";
  ExpectError(send(extensions + "0\r\n\r\n"), 400, {"framing"});
  EXPECT_EQ(s_->inference().submitted(), 1);  // the legitimate one only
}

TEST_F(RestTest, ServiceOutcomesMapToStatuses) {
  Start();
  s_->inference().SetFail(absl::InternalError("engine returned garbage"));
  ExpectError(Post(kIds), 500, {"engine returned garbage"});
  s_->inference().SetFail(absl::ResourceExhaustedError("cannot allocate 9 GiB"));
  HttpReply r = Post(kIds);
  ExpectError(r, 503, {"cannot allocate"});  // the server ran short: retry later
  EXPECT_EQ(r.headers.at("retry-after"), "1");
  s_->inference().SetFail(absl::OkStatus());
  s_->inference().SetMaxQueue(0);
  r = Post(kIds);
  ExpectError(r, 503, {"queue full"});
  EXPECT_EQ(r.headers.at("retry-after"), "1");
  s_->inference().SetMaxQueue(100);
  s_->inference().SetHold(true);  // expires in the queue
  ExpectError(Post(R"({"parameters":{"timeout":50000},"inputs":[{"name":"input_ids","datatype":"INT64",
                       "shape":[1,1],"data":[1]}]})"),
              504, {"deadline"});
  s_->inference().SetHold(false);
  s_->health().StartDraining();
  r = Post(kIds);
  ExpectError(r, 503, {"shutting down"});
  EXPECT_EQ(r.headers.at("retry-after"), "1");
}

TEST_F(RestTest, BusySlotsAnswer503WhileProbesAndMetricsAnswer) {
  HttpOptions ho;
  ho.num_threads = 6;
  ho.infer_threads = 2;
  Start({}, ho);
  s_->inference().SetHold(true);
  std::vector<std::thread> held;
  std::vector<HttpReply> replies(2);
  for (int i = 0; i < 2; ++i) held.emplace_back([&, i] { replies[i] = Post(kIds); });
  ASSERT_TRUE(s_->inference().WaitSubmitted(2));
  const HttpReply busy = Post(kIds);
  ExpectError(busy, 503, {"all 2 REST inference slots are busy"});
  EXPECT_EQ(busy.headers.at("retry-after"), "1");
  EXPECT_EQ(busy.headers.at("connection"), "close");
  for (const char* path : {"/readyz", "/metrics", "/v2/models/fake", "/v2/models/fake/stats"}) {
    EXPECT_EQ(HttpCall(port(), "GET", path).status, 200) << path;
  }
  s_->inference().SetHold(false);
  for (std::thread& t : held) t.join();
  for (const HttpReply& r : replies) EXPECT_EQ(r.status, 200);
  EXPECT_EQ(Post(kIds).status, 200);  // the slots came back
}

TEST_F(RestTest, ClientThatDisconnectsCancelsItsRequest) {
  Start();
  s_->inference().SetHold(true);
  const int fd = ConnectLoopback(port());
  ASSERT_TRUE(SendAll(fd, absl::StrCat("POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Length: ",
                                       std::strlen(kIds), "\r\n\r\n", kIds)));
  ASSERT_TRUE(s_->inference().WaitSubmitted(1));
  const auto submitted = s_->inference().last();
  EXPECT_FALSE(submitted->cancelled->load());
  close(fd);
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (!submitted->cancelled->load() && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_TRUE(submitted->cancelled->load());
  // The service answers CANCELLED; the request metric says so.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!absl::StrContains(Metrics(), "reformer_requests_total{code=\"Canceled\",method=\"REST.ModelInfer\",tenant=\"anonymous\"} 1") &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(Metrics(), HasSubstr("reformer_requests_total{code=\"Canceled\",method=\"REST.ModelInfer\",tenant=\"anonymous\"} 1"));
}

constexpr char kAliceToken[] = "alice-0123456789abcdef";
constexpr char kBobToken[] = "bob-0123456789abcdef";

// A tokens file (alice, bob) for the test's lifetime.
class TokensFile {
 public:
  TokensFile()
      : path_(std::filesystem::temp_directory_path() /
              ("http_rest_tokens_" + std::to_string(getpid()))) {
    std::ofstream(path_, std::ios::binary)
        << "alice:" << kAliceToken << "\nbob:" << kBobToken << "\n";
  }
  ~TokensFile() { std::filesystem::remove(path_); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

std::vector<std::pair<std::string, std::string>> Bearer(const std::string& token) {
  return {{"Authorization", "Bearer " + token}};
}

std::string RequestsTotal(const std::string& code, const std::string& tenant) {
  return absl::StrCat("reformer_requests_total{code=\"", code,
                      "\",method=\"REST.ModelInfer\",tenant=\"", tenant, "\"} ");
}

TEST_F(RestTest, BearerTokensGuardInferenceConfigAndStatsButNotProbes) {
  const TokensFile file;
  absl::StatusOr<std::unique_ptr<TokenStore>> tokens = TokenStore::Load(file.path());
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  Start({}, {}, tokens->get());
  for (const char* path : {"/metrics", "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}) {
    EXPECT_EQ(HttpCall(port(), "GET", path).status, 200) << path;
  }
  // No token, then a wrong one: 401 before the body is looked at (it is not even JSON here).
  HttpReply r = Post("not json");
  ExpectError(r, 401, {"Bearer"});
  EXPECT_EQ(r.headers.at("www-authenticate"), "Bearer realm=\"reformer-serve\"");
  EXPECT_EQ(r.headers.at("connection"), "close");  // its body was never read
  r = Post(kIds, Bearer("wrong-token-0123456789"), "/v2/models/fake/versions/1/infer");
  ExpectError(r, 401, {});
  EXPECT_THAT(r.headers.at("www-authenticate"), HasSubstr("error=\"invalid_token\""));
  EXPECT_THAT(r.body, ::testing::Not(HasSubstr("wrong-token")));
  for (const char* path : {"/v2", "/v2/models/fake", "/v2/models/fake/ready",
                           "/v2/models/fake/config", "/v2/models/fake/stats", "/v2/models/stats"}) {
    ExpectError(HttpCall(port(), "GET", path), 401, {});
    EXPECT_EQ(HttpCall(port(), "GET", path, "", Bearer(kBobToken)).status, 200) << path;
  }
  // A refused client that waits for 100 Continue gets the 401 instead, and sends nothing.
  const int fd = ConnectLoopback(port());
  ASSERT_TRUE(SendAll(fd, "POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\n"
                          "Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n"));
  shutdown(fd, SHUT_WR);
  ExpectError(ParseReply(ReadAll(fd)), 401, {});
  close(fd);
  // A refused client that sends a large body anyway can read its answer.
  ExpectError(Post(std::string(4 << 20, ' ')), 401, {});
  EXPECT_EQ(s_->inference().submitted(), 0);
  // Admitted: the tenant labels the request metrics, refusals count as anonymous.
  EXPECT_EQ(Post(kIds, Bearer(kAliceToken)).status, 200);
  EXPECT_EQ(Post(kIds, {{"Authorization", absl::StrCat("bearer ", kAliceToken)}}).status, 200);
  ExpectError(Post("{", Bearer(kBobToken)), 400, {"not valid JSON"});
  EXPECT_EQ(s_->inference().submitted(), 2);
  const std::string m = Metrics();
  EXPECT_THAT(m, HasSubstr(RequestsTotal("OK", "alice") + "2"));
  EXPECT_THAT(m, HasSubstr(RequestsTotal("InvalidArgument", "bob") + "1"));
  EXPECT_THAT(m, HasSubstr(RequestsTotal("Unauthenticated", "anonymous") + "4"));
  EXPECT_THAT(m, ::testing::Not(HasSubstr("tenant=\"wrong")));
}

TEST_F(RestTest, ApiOffAnswers403ButProbesAndMetrics) {
  HttpOptions ho;
  ho.api = false;  // --http_api auto with TLS on the gRPC port
  Start({}, ho);
  for (const char* path : {"/metrics", "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}) {
    EXPECT_EQ(HttpCall(port(), "GET", path).status, 200) << path;
  }
  ExpectError(Post(kIds), 403, {"--http_api"});
  ExpectError(HttpCall(port(), "GET", "/v2/models/fake/config"), 403, {"--http_api"});
  EXPECT_EQ(s_->inference().submitted(), 0);
  EXPECT_THAT(Metrics(), HasSubstr(RequestsTotal("PermissionDenied", "anonymous") + "1"));
}

TEST_F(RestTest, MetricsStatsAndConfigAgreeWithGrpc) {
  Start();
  ASSERT_EQ(Post(kIds).status, 200);
  ASSERT_EQ(Post("{").status, 400);
  const std::string m = Metrics();
  EXPECT_THAT(m, HasSubstr("reformer_requests_total{code=\"OK\",method=\"REST.ModelInfer\",tenant=\"anonymous\"} 1"));
  EXPECT_THAT(m, HasSubstr("reformer_requests_total{code=\"InvalidArgument\",method=\"REST.ModelInfer\",tenant=\"anonymous\"} 1"));
  EXPECT_THAT(m, HasSubstr("reformer_rejected_total{reason=\"invalid\"} 1"));
  // Statistics: the same snapshot as gRPC ModelStatistics.
  grpc::ClientContext ctx;
  inference::ModelStatisticsRequest sreq;
  inference::ModelStatisticsResponse sresp;
  ASSERT_TRUE(s_->kserve().ModelStatistics(&ctx, sreq, &sresp).ok());
  const json stats = json::parse(HttpCall(port(), "GET", "/v2/models/fake/stats").body)["model_stats"][0];
  const auto& g = sresp.model_stats(0);
  EXPECT_EQ(stats["inference_count"], g.inference_count());
  EXPECT_EQ(stats["execution_count"], g.execution_count());
  EXPECT_EQ(stats["inference_stats"]["success"]["count"], g.inference_stats().success().count());
  EXPECT_EQ(stats["inference_stats"]["success"]["ns"], g.inference_stats().success().ns());
  EXPECT_EQ(stats["inference_stats"]["fail"]["count"], g.inference_stats().fail().count());
  EXPECT_EQ(g.inference_stats().success().count(), 1u);
  // Configuration: the same as gRPC ModelConfig.
  grpc::ClientContext cctx;
  inference::ModelConfigRequest creq;
  creq.set_name("fake");
  inference::ModelConfigResponse cresp;
  ASSERT_TRUE(s_->kserve().ModelConfig(&cctx, creq, &cresp).ok());
  const json config = json::parse(HttpCall(port(), "GET", "/v2/models/fake/config").body);
  const auto& c = cresp.config();
  EXPECT_EQ(config["name"], c.name());
  EXPECT_EQ(config["platform"], c.platform());
  EXPECT_EQ(config["max_batch_size"], c.max_batch_size());
  ASSERT_EQ(config["input"].size(), static_cast<size_t>(c.input_size()));
  for (int i = 0; i < c.input_size(); ++i) {
    EXPECT_EQ(config["input"][i]["name"], c.input(i).name());
    EXPECT_EQ(config["input"][i]["data_type"], inference::DataType_Name(c.input(i).data_type()));
    EXPECT_EQ(config["input"][i]["dims"].get<std::vector<int64_t>>(),
              std::vector<int64_t>(c.input(i).dims().begin(), c.input(i).dims().end()));
    EXPECT_EQ(config["input"][i]["optional"], c.input(i).optional());
  }
  ASSERT_EQ(config["output"].size(), static_cast<size_t>(c.output_size()));
  for (int i = 0; i < c.output_size(); ++i) {
    EXPECT_EQ(config["output"][i]["name"], c.output(i).name());
    EXPECT_EQ(config["output"][i]["data_type"], inference::DataType_Name(c.output(i).data_type()));
  }
  // Server metadata: the same extensions.
  grpc::ClientContext mctx;
  inference::ServerMetadataResponse meta;
  ASSERT_TRUE(s_->kserve().ServerMetadata(&mctx, {}, &meta).ok());
  const json rest_meta = json::parse(HttpCall(port(), "GET", "/v2").body);
  EXPECT_EQ(rest_meta["extensions"].get<std::vector<std::string>>(),
            std::vector<std::string>(meta.extensions().begin(), meta.extensions().end()));
  EXPECT_THAT(rest_meta["extensions"].get<std::vector<std::string>>(), ::testing::Contains("binary_tensor_data"));
}

// --- The pure parts ------------------------------------------------------------------------------

ServedModel TinyModel(const Tokenizer* tokenizer) {
  ServedModel m;
  m.name = "tiny";
  m.config.vocab_size = 50;
  m.config.hidden_size = 2;
  m.config.max_position_embeddings = 16;
  m.tokenizer = tokenizer;
  return m;
}

absl::StatusOr<DecodedRestInfer> Decode(const std::string& body,
                                        std::optional<std::string> header_length = std::nullopt) {
  static const ByteTokenizer tokenizer;
  static const ServedModel model = TinyModel(&tokenizer);
  const RequestLimits limits{16, 50, 64, 1 << 20};
  std::optional<absl::string_view> h;
  if (header_length) h = *header_length;
  return DecodeRestInfer({"tiny", "", body, h}, model, limits);
}

void ExpectInvalid(const std::string& body, const std::string& fragment) {
  absl::StatusOr<DecodedRestInfer> d = Decode(body);
  ASSERT_FALSE(d.ok()) << body;
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << d.status();
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(fragment)) << body;
}

TEST(RestDecodeTest, NestedFlatAndRowMajor) {
  for (const char* data : {"[[1,2,3],[4,5,6]]", "[1,2,3,4,5,6]"}) {
    auto d = Decode(absl::StrCat(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[2,3],"data":)",
                                 data, "}]}"));
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->request->documents.size(), 2);
    EXPECT_EQ(d->request->documents[1][0], 4);
    EXPECT_EQ(d->request->outputs.size(), 4u);  // all outputs of an ids request
  }
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[2,3],"data":[[1,2],[3,4,5,6]]}]})",
                "nested 'data' does not have the shape [2,3]");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[3,2],"data":[[1,2,3],[4,5,6]]}]})",
                "nested 'data' does not have the shape [3,2]");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[2,2],"data":[[1,2],3,4]}]})",
                "different nesting levels");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,2],"data":[1,{"a":2}]}]})",
                "not objects");
}

TEST(RestDecodeTest, KeysInAnyOrderParametersOpenOtherKeysRefused) {
  auto d = Decode(R"({"outputs":[{"parameters":{"binary_data":true,"x":[1]},
      "name":"embedding"}],"inputs":[{"data":["ab","c"],"shape":[2],"datatype":"BYTES","name":"text",
      "parameters":{"foo":"bar"}}],"id":"x","parameters":{"something":{"a":1}}})");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->request->id, "x");
  EXPECT_TRUE(d->request->text_input);
  EXPECT_EQ(d->request->documents.size(), 2);
  EXPECT_EQ(d->binary, std::vector<bool>{true});
  // A key the protocol does not define for its object is an error naming it (QA: "output", a typo for
  // "outputs", was dropped and every output sent), at every level, whatever its value.
  const std::string text = R"("inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["ab"]}])";
  ExpectInvalid(R"({"output":[{"name":"embedding"}],)" + text + "}",
                "the request: unknown key 'output' (it may hold id, parameters, inputs, outputs)");
  ExpectInvalid(R"({"extra":1,)" + text + "}", "the request: unknown key 'extra'");
  ExpectInvalid(R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["ab"],"dtype":"x"}]})",
                "input 'text': unknown key 'dtype' (it may hold name, shape, datatype, parameters, data)");
  ExpectInvalid(R"({"outputs":[{"name":"embedding","binary":{}}],)" + text + "}",
                "output 'embedding': unknown key 'binary' (it may hold name, parameters)");
  ExpectInvalid(R"({"outputs":[{"name":"embedding","parameters":{"classification":2}}],)" + text + "}",
                "output 'embedding': parameter 'classification' (Triton's classification extension) is not "
                "supported");
}

TEST(RestDecodeTest, MalformedShapesTypesAndBombs) {
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,1099511627776],"data":[1]}]})",
                "'data' has 1 elements, shape [1,1099511627776] needs 1099511627776");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1099511627776,1099511627776],
                "data":[1]}]})", "too many elements");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[18446744073709551615,2],"data":[1]}]})",
                "too many elements");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,-2],"data":[1]}]})",
                "negative dimension");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,1],"data":[1e999]}]})",
                "not valid JSON");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,1],"data":[18446744073709551616]}]})",
                "not an integer");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,1],"data":[9223372036854775808]}]})",
                "outside INT64");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT32","shape":[1,1],"data":[2147483648]}]})",
                "outside INT32");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,1],"data":[true]}]})",
                "is a boolean");
  ExpectInvalid(R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":[7]}]})", "is a number");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","data":[1]}]})", "has no 'shape'");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,1]}]})",
                "neither 'data' nor parameters.binary_data_size");
  ExpectInvalid(R"({"inputs":[{"name":"input_ids","name":"x","datatype":"INT64","shape":[1,1],"data":[1]}]})",
                "gives 'name' twice");
  ExpectInvalid(R"({"id":5,"inputs":[]})", "'id' must be a string");
  ExpectInvalid(R"({"inputs":{}})", "'inputs' must be a list");
  ExpectInvalid(R"({"parameters":{"timeout":1.5},"inputs":[]})", "'timeout' must be a non-negative integer");
  ExpectInvalid(R"({"outputs":[{"parameters":{"binary_data":1},"name":"logits"}],"inputs":[]})",
                "'binary_data' must be a boolean");
  // Rows are held to max_tokens_per_request (64) before the documents are sized.
  std::string many = R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[100,1],"data":[1)";
  for (int i = 1; i < 100; ++i) many += ",1";
  ExpectInvalid(many + "]}]}", "100 rows");
  // Nesting, and the counts that could inflate memory, are capped while reading.
  ExpectInvalid(std::string(100000, '[') + std::string(100000, ']'), "JSON object");
  ExpectInvalid(R"({"inputs":[{"data":)" + std::string(100000, '[') + std::string(100000, ']') + "}]}",
                "deeper than 32 levels");
  std::string inputs = R"({"inputs":[)";
  for (int i = 0; i < 17; ++i) inputs += i ? ",{}" : "{}";
  ExpectInvalid(inputs + "]}", "more than 16 inputs");
  std::string rank = R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1)";
  for (int i = 0; i < 40; ++i) rank += ",1";
  ExpectInvalid(rank + "]}]}", "more than 32 dimensions");
}

TEST(RestDecodeTest, BinaryTensors) {
  const std::string header =
      R"({"inputs":[{"name":"input_ids","datatype":"INT32","shape":[1,3],"parameters":{"binary_data_size":12}},)"
      R"({"name":"attention_mask","datatype":"BOOL","shape":[1,3],"parameters":{"binary_data_size":3}}],)"
      R"("parameters":{"binary_data_output":true},"outputs":[{"name":"embedding"},)"
      R"({"name":"logits","parameters":{"binary_data":false}}]})";
  const std::string body = header + Bytes(std::vector<int32_t>{0, 5, 6}) + std::string("\0\1\1", 3);
  auto d = Decode(body, std::to_string(header.size()));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->request->left, std::vector<int64_t>{1});
  EXPECT_EQ(d->request->documents[0][0], 5);
  EXPECT_EQ(d->binary, (std::vector<bool>{true, false}));
  const std::string short_header =  // binary_data_size 8 for [1,3] INT32
      absl::StrReplaceAll(header, {{"\"binary_data_size\":12", "\"binary_data_size\":8"}});
  auto bad = Decode(short_header + Bytes(std::vector<int32_t>{0, 5}) + std::string("\0\1\1", 3),
                    std::to_string(short_header.size()));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("binary_data_size is 8 bytes, shape [1,3] of INT32 needs 12"));
  // BYTES: 4-byte little-endian lengths, filling the slice exactly.
  const std::string text = LengthPrefixed({"ab", "cde"});
  const std::string th = absl::StrCat(R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[2],)",
                                      R"("parameters":{"binary_data_size":)", text.size(), "}}]}");
  auto t = Decode(th + text, std::to_string(th.size()));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->request->documents.total_tokens(), 5);
  const std::string th3 = absl::StrCat(R"({"inputs":[{"name":"text","datatype":"BYTES","shape":[3],)",
                                       R"("parameters":{"binary_data_size":)", text.size(), "}}]}");
  auto t3 = Decode(th3 + text, std::to_string(th3.size()));
  ASSERT_FALSE(t3.ok());
  EXPECT_THAT(std::string(t3.status().message()), HasSubstr("binary BYTES data: element 2 runs past the end"));
}

// Bytes flipped, inserted, deleted and cut in valid bodies: the decoder always returns, with OK or
// a client error (never INTERNAL), and an OK request passes its checks (a cheap stand-in for the
// fuzzer slot fuzz/ will have: DecodeRestInfer is a pure function of its input).
TEST(RestDecodeTest, MutatedBodiesAreAnsweredNeverCrash) {
  const std::string ids_header =
      R"({"inputs":[{"name":"input_ids","datatype":"INT32","shape":[2,3],"parameters":{"binary_data_size":24}},)"
      R"({"name":"attention_mask","datatype":"BOOL","shape":[2,3],"data":[[1,1,0],[0,1,1]]}],)"
      R"("outputs":[{"name":"embedding","parameters":{"binary_data":true}}],"parameters":{"priority":2}})";
  const std::string text_header =
      R"({"id":"t","inputs":[{"name":"text","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":13}}]})";
  struct Seed {
    std::string body;
    size_t header;
  };
  const std::vector<Seed> seeds = {
      {ids_header + Bytes(std::vector<int32_t>{1, 2, 3, 4, 5, 6}), ids_header.size()},
      {text_header + LengthPrefixed({"abc", "de"}), text_header.size()},
      {R"({"inputs":[{"name":"input_ids","datatype":"INT64","shape":[2,2],"data":[[1,2],[3,4]]}]})", 0},
  };
  std::mt19937 rng(12345);
  int ok = 0;
  for (int i = 0; i < 30000; ++i) {
    const Seed& seed = seeds[i % seeds.size()];
    std::string body = seed.body;
    for (int m = 0, n = 1 + static_cast<int>(rng() % 4); m < n && !body.empty(); ++m) {
      const size_t at = rng() % body.size();
      switch (rng() % 4) {
        case 0:
          body[at] = static_cast<char>(rng());
          break;
        case 1:
          body.insert(at, 1, "[]{},:\"0123456789-e.\"x"[rng() % 22]);
          break;
        case 2:
          body.erase(at, 1 + rng() % 8);
          break;
        default:
          body.resize(at);
      }
    }
    absl::StatusOr<DecodedRestInfer> d =
        Decode(body, seed.header > 0 ? std::optional<std::string>(std::to_string(seed.header))
                                     : std::nullopt);
    if (d.ok()) {
      ++ok;
      ASSERT_EQ(d->binary.size(), d->request->outputs.size());
      for (int64_t doc = 0; doc < d->request->documents.size(); ++doc) {
        ASSERT_LE(d->request->documents.length(doc), 64);  // held to the request's token limit
      }
    } else {
      ASSERT_TRUE(absl::IsInvalidArgument(d.status()) || absl::IsNotFound(d.status()))
          << d.status() << " for " << absl::CEscape(body);
    }
  }
  EXPECT_GT(ok, 0);  // some mutations stay valid requests
}

TEST(JsonWriterTest, FloatsReadBackToTheSameBits) {
  std::mt19937 rng(7);
  std::string text;
  StringSink sink(&text);
  std::vector<float> values;
  for (int i = 0; i < 200000; ++i) {
    uint32_t bits = rng();
    float f;
    std::memcpy(&f, &bits, 4);
    if (std::isfinite(f)) values.push_back(f);
  }
  for (float f : {0.f, -0.f, 1.f, 1e-45f, 3.4028235e38f, -1.1754944e-38f, 0.1f}) values.push_back(f);
  {
    JsonWriter w(&sink);
    w.FloatArray(values.data(), static_cast<int64_t>(values.size()));
    w.Flush();
  }
  // A client reading JSON numbers as doubles and narrowing to float32 gets the engine's bits.
  const json j = json::parse(text);
  ASSERT_EQ(j.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const float back = static_cast<float>(j[i].get<double>());
    ASSERT_EQ(std::memcmp(&back, &values[i], 4), 0) << values[i] << " written as " << j[i].dump();
  }
}

TEST(JsonWriterTest, NonFiniteIsNullAndStringsAreEscaped) {
  std::string text;
  StringSink sink(&text);
  JsonWriter w(&sink);
  const float v[] = {NAN, INFINITY, 1.5f};
  w.FloatArray(v, 3);
  w.Raw(",");
  w.String(std::string("a\"\\\n\x01 \xe2\x82\xac \xff", 11));
  w.Flush();
  EXPECT_EQ(text, "[null,null,1.5],\"a\\\"\\\\\\u000a\\u0001 \xe2\x82\xac \\ufffd\"");
}

}  // namespace
}  // namespace reformer::serving::testing
