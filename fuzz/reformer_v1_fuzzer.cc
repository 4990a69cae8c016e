// Fuzz target: reformer.v1 requests as the gRPC service receives them (server/grpc/reformer_service.cc
// Score, Embed, Tokenize): documents (text or ids) decoded into the request object
// (server/request/), the one Validate(), the response buffers written by the fake engine
// (grpc_fuzz_env.h) and read back into the answer. Input: one selector byte (method = byte % 3),
// then the bytes the raw method receives (they need not be a valid message: that is answered
// INVALID_ARGUMENT), the response read back from the bytes the method wrote.
// Checks: each RPC finishes exactly once with an expected code (never INTERNAL/UNKNOWN); an OK
// answer has one score/embedding/token list per document or text, of consistent sizes, and each
// score sums exactly its own document's log-probabilities (tokens 1..n-1, each kWritten).
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/grpc_fuzz_env.h"
#include "proto/reformer.pb.h"
#include "server/grpc/reformer_service.h"

namespace {

namespace v1 = ::reformer::v1;
using reformer::fuzz::Check;

grpc::ByteBuffer Bytes(const uint8_t* data, size_t size) {
  grpc::Slice slice(data, size);
  return grpc::ByteBuffer(&slice, 1);
}

// The message in `bytes` (what a client would parse).
template <typename Message>
Message Parsed(grpc::ByteBuffer& bytes) {
  std::vector<grpc::Slice> slices;
  Check(bytes.Dump(&slices).ok(), "the response bytes are readable");
  std::string all;
  for (const grpc::Slice& s : slices) all.append(reinterpret_cast<const char*>(s.begin()), s.size());
  Message m;
  Check(m.ParseFromString(all), "the response is its message");
  return m;
}

// A valid request is one the method could parse; an invalid one must be answered INVALID_ARGUMENT.
template <typename Request>
bool ParseOrExpectInvalid(const uint8_t* data, size_t size, const grpc::Status& status, Request* request) {
  if (request->ParseFromArray(data, static_cast<int>(size))) return true;
  Check(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT, "an unparseable message is INVALID_ARGUMENT");
  return false;
}

void Score(reformer::serving::ReformerApiService& service, const uint8_t* data, size_t size, int64_t width) {
  (void)width;
  grpc::CallbackServerContext ctx;
  const grpc::ByteBuffer raw = Bytes(data, size);
  grpc::ByteBuffer out;
  reformer::fuzz::FakeUnaryCall call;
  const grpc::Status status = call.Complete(service.Score(&ctx, &raw, &out));
  Check(reformer::fuzz::ExpectedCode(status.error_code()), "Score answers an expected code");
  v1::ScoreRequest request;
  if (!ParseOrExpectInvalid(data, size, status, &request) || !status.ok()) return;
  const v1::ScoreResponse response = Parsed<v1::ScoreResponse>(out);
  Check(response.scores_size() == request.documents_size(), "one score per document");
  for (const auto& s : response.scores()) {
    Check(s.num_tokens() > 0, "scored documents are not empty");
    Check(s.total_logprob() == reformer::fuzz::kWritten * static_cast<double>(s.num_tokens() - 1),
          "a score sums its own document's log-probabilities");
    Check(!request.return_token_logprobs() || s.token_logprobs_size() == s.num_tokens(),
          "one log-probability per token");
  }
}

void Embed(reformer::serving::ReformerApiService& service, const uint8_t* data, size_t size, int64_t width) {
  grpc::CallbackServerContext ctx;
  const grpc::ByteBuffer raw = Bytes(data, size);
  grpc::ByteBuffer out;
  reformer::fuzz::FakeUnaryCall call;
  const grpc::Status status = call.Complete(service.Embed(&ctx, &raw, &out));
  Check(reformer::fuzz::ExpectedCode(status.error_code()), "Embed answers an expected code");
  v1::EmbedRequest request;
  if (!ParseOrExpectInvalid(data, size, status, &request) || !status.ok()) return;
  const v1::EmbedResponse response = Parsed<v1::EmbedResponse>(out);
  Check(response.embeddings_size() == request.documents_size(), "one embedding per document");
  for (const auto& e : response.embeddings()) Check(e.values_size() == width, "embedding width 2H");
}

void Tokenize(reformer::serving::ReformerApiService& service, const uint8_t* data, size_t size, int64_t) {
  grpc::CallbackServerContext ctx;
  const grpc::ByteBuffer raw = Bytes(data, size);
  grpc::ByteBuffer out;
  reformer::fuzz::FakeUnaryCall call;
  const grpc::Status status = call.Complete(service.Tokenize(&ctx, &raw, &out));
  Check(reformer::fuzz::ExpectedCode(status.error_code()), "Tokenize answers an expected code");
  v1::TokenizeRequest request;
  if (!ParseOrExpectInvalid(data, size, status, &request) || !status.ok()) return;
  const v1::TokenizeResponse response = Parsed<v1::TokenizeResponse>(out);
  Check(response.tokens_size() == request.texts_size() &&
            response.predicted_bytes_size() == request.texts_size(),
        "one token list and byte count per text");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static reformer::fuzz::GrpcFuzzEnv env;
  if (size == 0) return 0;
  reformer::serving::ReformerApiService service(env.env);
  const int64_t width = env.model.embedding_size();
  switch (data[0] % 3) {
    case 0: Score(service, data + 1, size - 1, width); break;
    case 1: Embed(service, data + 1, size - 1, width); break;
    default: Tokenize(service, data + 1, size - 1, width); break;
  }
  return 0;
}
