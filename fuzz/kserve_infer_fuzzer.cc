// Fuzz target: KServe v2 ModelInfer as the gRPC service receives it — the raw bytes of an
// inference.ModelInferRequest, into server/grpc/kserve_service.cc ModelInfer (a raw method): parse,
// DecodeModelInfer (infer_decode.h) into the request object, the one Validate(), the response
// buffers and their layout (server/request/inference_request.h), the fake engine writing every
// view (grpc_fuzz_env.h), and EncodeModelInferResponse's slices (infer_encode.h).
// Checks: the RPC finishes exactly once with an expected code (never INTERNAL/UNKNOWN); an OK
// response parses as a ModelInferResponse whose raw outputs hold exactly shape x element-size
// bytes, one row per document; and in every FP32 output the cells the engine wrote are exactly as
// many as the documents' tokens imply while every other cell (padding, token 0's log-probability)
// is 0 — a layout that overlapped documents, left a cell unwritten or dropped a row shows here.
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz/grpc_fuzz_env.h"
#include "proto/grpc_service.pb.h"
#include "server/grpc/infer_encode.h"
#include "server/grpc/kserve_service.h"

namespace {

using reformer::fuzz::Check;

int64_t ElementSize(const std::string& datatype) {
  if (datatype == "FP32" || datatype == "INT32") return 4;
  if (datatype == "INT64") return 8;
  return 0;
}

// Cells the fake engine writes into `name` for the accepted request; -1 = not an engine output.
int64_t WrittenCells(const std::string& name, const reformer::fuzz::AcceptedRequest& r,
                     const reformer::serving::ModelDims& dims) {
  if (name == "logits") return r.tokens * dims.vocab;
  if (name == "hidden_states") return r.tokens * dims.embedding;
  if (name == "token_logprobs") return r.tokens - r.documents;  // token 0 of each is written as 0
  if (name == "embedding") return r.documents * dims.embedding;
  return -1;
}

void CheckResponse(const inference::ModelInferResponse& response, const reformer::fuzz::GrpcFuzzEnv& env) {
  const reformer::fuzz::AcceptedRequest& accepted = env.inference->last();
  Check(response.outputs_size() == response.raw_output_contents_size(), "one raw content per output");
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& out = response.outputs(i);
    const int64_t size = ElementSize(out.datatype());
    Check(size > 0, "known output datatype");
    Check(out.shape_size() >= 1 && out.shape(0) == accepted.documents, "one row per document");
    int64_t n = 1;
    for (int64_t d : out.shape()) n *= d;
    const std::string& bytes = response.raw_output_contents(i);
    Check(static_cast<int64_t>(bytes.size()) == n * size, "raw output bytes = shape x element size");
    const int64_t expected = WrittenCells(out.name(), accepted, env.model.dims());
    if (expected < 0) continue;
    Check(out.datatype() == "FP32", "engine outputs are FP32");
    int64_t written = 0;
    for (int64_t k = 0; k < n; ++k) {
      float v;
      std::memcpy(&v, bytes.data() + k * 4, 4);
      Check(v == reformer::fuzz::kWritten || v == 0.0f, "a cell is written by the engine or zero padding");
      written += v == reformer::fuzz::kWritten;
    }
    Check(written == expected, "written cells = what the documents' tokens imply");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static reformer::fuzz::GrpcFuzzEnv env;
  env.inference->ClearLast();
  grpc::Slice slice(data, size);
  const grpc::ByteBuffer request(&slice, 1);
  reformer::serving::KServeService service(env.env, reformer::serving::StreamLimits{});
  grpc::CallbackServerContext ctx;
  grpc::ByteBuffer response;
  reformer::fuzz::FakeUnaryCall call;
  const grpc::Status status = call.Complete(service.ModelInfer(&ctx, &request, &response));
  Check(reformer::fuzz::ExpectedCode(status.error_code()), "ModelInfer answers an expected code");
  if (!status.ok()) return 0;
  inference::ModelInferResponse parsed;
  Check(reformer::serving::ParseMessage(response, &parsed, "ModelInferResponse").ok(),
        "an OK response parses as a ModelInferResponse");
  CheckResponse(parsed, env);
  return 0;
}
