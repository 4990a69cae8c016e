#include "server/grpc/kserve_service.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/batching/clock.h"
#include "server/grpc/infer_convert.h"
#include "server/grpc/rpc_reactors.h"
#include "server/grpc/status_util.h"
#include "server/health/health_state.h"
#include "server/metrics/server_metrics.h"

namespace reformer::serving {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;

constexpr char kServerName[] = "reformer-server";
constexpr char kServerVersion[] = "0.1.0";

void AddTensor(google::protobuf::RepeatedPtrField<inference::ModelMetadataResponse::TensorMetadata>* list,
               const std::string& name, const std::string& datatype,
               std::initializer_list<int64_t> shape) {
  auto* t = list->Add();
  t->set_name(name);
  t->set_datatype(datatype);
  for (int64_t d : shape) t->add_shape(d);
}

// Converts a parsed request into an InferenceRequest.
std::unique_ptr<InferenceRequest> MakeRequest(const ModelInferRequest& wire, ParsedInfer* parsed) {
  auto request = std::make_unique<InferenceRequest>();
  request->id = wire.id();
  request->documents = parsed->documents;
  request->outputs = parsed->output_flags;
  request->priority = parsed->priority;
  return request;
}

// ModelStreamInfer: reads requests, submits each, writes responses in completion order (one
// write in flight at a time). Per-request errors go into `error_message` and keep the stream
// open. Finishes once the client half-closed, every accepted request was answered and every
// response written. Client cancellation cancels every pending request of the stream.
class StreamReactor final
    : public grpc::ServerBidiReactor<ModelInferRequest, ModelStreamInferResponse> {
 public:
  StreamReactor(const ServiceEnv& env, grpc::CallbackServerContext* ctx)
      : env_(env), ctx_(ctx), start_(env.clock->Now()) {
    if (env_.metrics != nullptr) env_.metrics->RpcStarted("bidi_stream", kKServeService, kMethod);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        absl::MutexLock lock(&mu_);
        reads_done_ = true;
      }
      MaybeFinish();
      return;
    }
    Handle(request_);
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    const ModelStreamInferResponse* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      queue_.pop_front();
      if (!ok) write_failed_ = true;
      if (!queue_.empty()) next = &queue_.front();
      writing_ = next != nullptr;
    }
    if (next != nullptr) {
      StartWrite(next);
    } else {
      MaybeFinish();
    }
  }

  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override { delete this; }

 private:
  static constexpr char kMethod[] = "ModelStreamInfer";

  void Handle(const ModelInferRequest& wire) {
    const absl::Time start = env_.clock->Now();
    absl::Status status = CheckServing(env_);
    auto parsed = std::make_shared<ParsedInfer>();
    if (status.ok()) {
      absl::StatusOr<ParsedInfer> p = ParseModelInferRequest(wire, *env_.model, env_.limits);
      if (p.ok()) {
        *parsed = *std::move(p);
        status = CheckResponseSize(*parsed, *env_.model, env_.limits);
      } else {
        status = p.status();
      }
    }
    const std::string id = wire.id();
    const std::string model_name = wire.model_name();
    if (!status.ok()) {
      RecordRequest(status, start, *parsed);
      Write(ErrorResponse(status, id, model_name));
      return;
    }
    std::unique_ptr<InferenceRequest> request = MakeRequest(wire, parsed.get());
    request->deadline = EffectiveDeadline(*env_.clock, ctx_->deadline(), parsed->timeout);
    request->cancelled = cancelled_;
    request->method = kMethod;
    {
      absl::MutexLock lock(&mu_);
      ++pending_;
    }
    status = env_.inference->Submit(
        std::move(request), [this, parsed, id, model_name, start](InferenceResult result) {
          ModelStreamInferResponse response;
          absl::Status s = result.status;
          if (s.ok()) {
            s = BuildModelInferResponse(*parsed, result, *env_.model, id,
                                        response.mutable_infer_response());
          }
          RecordRequest(s, start, *parsed);
          if (!s.ok()) response = ErrorResponse(s, id, model_name);
          // Queues the response and releases this request's hold on the stream in one step:
          // the stream cannot finish while a write is in flight, so touching `this` after this
          // call would race with OnDone.
          Write(std::move(response), /*release_pending=*/true);
        });
    if (!status.ok()) {
      {
        absl::MutexLock lock(&mu_);
        --pending_;
      }
      RecordRequest(status, start, *parsed);
      Write(ErrorResponse(status, id, model_name));
    }
  }

  ModelStreamInferResponse ErrorResponse(const absl::Status& status, const std::string& id,
                                         const std::string& model_name) {
    ModelStreamInferResponse response;
    response.set_error_message(
        absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message()));
    response.mutable_infer_response()->set_id(id);
    response.mutable_infer_response()->set_model_name(model_name);
    return response;
  }

  void RecordRequest(const absl::Status& status, absl::Time start, const ParsedInfer& parsed) {
    if (env_.metrics == nullptr) return;
    env_.metrics->RequestFinished(kMethod, status.code(),
                                  absl::ToDoubleSeconds(env_.clock->Now() - start),
                                  parsed.total_tokens,
                                  static_cast<int64_t>(parsed.documents.size()),
                                  absl::ToUnixMillis(absl::Now()));
  }

  void Write(ModelStreamInferResponse response, bool release_pending = false) {
    const ModelStreamInferResponse* to_write = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (release_pending) --pending_;
      queue_.push_back(std::move(response));
      if (!writing_) {
        writing_ = true;
        to_write = &queue_.front();
      }
    }
    // Only the writer pops the front, so the pointer stays valid (deque push_back keeps
    // references to existing elements).
    if (to_write != nullptr) StartWrite(to_write);
  }

  void MaybeFinish() {
    {
      absl::MutexLock lock(&mu_);
      if (!reads_done_ || pending_ > 0 || writing_ || finished_) return;
      finished_ = true;
    }
    if (env_.metrics != nullptr) {
      env_.metrics->RpcHandled("bidi_stream", kKServeService, kMethod,
                               cancelled_->load() ? absl::StatusCode::kCancelled
                                                  : absl::StatusCode::kOk,
                               absl::ToDoubleSeconds(env_.clock->Now() - start_));
    }
    Finish(grpc::Status::OK);
  }

  const ServiceEnv env_;
  grpc::CallbackServerContext* const ctx_;
  const absl::Time start_;
  ModelInferRequest request_;
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
  absl::Mutex mu_;
  std::deque<ModelStreamInferResponse> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t pending_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

