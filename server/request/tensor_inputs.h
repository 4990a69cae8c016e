// The KServe v2 input rules, once, for every wire that carries KServe v2 tensors (gRPC ModelInfer
// and ModelStreamInfer, REST /infer with JSON or binary tensor data). A wire decoder parses its
// format into InputTensor views and hands them to DecodeInputs(); everything that gives a tensor a
// meaning (which names exist, shapes, datatypes, the mask, rows, text) lives here, so both wires
// accept and refuse the same requests with the same messages (docs/request-path.md).
//
// Inputs: `input_ids` INT32|INT64 [B,T] with optional `attention_mask` INT32|INT64|BOOL [B,T]
// (values 0/1, a row's ones contiguous), or `text` BYTES [B] (or [B,1]) tokenized with the model's
// tokenizer. Each row is one document; the response keeps the [B,T] layout.
//
// What a client declares must match what it sent: the wire checks that through InputContents,
// which DecodeInputs calls only after the tensor's shape and datatype are known to be sensible and
// before anything is sized from the shape. Memory therefore follows the bytes received, never a
// declared shape. Row counts (each row needs a token) and tokenized text are held to
// max_tokens_per_request while decoding (CheckTokenCount). Errors: INVALID_ARGUMENT naming the
// input and the numbers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/request/inference_request.h"
#include "server/request/model_signature.h"
#include "server/request/served_model.h"
#include "server/request/validate.h"

namespace reformer::serving {

// A tensor's integer elements (row-major), read in place from contiguous little-endian storage of
// INT32, INT64 or BOOL (1 byte, 0/1) values.
class IntElements {
 public:
  IntElements() = default;
  IntElements(DataType storage, const void* data)
      : storage_(storage), data_(static_cast<const char*>(data)) {}
  int64_t operator[](int64_t i) const;

 private:
  DataType storage_ = DataType::kInt64;
  const char* data_ = nullptr;
};

// How a wire delivers one tensor's contents. Both calls check what was sent against `count`, the
// element count of the declared shape, before anything is sized from it.
class InputContents {
 public:
  virtual ~InputContents() = default;
  // Exactly `count` integers of the declared `type` (INT32, INT64 or BOOL), or INVALID_ARGUMENT
  // naming the input and both numbers.
  virtual absl::StatusOr<IntElements> Ints(DataType type, int64_t count) const = 0;
  // Exactly `count` strings; `count` is compared with what was sent, then held to the row limit
  // (CheckTokenCount with noun "text row"), before the list is sized.
  virtual absl::StatusOr<std::vector<absl::string_view>> Strings(
      int64_t count, const RequestLimits& limits) const = 0;
};

// One input tensor as a wire declares it. Views: the wire's message outlives the decoding.
struct InputTensor {
  absl::string_view name;
  absl::string_view datatype;       // as sent, e.g. "INT64"
  absl::Span<const int64_t> shape;  // as sent
  const InputContents* contents = nullptr;
};

// Fills request->documents, noun, padded_length, left and text_input from `inputs` (the rules
// above). request->dims must be set (token id messages name the vocabulary).
absl::Status DecodeInputs(absl::Span<const InputTensor> inputs, const ServedModel& model,
                          const RequestLimits& limits, InferenceRequest* request);

// The requested outputs by name, in order, into request->outputs; none named = every output (the
// text-only ones when the input was text). Call after DecodeInputs.
absl::Status DecodeOutputNames(absl::Span<const absl::string_view> names,
                               InferenceRequest* request);

// The reserved request parameters (server/request/served_model.h users: gRPC and REST): `priority`
// (>= 0; 0 = default, 1 = highest) and `timeout` (>= 0 microseconds; 0 = none).
absl::Status ApplyPriority(int64_t priority, InferenceRequest* request);
absl::StatusOr<std::optional<absl::Duration>> TimeoutParameter(int64_t microseconds);
// INVALID_ARGUMENT for a parameter of the wrong type, e.g. "must be an int64 or uint64 parameter".
absl::Status ParameterTypeError(absl::string_view name, absl::string_view expected);

// "[2,3]".
std::string ShapeString(absl::Span<const int64_t> shape);

// Element count of `name`'s declared shape: INVALID_ARGUMENT for a negative dimension or a count
// beyond 64 bits. Nothing is compared with what was sent yet.
absl::StatusOr<int64_t> ElementCount(absl::string_view name, absl::Span<const int64_t> shape);

// The `count` length-prefixed strings (4-byte little-endian length, then the bytes) that must fill
// `bytes` exactly, as views into it; `what` names the bytes in messages ("raw BYTES content",
// "binary BYTES data"). The count is checked against the bytes (each string carries 4) and the
// row limit before the list is sized.
absl::StatusOr<std::vector<absl::string_view>> ReadLengthPrefixed(absl::string_view name,
                                                                  absl::Span<const int64_t> shape,
                                                                  absl::string_view bytes,
                                                                  int64_t count, const char* what,
                                                                  const RequestLimits& limits);

}  // namespace reformer::serving
