// The Open Inference Protocol inference request JSON object (third_party/kserve/
// open_inference_rest.yaml, `inference_request`), read by a streaming (SAX) parser into only what
// the REST decoder needs: there is never a DOM of the body. Tensor `data` (flat or nested,
// row-major) is flattened as it streams by; its nesting is summarised per depth (CheckNesting
// compares it with the shape once the shape is known, since keys may come in any order).
//
// Memory follows the bytes received: a number or boolean leaf (at least 2 bytes of JSON) is kept
// as 8 bytes, strings are concatenated with one offset each, and the counts that could otherwise
// inflate (nesting depth, shape rank, the number of inputs and outputs) are capped while reading
// (JsonReadLimits). Unknown keys and parameters are skipped without being stored.
//
// Errors: INVALID_ARGUMENT saying where (byte offset for malformed JSON; the input or output and
// the key otherwise). What the tensors mean is checked later, by server/request/tensor_inputs.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace reformer::serving {

// A tensor's `data`, flattened.
struct JsonTensorData {
  int64_t count = 0;                // leaves, row-major
  std::vector<int64_t> ints;        // number and boolean leaves (true = 1), in order
  std::string strings;              // string leaves, concatenated, in order
  std::vector<size_t> string_ends;  // end offset of each string leaf in `strings`
  // Index of the first leaf of each kind (-1 = none); `other` is null or a non-integer number,
  // written as `other_text`.
  int64_t first_number = -1, first_bool = -1, first_string = -1, first_other = -1;
  std::string other_text;
  int64_t first_outside_int32 = -1;  // first integer leaf outside INT32
  int64_t first_outside_int64 = -1;  // first integer leaf beyond INT64 (its value then clamped)
  // Nesting: the length of the first array seen at each depth (depth 1 = `data` itself).
  std::vector<int64_t> lengths;
  bool ragged = false;  // two arrays at one depth differ in length
  int leaf_depth = 0;   // depth of every leaf; 0 = no leaf yet, -1 = leaves at different depths
};

struct JsonInput {
  std::string name, datatype;
  bool has_name = false, has_datatype = false, has_shape = false, has_data = false;
  bool has_parameters = false;
  std::vector<int64_t> shape;
  std::optional<int64_t> binary_data_size;
  JsonTensorData data;
};

struct JsonOutput {
  std::string name;
  bool has_name = false, has_parameters = false;
  std::optional<bool> binary_data;
};

struct JsonInferRequest {
  std::string id;
  bool has_id = false, has_parameters = false, has_inputs = false, has_outputs = false;
  std::optional<int64_t> priority, timeout;  // microseconds for timeout
  std::optional<bool> binary_data_output;
  std::vector<JsonInput> inputs;
  std::vector<JsonOutput> outputs;
};

struct JsonReadLimits {
  int max_depth = 32;    // nesting of the whole document
  int max_rank = 32;     // entries of a `shape`
  int max_inputs = 16;   // entries of `inputs`
  int max_outputs = 16;  // entries of `outputs`
};

absl::StatusOr<JsonInferRequest> ReadInferJson(absl::string_view json,
                                               const JsonReadLimits& limits = {});

// OK when `data` is flat, or nested exactly as `shape` says (one array level per dimension, each
// array as long as its dimension); INVALID_ARGUMENT naming `input` otherwise. The element count is
// compared with the shape separately.
absl::Status CheckNesting(const JsonTensorData& data, absl::string_view input,
                          absl::Span<const int64_t> shape);

}  // namespace reformer::serving
