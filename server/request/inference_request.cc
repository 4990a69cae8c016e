#include "server/request/inference_request.h"

#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "server/request/checked_math.h"

namespace reformer::serving {

uint32_t InferenceRequest::engine_outputs() const {
  uint32_t flags = 0;
  for (OutputKind kind : outputs) flags |= SpecOf(kind).engine_flag;
  return flags;
}

int64_t InferenceRequest::TokenStart(int64_t d) const {
  return padded_length > 0 ? d * padded_length + left_of(d) : documents.offset(d);
}

std::vector<int64_t> InferenceRequest::OutputShape(OutputKind kind) const {
  const OutputSpec& spec = SpecOf(kind);
  std::vector<int64_t> shape;
  if (spec.per_token && padded_length == 0) {
    shape.push_back(documents.total_tokens());
  } else {
    shape.push_back(documents.size());
    if (spec.per_token) shape.push_back(padded_length);
  }
  if (spec.width != OutputWidth::kOne) shape.push_back(WidthOf(kind, dims));
  return shape;
}

int64_t InferenceRequest::OutputBytes(OutputKind kind) const {
  int64_t bytes = DataTypeSize(SpecOf(kind).datatype);
  for (int64_t d : OutputShape(kind)) bytes = SaturatingMul(bytes, d);
  return bytes;
}

int64_t InferenceRequest::ResponseBytes() const {
  int64_t total = 0;
  for (OutputKind kind : outputs) total = SaturatingAdd(total, OutputBytes(kind));
  return total;
}

absl::Status InferenceRequest::AllocateOutputs() {
  absl::call_once(allocate_once_, [this] {
    try {
      allocate_status_ = DoAllocate();
    } catch (const std::bad_alloc&) {
      allocate_status_ = absl::ResourceExhaustedError(
          absl::StrCat("out of memory allocating ", ResponseBytes(), " bytes of response buffers"));
    }
    if (!allocate_status_.ok()) buffers_.clear();
  });
  return allocate_status_;
}

absl::Status InferenceRequest::DoAllocate() {
  buffers_.reserve(outputs.size());
  for (OutputKind kind : outputs) {
    absl::StatusOr<OutputBuffer> buffer =
        OutputBuffer::Allocate(static_cast<size_t>(OutputBytes(kind)));
    if (!buffer.ok()) return buffer.status();
    buffers_.push_back(*std::move(buffer));
    OutputBuffer& b = buffers_.back();
    if (kind == OutputKind::kTokenIds) {
      WriteTokenIds(b.as<int64_t>());
    } else if (kind == OutputKind::kLengths) {
      for (int64_t d = 0; d < documents.size(); ++d) {
        b.as<int32_t>()[d] = static_cast<int32_t>(documents.length(d));
      }
    } else if (SpecOf(kind).per_token && padded_length > 0) {
      ZeroPadding(kind, b.data());
    }
  }
  return absl::OkStatus();
}

void InferenceRequest::ZeroPadding(OutputKind kind, char* dst) const {
  const size_t row_bytes =
      static_cast<size_t>(WidthOf(kind, dims) * DataTypeSize(SpecOf(kind).datatype));
  const int64_t t = padded_length;
  for (int64_t d = 0; d < documents.size(); ++d) {
    const int64_t begin = left_of(d), end = begin + documents.length(d);
    std::memset(dst + static_cast<size_t>(d * t) * row_bytes, 0,
                static_cast<size_t>(begin) * row_bytes);
    std::memset(dst + static_cast<size_t>(d * t + end) * row_bytes, 0,
                static_cast<size_t>(t - end) * row_bytes);
  }
}

void InferenceRequest::WriteTokenIds(int64_t* dst) const {
  for (int64_t d = 0; d < documents.size(); ++d) {
    absl::Span<const int32_t> doc = documents[d];
    int64_t* row = dst + TokenStart(d);
    if (padded_length > 0) {
      int64_t* row_begin = dst + d * padded_length;
      for (int64_t p = 0; p < padded_length; ++p) row_begin[p] = dims.pad_token_id;
    }
    for (size_t p = 0; p < doc.size(); ++p) row[p] = doc[p];
  }
}

OutputView InferenceRequest::View(int64_t d) const {
  OutputView view;
  for (size_t i = 0; i < outputs.size() && i < buffers_.size(); ++i) {
    const OutputKind kind = outputs[i];
    if (SpecOf(kind).engine_flag == 0) continue;
    const int64_t width = WidthOf(kind, dims);
    float* at = buffers_[i].as<float>() + (SpecOf(kind).per_token ? TokenStart(d) : d) * width;
    switch (kind) {
      case OutputKind::kLogits:
        view.logits = at;
        break;
      case OutputKind::kHiddenStates:
        view.hidden_states = at;
        break;
      case OutputKind::kTokenLogprobs:
        view.token_logprobs = at;
        break;
      case OutputKind::kEmbedding:
        view.embedding = at;
        break;
      default:
        break;
    }
  }
  return view;
}

}  // namespace reformer::serving
