// Fuzz target: KServe v2 ModelInfer as the gRPC service receives it — the wire bytes of an
// inference.ModelInferRequest, decoded by protobuf, then server/grpc/kserve_service.cc ModelInfer:
// ParseModelInferRequest (infer_convert.h), the response size check, the (fake, synchronous)
// inference, and BuildModelInferResponse.
// Checks: the RPC finishes exactly once with an expected code (never INTERNAL/UNKNOWN), and an OK
// response's raw outputs hold exactly shape x element-size bytes each.
#include <cstdint>

#include "fuzz/grpc_fuzz_env.h"
#include "proto/grpc_service.pb.h"
#include "server/grpc/kserve_service.h"

namespace {

using reformer::fuzz::Check;

int64_t ElementSize(const std::string& datatype) {
  if (datatype == "FP32" || datatype == "INT32") return 4;
  if (datatype == "INT64") return 8;
  return 0;
}

void CheckResponse(const inference::ModelInferResponse& response) {
  Check(response.outputs_size() == response.raw_output_contents_size(), "one raw content per output");
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& out = response.outputs(i);
    int64_t n = ElementSize(out.datatype());
    Check(n > 0, "known output datatype");
    for (int64_t d : out.shape()) n *= d;
    Check(static_cast<int64_t>(response.raw_output_contents(i).size()) == n,
          "raw output bytes = shape x element size");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static reformer::fuzz::GrpcFuzzEnv env;
  inference::ModelInferRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  reformer::serving::KServeService service(env.env);
  grpc::CallbackServerContext ctx;
  inference::ModelInferResponse response;
  reformer::fuzz::FakeUnaryCall call;
  const grpc::Status status = call.Complete(service.ModelInfer(&ctx, &request, &response));
  Check(reformer::fuzz::ExpectedCode(status.error_code()), "ModelInfer answers an expected code");
  if (status.ok()) CheckResponse(response);
  return 0;
}
