#include "server/grpc/kserve_service.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "server/batching/clock.h"
#include "server/grpc/infer_decode.h"
#include "server/grpc/infer_encode.h"
#include "server/grpc/rpc_reactors.h"
#include "server/health/health_state.h"
#include "server/metrics/server_metrics.h"
#include "server/request/model_info.h"
#include "server/request/model_signature.h"
#include "server/request/validate.h"

namespace reformer::serving {
namespace {

void FillTensors(
    const std::vector<TensorSpec>& tensors,
    google::protobuf::RepeatedPtrField<inference::ModelMetadataResponse::TensorMetadata>* dst) {
  for (const TensorSpec& t : tensors) {
    auto* out = dst->Add();
    out->set_name(t.name);
    out->set_datatype(DataTypeName(t.datatype));
    for (int64_t d : t.shape) out->add_shape(d);
  }
}

void FillMetadata(const ServiceEnv& env, inference::ModelMetadataResponse* response) {
  const ServedModel& m = *env.model;
  response->set_name(m.name);
  response->add_versions(m.version);
  response->set_platform(m.platform);
  const ModelSignature sig = SignatureOf(m);
  FillTensors(sig.inputs, response->mutable_inputs());
  FillTensors(sig.outputs, response->mutable_outputs());
  auto& props = *response->mutable_properties();
  for (const auto& [key, value] : ModelProperties(m, env.limits)) props[key] = value;
}

inference::DataType ConfigType(DataType type) {
  inference::DataType t = inference::TYPE_INVALID;
  inference::DataType_Parse(ConfigTypeName(type), &t);
  return t;
}

void FillConfig(const ServedModel& m, inference::ModelConfig* c) {
  const ModelConfigInfo info = ConfigOf(m);
  c->set_name(info.name);
  c->set_platform(info.platform);
  c->set_backend(info.backend);
  c->set_max_batch_size(info.max_batch_size);
  for (const ModelConfigInfo::Tensor& t : info.inputs) {
    inference::ModelInput* in = c->add_input();
    in->set_name(t.name);
    in->set_data_type(ConfigType(t.datatype));
    for (int64_t d : t.dims) in->add_dims(d);
    in->set_optional(t.optional);
  }
  for (const ModelConfigInfo::Tensor& t : info.outputs) {
    inference::ModelOutput* out = c->add_output();
    out->set_name(t.name);
    out->set_data_type(ConfigType(t.datatype));
    for (int64_t d : t.dims) out->add_dims(d);
  }
}

void FillStatistics(const ServiceEnv& env, inference::ModelStatistics* m) {
  const ModelStatsSnapshot s =
      env.metrics != nullptr ? env.metrics->Snapshot() : ModelStatsSnapshot{};
  m->set_name(env.model->name);
  m->set_version(env.model->version);
  m->set_last_inference(s.last_inference_ms);
  m->set_inference_count(s.inference_count);
  m->set_execution_count(s.execution_count);
  auto* st = m->mutable_inference_stats();
  st->mutable_success()->set_count(s.success.count);
  st->mutable_success()->set_ns(s.success.ns);
  st->mutable_fail()->set_count(s.fail.count);
  st->mutable_fail()->set_ns(s.fail.ns);
  st->mutable_queue()->set_count(s.queue.count);
  st->mutable_queue()->set_ns(s.queue.ns);
  st->mutable_compute_infer()->set_count(s.compute.count);
  st->mutable_compute_infer()->set_ns(s.compute.ns);
  for (const auto& [size, compute] : s.batch_sizes) {
    auto* b = m->add_batch_stats();
    b->set_batch_size(size);
    b->mutable_compute_infer()->set_count(compute.count);
    b->mutable_compute_infer()->set_ns(compute.ns);
  }
}

// The status of a ModelInfer call whose request message never arrived (a raw method's handler then
// gets an empty buffer): the client ended the call first — it cancelled or reset the connection,
// mid-message included. gRPC does not tell the handler reliably which: the call's failed read and
// IsCancelled() can still be unset when it runs (the soak saw such calls counted INVALID_ARGUMENT).
// A client that half-closes without its one message has ended the call as well.
absl::Status NoRequestMessage() {
  return absl::CancelledError("the client ended the call before its request message arrived");
}

}  // namespace

grpc::ServerUnaryReactor* KServeService::ServerLive(grpc::CallbackServerContext* ctx,
                                                    const inference::ServerLiveRequest*,
                                                    inference::ServerLiveResponse* response) {
  return AnswerOpenUnary(env_, ctx, kKServeService, "ServerLive", [&] {
    response->set_live(env_.health->live());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KServeService::ServerReady(grpc::CallbackServerContext* ctx,
                                                     const inference::ServerReadyRequest*,
                                                     inference::ServerReadyResponse* response) {
  return AnswerOpenUnary(env_, ctx, kKServeService, "ServerReady", [&] {
    response->set_ready(env_.health->ready());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KServeService::ModelReady(grpc::CallbackServerContext* ctx,
                                                    const inference::ModelReadyRequest* request,
                                                    inference::ModelReadyResponse* response) {
  return AnswerUnary(env_, ctx, kKServeService, "ModelReady", [&] {
    RETURN_IF_ERROR(CheckModel(*env_.model, request->name(), request->version()));
    response->set_ready(env_.health->ready());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KServeService::ServerMetadata(
    grpc::CallbackServerContext* ctx, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  return AnswerUnary(env_, ctx, kKServeService, "ServerMetadata", [&] {
    response->set_name(kServerName);
    response->set_version(kServerVersion);
    for (const char* extension : ServerExtensions()) response->add_extensions(extension);
    response->set_compute_type(env_.model->compute_type);
    response->set_isa(env_.model->isa);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KServeService::ModelMetadata(
    grpc::CallbackServerContext* ctx, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  return AnswerUnary(env_, ctx, kKServeService, "ModelMetadata", [&] {
    RETURN_IF_ERROR(CheckModel(*env_.model, request->name(), request->version()));
    FillMetadata(env_, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KServeService::ModelInfer(grpc::CallbackServerContext* ctx,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* response) {
  UnaryInferReactor* reactor = nullptr;
  return GuardHandler(
      env_, ctx, kKServeService, "ModelInfer", &reactor,
      [&](const std::string& tenant) -> grpc::ServerUnaryReactor* {
        reactor = new UnaryInferReactor(env_, ctx, kKServeService, "ModelInfer", tenant);
        if (!request->Valid()) {  // no request message arrived (a raw method gets an empty buffer)
          reactor->Reject(NoRequestMessage());
          return reactor;
        }
        absl::StatusOr<DecodedInfer> decoded = absl::UnknownError("");
        {
          inference::ModelInferRequest
              wire;  // freed once decoded: the request object holds the ids
          absl::Status parsed = ParseMessage(*request, &wire, "ModelInferRequest");
          decoded = parsed.ok()
                        ? DecodeModelInfer(wire, *env_.model, LimitsOf(*env_.model, env_.limits))
                        : absl::StatusOr<DecodedInfer>(parsed);
        }
        if (!decoded.ok()) {
          reactor->Reject(decoded.status());
          return reactor;
        }
        const ServedModel* model = env_.model;
        reactor->Submit(std::move(decoded->request), decoded->timeout,
                        [model, response](InferenceResult& result) {
                          grpc::ByteBuffer bytes = EncodeModelInferResponse(result, *model);
                          response->Swap(&bytes);
                          return absl::OkStatus();
                        });
        return reactor;  // nothing after Submit: the reactor may be finished already
      });
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* KServeService::ModelStreamInfer(
    grpc::CallbackServerContext* ctx) {
  return NewStreamInferReactor(env_, stream_limits_, ctx);
}

grpc::ServerUnaryReactor* KServeService::ModelConfig(grpc::CallbackServerContext* ctx,
                                                     const inference::ModelConfigRequest* request,
                                                     inference::ModelConfigResponse* response) {
  return AnswerUnary(env_, ctx, kKServeService, "ModelConfig", [&] {
    RETURN_IF_ERROR(CheckModel(*env_.model, request->name(), request->version()));
    FillConfig(*env_.model, response->mutable_config());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KServeService::ModelStatistics(
    grpc::CallbackServerContext* ctx, const inference::ModelStatisticsRequest* request,
    inference::ModelStatisticsResponse* response) {
  return AnswerUnary(env_, ctx, kKServeService, "ModelStatistics", [&] {
    if (!request->name().empty())
      RETURN_IF_ERROR(CheckModel(*env_.model, request->name(), request->version()));
    FillStatistics(env_, response->add_model_stats());
    return absl::OkStatus();
  });
}

}  // namespace reformer::serving
