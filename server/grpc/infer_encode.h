// Responses written once, and requests read from gRPC's bytes.
//
// A finished InferenceRequest becomes a ModelInferResponse (or a ModelStreamInferResponse around
// one) as a grpc::ByteBuffer of slices: the small fields encoded by protobuf, then for each output
// the `raw_output_contents` field's tag and length followed by the output's buffer itself, as a
// slice that owns it and frees it when gRPC has sent it. The output bytes the engine wrote are
// never copied or zero-filled again. Any protobuf parser reads the result as an ordinary message
// (fields may come in any order; repeated fields keep theirs), so stock clients see a valid
// response.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/inference/inference_service.h"
#include "server/request/served_model.h"

namespace reformer::serving {

// ModelInferResponse of an OK result; takes the request's response buffers.
grpc::ByteBuffer EncodeModelInferResponse(InferenceResult& result, const ServedModel& model);
// ModelStreamInferResponse{infer_response = the above}.
grpc::ByteBuffer EncodeStreamInferResponse(InferenceResult& result, const ServedModel& model);
// ModelStreamInferResponse{error_message = "CODE: message", infer_response{id, model_name}}.
grpc::ByteBuffer EncodeStreamError(const absl::Status& status, const std::string& id,
                                   const std::string& model_name);

// Parses `bytes` into `message`; INVALID_ARGUMENT naming `what` when they are not one.
absl::Status ParseMessage(const grpc::ByteBuffer& bytes, google::protobuf::MessageLite* message,
                          const char* what);

}  // namespace reformer::serving
