#include "server/grpc/reformer_service.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/model/tokenizer.h"
#include "server/batching/clock.h"
#include "server/grpc/generate_reactor.h"
#include "server/grpc/infer_encode.h"
#include "server/grpc/rpc_reactors.h"
#include "server/request/exception_status.h"
#include "server/request/validate.h"

namespace reformer::serving {
namespace {

namespace v1 = ::reformer::v1;
using DocumentList = google::protobuf::RepeatedPtrField<v1::Document>;

// Appends document i (text, tokenized here, or ids) to `request`.
absl::Status AppendDocument(const v1::Document& d, int i, const ServedModel& model,
                            InferenceRequest* request) {
  switch (d.content_case()) {
    case v1::Document::kText: {
      if (model.tokenizer == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("document ", i, " is text but model '",
                                                       model.name,
                                                       "' has no tokenizer; send token ids"));
      }
      absl::StatusOr<std::vector<int32_t>> ids = model.tokenizer->Encode(d.text());
      if (!ids.ok())
        return absl::InvalidArgumentError(
            absl::StrCat("document ", i, ": ", ids.status().message()));
      request->documents.Append(*ids);
      return absl::OkStatus();
    }
    case v1::Document::kIds:
      request->documents.Append(absl::MakeConstSpan(d.ids().ids().data(), d.ids().ids_size()));
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(absl::StrCat("document ", i, " has neither text nor ids"));
  }
}

// The request of a Score or Embed call: its documents back to back, one output. The document count
// and tokens are held to max_tokens_per_request as they are decoded (the one full check is
// Validate).
absl::StatusOr<std::unique_ptr<InferenceRequest>> Decode(const DocumentList& documents,
                                                         OutputKind output, uint32_t priority,
                                                         const ServiceEnv& env) {
  const RequestLimits limits = LimitsOf(*env.model, env.limits);
  RETURN_IF_ERROR(CheckTokenCount(documents.size(), documents.size(), "document", limits));
  int64_t id_tokens = 0;  // ids already in the message: reserve them
  for (const v1::Document& d : documents) id_tokens += d.has_ids() ? d.ids().ids_size() : 0;
  auto request = std::make_unique<InferenceRequest>();
  request->dims = env.model->dims();
  request->outputs = {output};
  request->priority = static_cast<int>(std::min<uint32_t>(priority, 1u << 30));
  request->documents.Reserve(documents.size(), id_tokens);
  for (int i = 0; i < documents.size(); ++i) {
    RETURN_IF_ERROR(AppendDocument(documents[i], i, *env.model, request.get()));
    RETURN_IF_ERROR(CheckTokenCount(request->documents.total_tokens(), i + 1, "document", limits));
  }
  return request;
}

void FillUsage(const InferenceResult& result, v1::Usage* usage) {
  usage->set_tokens(result.tokens > 0 ? result.tokens : result.request->documents.total_tokens());
  usage->set_queue_ms(result.queue_seconds * 1e3);
  usage->set_compute_ms(result.compute_seconds * 1e3);
}

absl::Status FillScores(const InferenceResult& result, const v1::ScoreRequest& wire,
                        const ServedModel& model, v1::ScoreResponse* response) {
  InferenceRequest& r = *result.request;
  const float* logprobs = r.buffer(0).as<float>();
  for (int64_t i = 0; i < r.documents.size(); ++i) {
    absl::Span<const int32_t> doc = r.documents[i];
    const float* lp = logprobs + r.documents.offset(i);
    v1::DocumentScore* s = response->add_scores();
    s->set_num_tokens(static_cast<int64_t>(doc.size()));
    double total = 0;
    for (size_t t = 1; t < doc.size(); ++t) total += lp[t];
    const int64_t bytes = model.tokenizer != nullptr ? model.tokenizer->PredictedBytes(doc) : 0;
    s->set_total_logprob(total);
    s->set_num_bytes(bytes);
    s->set_bits_per_byte(bytes > 0 ? -total / std::log(2.0) / bytes : 0.0);
    if (wire.return_token_logprobs()) s->mutable_token_logprobs()->Add(lp, lp + doc.size());
    if (wire.documents(static_cast<int>(i)).has_text())
      s->mutable_token_ids()->Add(doc.begin(), doc.end());
  }
  FillUsage(result, response->mutable_usage());
  return absl::OkStatus();
}

absl::Status FillEmbeddings(const InferenceResult& result, bool normalize,
                            v1::EmbedResponse* response) {
  InferenceRequest& r = *result.request;
  const int64_t width = r.dims.embedding;
  for (int64_t i = 0; i < r.documents.size(); ++i) {
    const float* e = r.buffer(0).as<float>() + i * width;
    v1::Embedding* out = response->add_embeddings();
    out->set_num_tokens(r.documents.length(i));
    double norm = 0;
    for (int64_t k = 0; k < width; ++k) norm += static_cast<double>(e[k]) * e[k];
    norm = std::sqrt(norm);
    const float scale = normalize && norm > 0 ? static_cast<float>(1.0 / norm) : 1.0f;
    out->mutable_values()->Reserve(static_cast<int>(width));
    for (int64_t k = 0; k < width; ++k) out->add_values(e[k] * scale);
  }
  FillUsage(result, response->mutable_usage());
  return absl::OkStatus();
}

// The request message of a raw call, as ModelInfer reads its own (kserve_service.cc).
absl::Status ParseRequest(const grpc::ByteBuffer& raw, google::protobuf::MessageLite* message,
                          const char* type) {
  if (!raw.Valid()) return absl::CancelledError("the client ended the call before its request message arrived");
  return ParseMessage(raw, message, type);
}

template <typename Message>
absl::Status SerializeResponse(const Message& message, grpc::ByteBuffer* out) {
  bool own_buffer = false;
  const grpc::Status s = grpc::SerializationTraits<Message>::Serialize(message, out, &own_buffer);
  if (s.ok()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cannot serialize the response: ", s.error_message()));
}

}  // namespace

grpc::ServerUnaryReactor* ReformerApiService::Score(grpc::CallbackServerContext* ctx,
                                                    const grpc::ByteBuffer* raw, grpc::ByteBuffer* out) {
  UnaryInferReactor* reactor = nullptr;
  return GuardHandler(
      env_, ctx, kReformerService, "Score", &reactor,
      [&](const std::string& tenant) -> grpc::ServerUnaryReactor* {
        reactor = new UnaryInferReactor(env_, ctx, kReformerService, "Score", tenant);
        auto request = std::make_shared<v1::ScoreRequest>();  // FillScores reads it
        absl::Status status = ParseRequest(*raw, request.get(), "reformer.v1.ScoreRequest");
        if (status.ok() && !env_.model->config.is_decoder) {
          status = absl::FailedPreconditionError(absl::StrCat(
              "model '", env_.model->name,
              "' is not a causal language model (is_decoder = false); Score needs one, use Embed"));
        }
        absl::StatusOr<std::unique_ptr<InferenceRequest>> decoded =
            status.ok() ? Decode(request->documents(), OutputKind::kTokenLogprobs, request->priority(), env_)
                        : absl::StatusOr<std::unique_ptr<InferenceRequest>>(status);
        if (!decoded.ok()) {
          reactor->Reject(decoded.status());
          return reactor;
        }
        const ServedModel* model = env_.model;
        reactor->Submit(*std::move(decoded), std::nullopt, [request, out, model](InferenceResult& result) {
          v1::ScoreResponse response;
          RETURN_IF_ERROR(FillScores(result, *request, *model, &response));
          return SerializeResponse(response, out);
        });
        return reactor;  // nothing after Submit: the reactor may be finished already
      });
}

grpc::ServerUnaryReactor* ReformerApiService::Embed(grpc::CallbackServerContext* ctx,
                                                    const grpc::ByteBuffer* raw, grpc::ByteBuffer* out) {
  UnaryInferReactor* reactor = nullptr;
  return GuardHandler(
      env_, ctx, kReformerService, "Embed", &reactor,
      [&](const std::string& tenant) -> grpc::ServerUnaryReactor* {
        reactor = new UnaryInferReactor(env_, ctx, kReformerService, "Embed", tenant);
        v1::EmbedRequest request;  // freed once decoded: the request object holds the ids
        const absl::Status parsed = ParseRequest(*raw, &request, "reformer.v1.EmbedRequest");
        absl::StatusOr<std::unique_ptr<InferenceRequest>> decoded =
            parsed.ok() ? Decode(request.documents(), OutputKind::kEmbedding, request.priority(), env_)
                        : absl::StatusOr<std::unique_ptr<InferenceRequest>>(parsed);
        if (!decoded.ok()) {
          reactor->Reject(decoded.status());
          return reactor;
        }
        const bool normalize = request.normalize();
        reactor->Submit(*std::move(decoded), std::nullopt, [normalize, out](InferenceResult& result) {
          v1::EmbedResponse response;
          RETURN_IF_ERROR(FillEmbeddings(result, normalize, &response));
          return SerializeResponse(response, out);
        });
        return reactor;
      });
}

grpc::ServerUnaryReactor* ReformerApiService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                           const grpc::ByteBuffer* raw, grpc::ByteBuffer* out) {
  return AnswerUnary(env_, ctx, kReformerService, "GetModelInfo", [&] {
    v1::GetModelInfoRequest request;
    RETURN_IF_ERROR(ParseRequest(*raw, &request, "reformer.v1.GetModelInfoRequest"));
    v1::GetModelInfoResponse r;
    v1::GetModelInfoResponse* response = &r;
    const ServedModel& m = *env_.model;
    response->set_name(m.name);
    response->set_version(m.version);
    response->set_vocab_size(m.config.vocab_size);
    response->set_max_tokens_per_document(m.context());
    response->set_max_tokens_per_request(env_.limits.max_tokens_per_request);
    response->set_hidden_size(m.config.hidden_size);
    response->set_embedding_size(m.embedding_size());
    response->set_num_layers(m.config.num_layers());
    for (AttnType t : m.config.attn_layers)
      response->add_attn_layers(t == AttnType::kLsh ? "lsh" : "local");
    response->set_causal(m.config.is_decoder);
    response->set_tokenizer(m.tokenizer_name);
    response->set_rotations_source(m.rotations_source);
    response->set_num_hashes(m.config.num_hashes);
    response->set_compute_type(m.compute_type);
    response->set_isa(m.isa);
    response->set_max_new_tokens(m.config.is_decoder ? m.context() - 1 : 0);
    return SerializeResponse(r, out);
  });
}

