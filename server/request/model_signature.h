// The model's signature, defined once: the input and output tensors (names, datatypes, shapes) that
// ModelMetadata, ModelConfig, HTTP /v2/models/{name} and the response-size checks all read.
//
// Inputs: `input_ids` INT64 [-1,-1] (INT32 accepted too), optional `attention_mask` INT64 [-1,-1]
// (INT32 and BOOL accepted), and with a tokenizer `text` BYTES [-1].
// Outputs (response order when none is named): logits FP32 [-1,-1,V], hidden_states FP32
// [-1,-1,2H], token_logprobs FP32 [-1,-1], embedding FP32 [-1,2H], and for text input token_ids
// INT64 [-1,-1] and lengths INT32 [-1]. The first dimension is the batch (rows), the second the row
// length T.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/request/served_model.h"

namespace reformer::serving {

enum class DataType : uint8_t { kBool, kInt32, kInt64, kFp32, kBytes };

// KServe v2 datatype name ("INT64", ...).
const char* DataTypeName(DataType type);
// Bytes per element (BYTES: 0, variable).
int64_t DataTypeSize(DataType type);

enum class OutputKind : uint8_t {
  kLogits,
  kHiddenStates,
  kTokenLogprobs,
  kEmbedding,
  kTokenIds,
  kLengths
};

// How many values an output has per position (per token, or per document).
enum class OutputWidth : uint8_t { kOne, kVocab, kEmbedding };

struct OutputSpec {
  OutputKind kind;
  const char* name;
  DataType datatype;
  uint32_t engine_flag;  // reformer::OutputFlags bit; 0 = written by the request layer itself
  bool per_token;        // [B, T(, width)]; otherwise [B(, width)]
  OutputWidth width;     // kOne: no width dimension
  bool text_only;        // exists only for `text` input
};

// Every output, in the default response order.
absl::Span<const OutputSpec> AllOutputs();
const OutputSpec& SpecOf(OutputKind kind);
// nullptr for an unknown name.
const OutputSpec* FindOutput(absl::string_view name);
// Values per position of `kind` for a model of `dims`.
int64_t WidthOf(OutputKind kind, const ModelDims& dims);

struct TensorSpec {
  std::string name;
  DataType datatype;
  std::vector<int64_t> shape;  // -1 = variable; the first dimension is the batch
  bool optional = false;
};

struct ModelSignature {
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
};

ModelSignature SignatureOf(const ServedModel& model);

// Triton's ModelConfig `dims`: the shape without the batch dimension, [1] for a per-row scalar.
std::vector<int64_t> ConfigDims(const TensorSpec& tensor);

}  // namespace reformer::serving
