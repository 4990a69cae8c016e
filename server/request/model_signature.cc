#include "server/request/model_signature.h"

#include <cstdlib>

#include "engine/model/engine_api.h"

namespace reformer::serving {
namespace {

constexpr OutputSpec kOutputs[] = {
    {OutputKind::kLogits, "logits", DataType::kFp32, kOutputLogits, true, OutputWidth::kVocab,
     false},
    {OutputKind::kHiddenStates, "hidden_states", DataType::kFp32, kOutputHiddenStates, true,
     OutputWidth::kEmbedding, false},
    {OutputKind::kTokenLogprobs, "token_logprobs", DataType::kFp32, kOutputTokenLogprobs, true,
     OutputWidth::kOne, false},
    {OutputKind::kEmbedding, "embedding", DataType::kFp32, kOutputEmbedding, false,
     OutputWidth::kEmbedding, false},
    {OutputKind::kTokenIds, "token_ids", DataType::kInt64, 0, true, OutputWidth::kOne, true},
    {OutputKind::kLengths, "lengths", DataType::kInt32, 0, false, OutputWidth::kOne, true},
};

}  // namespace

const char* DataTypeName(DataType type) {
  switch (type) {
    case DataType::kBool:
      return "BOOL";
    case DataType::kInt32:
      return "INT32";
    case DataType::kInt64:
      return "INT64";
    case DataType::kFp32:
      return "FP32";
    case DataType::kBytes:
      return "BYTES";
  }
  std::abort();
}

int64_t DataTypeSize(DataType type) {
  switch (type) {
    case DataType::kBool:
      return 1;
    case DataType::kInt32:
      return 4;
    case DataType::kInt64:
      return 8;
    case DataType::kFp32:
      return 4;
    case DataType::kBytes:
      return 0;
  }
  std::abort();
}

absl::Span<const OutputSpec> AllOutputs() { return kOutputs; }

const OutputSpec& SpecOf(OutputKind kind) { return kOutputs[static_cast<int>(kind)]; }

const OutputSpec* FindOutput(absl::string_view name) {
  for (const OutputSpec& spec : kOutputs) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

int64_t WidthOf(OutputKind kind, const ModelDims& dims) {
  switch (SpecOf(kind).width) {
    case OutputWidth::kOne:
      return 1;
    case OutputWidth::kVocab:
      return dims.vocab;
    case OutputWidth::kEmbedding:
      return dims.embedding;
  }
  std::abort();
}

ModelSignature SignatureOf(const ServedModel& model) {
  const bool text = model.tokenizer != nullptr;
  ModelSignature sig;
  sig.inputs.push_back({"input_ids", DataType::kInt64, {-1, -1}, /*optional=*/text});
  sig.inputs.push_back({"attention_mask", DataType::kInt64, {-1, -1}, /*optional=*/true});
  if (text) sig.inputs.push_back({"text", DataType::kBytes, {-1}, /*optional=*/true});
  const ModelDims dims = model.dims();
  for (const OutputSpec& spec : kOutputs) {
    if (spec.text_only && !text) continue;
    TensorSpec t{spec.name, spec.datatype, {-1}, false};
    if (spec.per_token) t.shape.push_back(-1);
    if (spec.width != OutputWidth::kOne) t.shape.push_back(WidthOf(spec.kind, dims));
    sig.outputs.push_back(std::move(t));
  }
  return sig;
}

std::vector<int64_t> ConfigDims(const TensorSpec& tensor) {
  std::vector<int64_t> dims(tensor.shape.begin() + 1, tensor.shape.end());
  if (dims.empty()) dims.push_back(1);
  return dims;
}

}  // namespace reformer::serving
