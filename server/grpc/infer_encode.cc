#include "server/grpc/infer_encode.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/slice.h"
#include "proto/grpc_service.pb.h"

namespace reformer::serving {
namespace {

// Field numbers of the messages built by hand (proto/grpc_service.proto).
constexpr int kRawOutputContentsField = 6;  // ModelInferResponse.raw_output_contents
constexpr int kInferResponseField = 2;      // ModelStreamInferResponse.infer_response

// Tag (wire type 2, length-delimited) and length of a field.
std::string FieldPrefix(int field, uint64_t length) {
  std::string out(1, static_cast<char>(field << 3 | 2));
  do {
    const uint8_t low = length & 0x7f;
    length >>= 7;
    out.push_back(static_cast<char>(length != 0 ? low | 0x80 : low));
  } while (length != 0);
  return out;
}

struct Slices {
  std::vector<grpc::Slice> slices;
  size_t bytes = 0;

  void Copy(const std::string& s) {
    slices.emplace_back(s.data(), s.size());
    bytes += s.size();
  }
  // Hands the buffer's memory to gRPC: freed with the slice.
  void Own(OutputBuffer& buffer) {
    const size_t size = buffer.size();
    slices.emplace_back(buffer.Release(), size, &OutputBuffer::Free);
    bytes += size;
  }
};

// Everything of the ModelInferResponse except raw_output_contents.
std::string EncodeSmallFields(const InferenceResult& result, const ServedModel& model) {
  const InferenceRequest& request = *result.request;
  inference::ModelInferResponse response;
  response.set_model_name(model.name);
  response.set_model_version(model.version);
  response.set_id(request.id);
  for (OutputKind kind : request.outputs) {
    const OutputSpec& spec = SpecOf(kind);
    auto* out = response.add_outputs();
    out->set_name(spec.name);
    out->set_datatype(DataTypeName(spec.datatype));
    for (int64_t d : request.OutputShape(kind)) out->add_shape(d);
  }
  auto& params = *response.mutable_parameters();
  params["tokens"].set_int64_param(result.tokens > 0 ? result.tokens
                                                     : request.documents.total_tokens());
  params["queue_ms"].set_double_param(result.queue_seconds * 1e3);
  params["compute_ms"].set_double_param(result.compute_seconds * 1e3);
  return response.SerializeAsString();
}

Slices EncodeResponse(InferenceResult& result, const ServedModel& model) {
  InferenceRequest& request = *result.request;
  Slices parts;
  parts.Copy(EncodeSmallFields(result, model));
  for (size_t i = 0; i < request.num_buffers(); ++i) {
    OutputBuffer& buffer = request.buffer(i);
    parts.Copy(FieldPrefix(kRawOutputContentsField, buffer.size()));
    parts.Own(buffer);
  }
  return parts;
}

}  // namespace

grpc::ByteBuffer EncodeModelInferResponse(InferenceResult& result, const ServedModel& model) {
  Slices parts = EncodeResponse(result, model);
  return grpc::ByteBuffer(parts.slices.data(), parts.slices.size());
}

grpc::ByteBuffer EncodeStreamInferResponse(InferenceResult& result, const ServedModel& model) {
  Slices inner = EncodeResponse(result, model);
  std::vector<grpc::Slice> slices;
  slices.reserve(inner.slices.size() + 1);
  const std::string prefix = FieldPrefix(kInferResponseField, inner.bytes);
  slices.emplace_back(prefix.data(), prefix.size());
  for (grpc::Slice& s : inner.slices) slices.push_back(std::move(s));
  return grpc::ByteBuffer(slices.data(), slices.size());
}

grpc::ByteBuffer EncodeStreamError(const absl::Status& status, const std::string& id,
                                   const std::string& model_name) {
  inference::ModelStreamInferResponse response;
  response.set_error_message(
      absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message()));
  response.mutable_infer_response()->set_id(id);
  response.mutable_infer_response()->set_model_name(model_name);
  const std::string bytes = response.SerializeAsString();
  grpc::Slice slice(bytes.data(), bytes.size());
  return grpc::ByteBuffer(&slice, 1);
}

absl::Status ParseMessage(const grpc::ByteBuffer& bytes, google::protobuf::MessageLite* message,
                          const char* what) {
  grpc::ByteBuffer shared(bytes);  // shares the slices (reference counts), copies nothing
  grpc::ProtoBufferReader reader(&shared);
  if (!reader.status().ok() || !message->ParseFromZeroCopyStream(&reader)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the message (", bytes.Length(), " bytes) is not a valid ", what));
  }
  return absl::OkStatus();
}

}  // namespace reformer::serving
