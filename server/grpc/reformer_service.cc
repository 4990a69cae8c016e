#include "server/grpc/reformer_service.h"

#include <cmath>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/model/tokenizer.h"
#include "server/batching/clock.h"
#include "server/grpc/infer_convert.h"
#include "server/grpc/rpc_reactors.h"

namespace reformer::serving {
namespace {

namespace v1 = ::reformer::v1;

absl::StatusOr<std::vector<std::vector<int32_t>>> ToDocuments(
    const google::protobuf::RepeatedPtrField<v1::Document>& documents, const ServiceEnv& env) {
  const ServedModel& model = *env.model;
  std::vector<std::vector<int32_t>> out;
  out.reserve(static_cast<size_t>(documents.size()));
  for (int i = 0; i < documents.size(); ++i) {
    const v1::Document& d = documents[i];
    switch (d.content_case()) {
      case v1::Document::kText: {
        if (model.tokenizer == nullptr) {
          return absl::InvalidArgumentError(absl::StrCat(
              "document ", i, " is text but model '", model.name,
              "' has no tokenizer; send token ids"));
        }
        absl::StatusOr<std::vector<int32_t>> ids = model.tokenizer->Encode(d.text());
        if (!ids.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("document ", i, ": ", ids.status().message()));
        }
        RETURN_IF_ERROR(CheckTokenIds(*ids, model.config.vocab_size, "document", i));
        out.push_back(*std::move(ids));
        break;
      }
      case v1::Document::kIds: {
        std::vector<int32_t> ids(d.ids().ids().begin(), d.ids().ids().end());
        RETURN_IF_ERROR(CheckTokenIds(ids, model.config.vocab_size, "document", i));
        out.push_back(std::move(ids));
        break;
      }
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("document ", i, " has neither text nor ids"));
    }
  }
  RETURN_IF_ERROR(CheckDocumentLengths(out, model, env.limits, "document"));
  return out;
}

void FillUsage(const InferenceResult& result, int64_t tokens, v1::Usage* usage) {
  usage->set_tokens(result.tokens > 0 ? result.tokens : tokens);
  usage->set_queue_ms(result.queue_seconds * 1e3);
  usage->set_compute_ms(result.compute_seconds * 1e3);
}

int64_t TotalTokens(const std::vector<std::vector<int32_t>>& docs) {
  int64_t n = 0;
  for (const auto& d : docs) n += static_cast<int64_t>(d.size());
  return n;
}

// The inference request of a Score or Embed call, and the token ids its answer is built from.
struct PreparedCall {
  std::unique_ptr<InferenceRequest> request;
  std::shared_ptr<const std::vector<std::vector<int32_t>>> documents;
};

absl::StatusOr<PreparedCall> Prepare(const google::protobuf::RepeatedPtrField<v1::Document>& documents,
                                     uint32_t outputs, uint32_t priority, const ServiceEnv& env) {
  ASSIGN_OR_RETURN(std::vector<std::vector<int32_t>> docs, ToDocuments(documents, env));
  PreparedCall call;
  call.request = std::make_unique<InferenceRequest>();
  call.request->documents = docs;
  call.request->outputs = outputs;
  call.request->priority = static_cast<int>(std::min<uint32_t>(priority, 1u << 30));
  call.documents = std::make_shared<const std::vector<std::vector<int32_t>>>(std::move(docs));
  return call;
}

}  // namespace

grpc::ServerUnaryReactor* ReformerApiService::Score(grpc::CallbackServerContext* ctx,
                                                    const v1::ScoreRequest* request,
                                                    v1::ScoreResponse* response) {
  auto* reactor = new UnaryInferReactor(env_, ctx, kReformerService, "Score");
  if (!env_.model->config.is_decoder) {
    reactor->Reject(absl::FailedPreconditionError(absl::StrCat(
        "model '", env_.model->name,
        "' is not a causal language model (is_decoder = false); Score needs one, use Embed")));
    return reactor;
  }
  absl::StatusOr<PreparedCall> call =
      Prepare(request->documents(), kOutputTokenLogprobs, request->priority(), env_);
  if (!call.ok()) {
    reactor->Reject(call.status());
    return reactor;
  }
  const bool per_token = request->return_token_logprobs();
  std::vector<bool> from_text;
  for (const auto& d : request->documents()) from_text.push_back(d.has_text());
  const ServedModel* model = env_.model;
  reactor->Submit(std::move(call->request), std::nullopt,
                  [shared_docs = call->documents, from_text, per_token, model,
                   response](const InferenceResult& r) {
                    const auto& docs = *shared_docs;
                    if (r.outputs.size() != docs.size()) {
                      return absl::InternalError("engine returned the wrong number of documents");
                    }
                    for (size_t i = 0; i < docs.size(); ++i) {
                      const std::vector<float>& lp = r.outputs[i].token_logprobs;
                      if (lp.size() != docs[i].size()) {
                        return absl::InternalError(absl::StrCat(
                            "engine token_logprobs for document ", i, " has ", lp.size(),
                            " values, expected ", docs[i].size()));
                      }
                      v1::DocumentScore* s = response->add_scores();
                      s->set_num_tokens(static_cast<int64_t>(docs[i].size()));
                      double total = 0;
                      for (size_t t = 1; t < lp.size(); ++t) total += lp[t];
                      const int64_t bytes =
                          model->tokenizer != nullptr ? model->tokenizer->PredictedBytes(docs[i]) : 0;
                      s->set_total_logprob(total);
                      s->set_num_bytes(bytes);
                      s->set_bits_per_byte(bytes > 0 ? -total / std::log(2.0) / bytes : 0.0);
                      if (per_token) {
                        s->mutable_token_logprobs()->Add(lp.begin(), lp.end());
                      }
                      if (from_text[i]) {
                        s->mutable_token_ids()->Add(docs[i].begin(), docs[i].end());
                      }
                    }
                    FillUsage(r, TotalTokens(docs), response->mutable_usage());
                    return absl::OkStatus();
                  });
  return reactor;
}

