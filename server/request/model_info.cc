#include "server/request/model_info.h"

#include <algorithm>
#include <cstdlib>

namespace reformer::serving {
namespace {

constexpr const char* kExtensions[] = {"parameters", "statistics", "model_configuration",
                                       "binary_tensor_data"};

ModelConfigInfo::Tensor ConfigTensor(const TensorSpec& t) {
  return {t.name, t.datatype, ConfigDims(t), t.optional};
}

}  // namespace

absl::Span<const char* const> ServerExtensions() { return kExtensions; }

std::vector<std::pair<std::string, std::string>> ModelProperties(const ServedModel& m,
                                                                 const ServiceLimits& limits) {
  return {{"max_tokens_per_document", std::to_string(m.context())},
          {"max_tokens_per_request", std::to_string(limits.max_tokens_per_request)},
          {"max_response_bytes", std::to_string(limits.max_response_bytes)},
          {"vocab_size", std::to_string(m.config.vocab_size)},
          {"causal", m.config.is_decoder ? "true" : "false"},
          {"tokenizer", m.tokenizer_name},
          {"rotations_source", m.rotations_source}};
}

ModelConfigInfo ConfigOf(const ServedModel& m) {
  ModelConfigInfo c;
  c.name = m.name;
  c.platform = m.platform;
  c.max_batch_size = static_cast<int32_t>(std::min<int64_t>(m.max_batch_size, 1 << 30));
  const ModelSignature sig = SignatureOf(m);
  for (const TensorSpec& t : sig.inputs) c.inputs.push_back(ConfigTensor(t));
  for (const TensorSpec& t : sig.outputs) {
    c.outputs.push_back(ConfigTensor(t));
    c.outputs.back().optional = false;
  }
  return c;
}

const char* ConfigTypeName(DataType type) {
  switch (type) {
    case DataType::kBool:
      return "TYPE_BOOL";
    case DataType::kInt32:
      return "TYPE_INT32";
    case DataType::kInt64:
      return "TYPE_INT64";
    case DataType::kFp32:
      return "TYPE_FP32";
    case DataType::kBytes:
      return "TYPE_STRING";
  }
  std::abort();
}

}  // namespace reformer::serving