grpc::ServerUnaryReactor* KServeService::ServerLive(grpc::CallbackServerContext* ctx,
                                                    const inference::ServerLiveRequest*,
                                                    inference::ServerLiveResponse* response) {
  const absl::Time start = env_.clock->Now();
  response->set_live(env_.health->live());
  return FinishUnary(env_, ctx, kKServeService, "ServerLive", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ServerReady(grpc::CallbackServerContext* ctx,
                                                     const inference::ServerReadyRequest*,
                                                     inference::ServerReadyResponse* response) {
  const absl::Time start = env_.clock->Now();
  response->set_ready(env_.health->ready());
  return FinishUnary(env_, ctx, kKServeService, "ServerReady", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ModelReady(grpc::CallbackServerContext* ctx,
                                                    const inference::ModelReadyRequest* request,
                                                    inference::ModelReadyResponse* response) {
  const absl::Time start = env_.clock->Now();
  absl::Status status = CheckModel(*env_.model, request->name(), request->version());
  if (status.ok()) response->set_ready(env_.health->ready());
  return FinishUnary(env_, ctx, kKServeService, "ModelReady", start, status);
}

grpc::ServerUnaryReactor* KServeService::ServerMetadata(
    grpc::CallbackServerContext* ctx, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  const absl::Time start = env_.clock->Now();
  response->set_name(kServerName);
  response->set_version(kServerVersion);
  response->add_extensions("parameters");
  response->add_extensions("statistics");
  response->add_extensions("model_configuration");
  return FinishUnary(env_, ctx, kKServeService, "ServerMetadata", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeService::ModelMetadata(
    grpc::CallbackServerContext* ctx, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  const absl::Time start = env_.clock->Now();
  absl::Status status = CheckModel(*env_.model, request->name(), request->version());
  if (status.ok()) {
    const ServedModel& m = *env_.model;
    const int64_t v = m.config.vocab_size, e = m.embedding_size();
    response->set_name(m.name);
    response->add_versions(m.version);
    response->set_platform(m.platform);
    AddTensor(response->mutable_inputs(), "input_ids", "INT64", {-1, -1});
    AddTensor(response->mutable_inputs(), "attention_mask", "INT64", {-1, -1});
    if (m.tokenizer != nullptr) AddTensor(response->mutable_inputs(), "text", "BYTES", {-1});
    AddTensor(response->mutable_outputs(), kLogits, "FP32", {-1, -1, v});
    AddTensor(response->mutable_outputs(), kHiddenStates, "FP32", {-1, -1, e});
    AddTensor(response->mutable_outputs(), kTokenLogprobs, "FP32", {-1, -1});
    AddTensor(response->mutable_outputs(), kEmbedding, "FP32", {-1, e});
    if (m.tokenizer != nullptr) {
      AddTensor(response->mutable_outputs(), kTokenIds, "INT64", {-1, -1});
      AddTensor(response->mutable_outputs(), kLengths, "INT32", {-1});
    }
    auto& props = *response->mutable_properties();
    props["max_tokens_per_document"] = std::to_string(m.context());
    props["max_tokens_per_request"] = std::to_string(env_.limits.max_tokens_per_request);
    props["max_response_bytes"] = std::to_string(env_.limits.max_response_bytes);
    props["vocab_size"] = std::to_string(v);
    props["causal"] = m.config.is_decoder ? "true" : "false";
    props["tokenizer"] = m.tokenizer_name;
    props["rotations_source"] = m.rotations_source;
  }
  return FinishUnary(env_, ctx, kKServeService, "ModelMetadata", start, status);
}

grpc::ServerUnaryReactor* KServeService::ModelInfer(grpc::CallbackServerContext* ctx,
                                                    const ModelInferRequest* request,
                                                    ModelInferResponse* response) {
  auto* reactor = new UnaryInferReactor(env_, ctx, kKServeService, "ModelInfer");
  absl::StatusOr<ParsedInfer> parsed = ParseModelInferRequest(*request, *env_.model, env_.limits);
  if (!parsed.ok()) {
    reactor->Reject(parsed.status());
    return reactor;
  }
  absl::Status size = CheckResponseSize(*parsed, *env_.model, env_.limits);
  if (!size.ok()) {
    reactor->Reject(size);
    return reactor;
  }
  auto shared = std::make_shared<ParsedInfer>(*std::move(parsed));
  std::unique_ptr<InferenceRequest> inference_request = MakeRequest(*request, shared.get());
  const ServedModel* model = env_.model;
  const std::string id = request->id();
  reactor->Submit(std::move(inference_request), shared->timeout,
                  [shared, model, id, response](const InferenceResult& result) {
                    return BuildModelInferResponse(*shared, result, *model, id, response);
                  });
  return reactor;
}

grpc::ServerBidiReactor<ModelInferRequest, ModelStreamInferResponse>*
KServeService::ModelStreamInfer(grpc::CallbackServerContext* ctx) {
  return new StreamReactor(env_, ctx);
}

grpc::ServerUnaryReactor* KServeService::ModelConfig(grpc::CallbackServerContext* ctx,
                                                     const inference::ModelConfigRequest* request,
                                                     inference::ModelConfigResponse* response) {
  const absl::Time start = env_.clock->Now();
  absl::Status status = CheckModel(*env_.model, request->name(), request->version());
  if (status.ok()) {
    const ServedModel& m = *env_.model;
    inference::ModelConfig* c = response->mutable_config();
    c->set_name(m.name);
    c->set_platform(m.platform);
    c->set_backend("reformer");
    c->set_max_batch_size(static_cast<int32_t>(std::min<int64_t>(m.max_batch_size, 1 << 30)));
    auto input = [&](const char* name, inference::DataType type, std::initializer_list<int64_t> dims,
                     bool optional) {
      inference::ModelInput* in = c->add_input();
      in->set_name(name);
      in->set_data_type(type);
      for (int64_t d : dims) in->add_dims(d);
      in->set_optional(optional);
    };
    auto output = [&](const char* name, inference::DataType type,
                      std::initializer_list<int64_t> dims) {
      inference::ModelOutput* out = c->add_output();
      out->set_name(name);
      out->set_data_type(type);
      for (int64_t d : dims) out->add_dims(d);
    };
    const bool text = m.tokenizer != nullptr;
    input("input_ids", inference::TYPE_INT64, {-1}, text);
    input("attention_mask", inference::TYPE_INT64, {-1}, true);
    if (text) input("text", inference::TYPE_STRING, {1}, true);
    output(kLogits, inference::TYPE_FP32, {-1, m.config.vocab_size});
    output(kHiddenStates, inference::TYPE_FP32, {-1, m.embedding_size()});
    output(kTokenLogprobs, inference::TYPE_FP32, {-1});
    output(kEmbedding, inference::TYPE_FP32, {m.embedding_size()});
    if (text) {
      output(kTokenIds, inference::TYPE_INT64, {-1});
      output(kLengths, inference::TYPE_INT32, {1});
    }
  }
  return FinishUnary(env_, ctx, kKServeService, "ModelConfig", start, status);
}

grpc::ServerUnaryReactor* KServeService::ModelStatistics(
    grpc::CallbackServerContext* ctx, const inference::ModelStatisticsRequest* request,
    inference::ModelStatisticsResponse* response) {
  const absl::Time start = env_.clock->Now();
  absl::Status status;
  if (!request->name().empty()) {
    status = CheckModel(*env_.model, request->name(), request->version());
  }
  if (status.ok()) {
    ModelStatsSnapshot s = env_.metrics != nullptr ? env_.metrics->Snapshot() : ModelStatsSnapshot{};
    auto* m = response->add_model_stats();
    m->set_name(env_.model->name);
    m->set_version(env_.model->version);
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
    for (const auto& [size, count] : s.batch_sizes) {
      auto* b = m->add_batch_stats();
      b->set_batch_size(size);
      b->mutable_compute_infer()->set_count(count);
    }
  }
  return FinishUnary(env_, ctx, kKServeService, "ModelStatistics", start, status);
}

}  // namespace reformer::serving
