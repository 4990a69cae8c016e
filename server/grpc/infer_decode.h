// KServe v2 ModelInferRequest (ModelInfer, and each ModelStreamInfer message) -> InferenceRequest.
//
// Inputs: `input_ids` INT32|INT64 [B,T] with optional `attention_mask` INT32|INT64|BOOL [B,T]
// (values 0/1), or `text` BYTES [B] (or [B,1]) tokenized with the model's tokenizer. Nothing else.
// Contents are all raw (`raw_input_contents`, one entry per input, in order) or all typed
// (`contents`); a request mixing them is INVALID_ARGUMENT.
//
// What a client declares must match what it sent, exactly, and this is checked with overflow-safe
// arithmetic before anything is sized: raw bytes = elements x datatype size; typed element count =
// elements; raw BYTES = exactly `elements` length-prefixed strings filling the entry. Memory is
// therefore bounded by the bytes received (itself bounded by the gRPC receive limit), never by a
// declared shape.
//
// Each row is one document: the mask marks its real tokens, contiguous, with padding before and/or
// after them; the response keeps the [B,T] layout (padding positions zeroed). Outputs are named as
// in server/request/model_signature.h; none named = all (token_ids, lengths for text only).
// Row counts (each row needs a token) and tokenized text are held to max_tokens_per_request while
// decoding. Parameters: `priority` (int64/uint64 >= 0), `timeout` (int64/uint64 microseconds, 0 =
// none). Documents, ids, outputs and the response size are then checked once, by Validate().
// Errors: INVALID_ARGUMENT (naming the input and the numbers), NOT_FOUND (model name/version).
#pragma once

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/grpc_service.pb.h"
#include "server/request/inference_request.h"
#include "server/request/served_model.h"
#include "server/request/validate.h"

namespace reformer::serving {

struct DecodedInfer {
  std::unique_ptr<InferenceRequest> request;
  std::optional<absl::Duration> timeout;  // the `timeout` parameter
};

absl::StatusOr<DecodedInfer> DecodeModelInfer(const inference::ModelInferRequest& wire,
                                              const ServedModel& model,
                                              const RequestLimits& limits);

}  // namespace reformer::serving