grpc::ServerUnaryReactor* ReformerApiService::Tokenize(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* raw, grpc::ByteBuffer* out) {
  return AnswerUnary(env_, ctx, kReformerService, "Tokenize", [&] {
    v1::TokenizeRequest request;
    RETURN_IF_ERROR(ParseRequest(*raw, &request, "reformer.v1.TokenizeRequest"));
    v1::TokenizeResponse response;
    RETURN_IF_ERROR(TokenizeTexts(request, &response));
    return SerializeResponse(response, out);
  });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ReformerApiService::Generate(grpc::CallbackServerContext* ctx,
                                                                         const grpc::ByteBuffer* request) {
  return NewGenerateReactor(env_, &generate_streams_, ctx, request);
}

// The ids of every text; the total is held to max_tokens_per_request (the response is its size).
absl::Status ReformerApiService::TokenizeTexts(const v1::TokenizeRequest& request,
                                               v1::TokenizeResponse* response) const {
  const ServedModel& m = *env_.model;
  if (m.tokenizer == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", m.name, "' has no tokenizer; it takes token ids only"));
  }
  if (request.texts().empty()) return absl::InvalidArgumentError("the request has no texts");
  const RequestLimits limits = LimitsOf(m, env_.limits);
  int64_t total = 0;
  for (int i = 0; i < request.texts_size(); ++i) {
    absl::StatusOr<std::vector<int32_t>> ids = m.tokenizer->Encode(request.texts(i));
    if (!ids.ok())
      return absl::InvalidArgumentError(absl::StrCat("text ", i, ": ", ids.status().message()));
    total += static_cast<int64_t>(ids->size());
    RETURN_IF_ERROR(CheckTokenCount(total, i + 1, "text", limits));
    response->add_tokens()->mutable_ids()->Add(ids->begin(), ids->end());
    response->add_predicted_bytes(m.tokenizer->PredictedBytes(*ids));
  }
  return absl::OkStatus();
}

}  // namespace reformer::serving