grpc::ServerUnaryReactor* ReformerApiService::Embed(grpc::CallbackServerContext* ctx,
                                                    const v1::EmbedRequest* request,
                                                    v1::EmbedResponse* response) {
  auto* reactor = new UnaryInferReactor(env_, ctx, kReformerService, "Embed");
  absl::StatusOr<PreparedCall> call =
      Prepare(request->documents(), kOutputEmbedding, request->priority(), env_);
  if (!call.ok()) {
    reactor->Reject(call.status());
    return reactor;
  }
  const bool normalize = request->normalize();
  const int64_t width = env_.model->embedding_size();
  reactor->Submit(std::move(call->request), std::nullopt,
                  [shared_docs = call->documents, normalize, width, response](const InferenceResult& r) {
                    const auto& docs = *shared_docs;
                    if (r.outputs.size() != docs.size()) {
                      return absl::InternalError("engine returned the wrong number of documents");
                    }
                    for (size_t i = 0; i < docs.size(); ++i) {
                      const std::vector<float>& e = r.outputs[i].embedding;
                      if (static_cast<int64_t>(e.size()) != width) {
                        return absl::InternalError(absl::StrCat("engine embedding for document ",
                                                                i, " has ", e.size(),
                                                                " values, expected ", width));
                      }
                      v1::Embedding* out = response->add_embeddings();
                      out->set_num_tokens(static_cast<int64_t>(docs[i].size()));
                      double norm = 0;
                      for (float x : e) norm += static_cast<double>(x) * x;
                      norm = std::sqrt(norm);
                      const float scale =
                          normalize && norm > 0 ? static_cast<float>(1.0 / norm) : 1.0f;
                      for (float x : e) out->add_values(x * scale);
                    }
                    FillUsage(r, TotalTokens(docs), response->mutable_usage());
                    return absl::OkStatus();
                  });
  return reactor;
}

grpc::ServerUnaryReactor* ReformerApiService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                           const v1::GetModelInfoRequest*,
                                                           v1::GetModelInfoResponse* response) {
  const absl::Time start = env_.clock->Now();
  const ServedModel& m = *env_.model;
  response->set_name(m.name);
  response->set_version(m.version);
  response->set_vocab_size(m.config.vocab_size);
  response->set_max_tokens_per_document(m.context());
  response->set_max_tokens_per_request(env_.limits.max_tokens_per_request);
  response->set_hidden_size(m.config.hidden_size);
  response->set_embedding_size(m.embedding_size());
  response->set_num_layers(m.config.num_layers());
  for (AttnType t : m.config.attn_layers) {
    response->add_attn_layers(t == AttnType::kLsh ? "lsh" : "local");
  }
  response->set_causal(m.config.is_decoder);
  response->set_tokenizer(m.tokenizer_name);
  response->set_rotations_source(m.rotations_source);
  response->set_num_hashes(m.config.num_hashes);
  return FinishUnary(env_, ctx, kReformerService, "GetModelInfo", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* ReformerApiService::Tokenize(grpc::CallbackServerContext* ctx,
                                                       const v1::TokenizeRequest* request,
                                                       v1::TokenizeResponse* response) {
  const absl::Time start = env_.clock->Now();
  const ServedModel& m = *env_.model;
  absl::Status status;
  if (m.tokenizer == nullptr) {
    status = absl::InvalidArgumentError(
        absl::StrCat("model '", m.name, "' has no tokenizer; it takes token ids only"));
  }
  for (int i = 0; status.ok() && i < request->texts_size(); ++i) {
    absl::StatusOr<std::vector<int32_t>> ids = m.tokenizer->Encode(request->texts(i));
    if (!ids.ok()) {
      status = absl::InvalidArgumentError(absl::StrCat("text ", i, ": ", ids.status().message()));
      break;
    }
    response->add_tokens()->mutable_ids()->Add(ids->begin(), ids->end());
    response->add_predicted_bytes(m.tokenizer->PredictedBytes(*ids));
  }
  if (!status.ok()) response->Clear();
  return FinishUnary(env_, ctx, kReformerService, "Tokenize", start, status);
}

}  // namespace reformer::serving
