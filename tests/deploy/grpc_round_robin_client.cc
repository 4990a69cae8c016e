// The C++ client of deploy/README.md ("gRPC load balancing"): one channel with the round_robin service config
// (or gRPC's default pick_first), N small ModelInfer calls. Driven by grpc_round_robin_test.py, which counts
// what each server received. Prints "sent N" and exits 0 when every call succeeded.
//   grpc_round_robin_client TARGET MODEL N round_robin|pick_first
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "grpc_service.grpc.pb.h"

namespace {

inference::ModelInferRequest SmallRequest(const std::string& model, int i) {
  inference::ModelInferRequest req;
  req.set_model_name(model);
  req.set_id("cc-" + std::to_string(i));
  inference::ModelInferRequest::InferInputTensor* ids = req.add_inputs();
  ids->set_name("input_ids");
  ids->set_datatype("INT64");
  ids->add_shape(1);
  ids->add_shape(8);
  for (int64_t v : {72, 101, 108, 108, 111, 32, 105 + i % 5, 110}) ids->mutable_contents()->add_int64_contents(v);
  req.add_outputs()->set_name("embedding");
  return req;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s TARGET MODEL N round_robin|pick_first\n", argv[0]);
    return 2;
  }
  const std::string target = argv[1], model = argv[2], policy = argv[4];
  const int n = std::atoi(argv[3]);
  grpc::ChannelArguments args;
  if (policy == "round_robin") {
    args.SetServiceConfigJSON(R"({"loadBalancingConfig": [{"round_robin": {}}]})");
  } else if (policy != "pick_first") {
    std::fprintf(stderr, "unknown policy %s\n", policy.c_str());
    return 2;
  }
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub = inference::GRPCInferenceService::NewStub(channel);
  for (int i = 0; i < n; ++i) {
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    inference::ModelInferResponse resp;
    const grpc::Status status = stub->ModelInfer(&ctx, SmallRequest(model, i), &resp);
    if (!status.ok()) {
      std::fprintf(stderr, "call %d: %s\n", i, status.error_message().c_str());
      return 1;
    }
  }
  std::printf("sent %d\n", n);
  return 0;
}
