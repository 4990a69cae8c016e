// KServe v2 ModelInferRequest (ModelInfer, and each ModelStreamInfer message) -> InferenceRequest.
//
// This file knows only gRPC's way of carrying tensors: contents are all raw (`raw_input_contents`,
// one entry per input, in order) or all typed (`contents`); a request mixing them is
// INVALID_ARGUMENT. What the tensors mean (input names, shapes, datatypes, mask, rows, text,
// outputs, `priority` and `timeout`) is server/request/tensor_inputs.h, shared with the REST
// adapter.
//
// What a client declares must match what it sent, exactly, and this is checked with overflow-safe
// arithmetic before anything is sized: raw bytes = elements x datatype size; typed element count =
// elements; raw BYTES = exactly `elements` length-prefixed strings filling the entry. Memory is
// therefore bounded by the bytes received (itself bounded by the gRPC receive limit), never by a
// declared shape. Parameters: `priority` and `timeout` as int64 or uint64 parameters.
// Documents, ids, outputs and the response size are then checked once, by Validate().
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
