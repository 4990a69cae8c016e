#include "server/http/rest_infer_encode.h"

#include <string>

#include "server/request/model_signature.h"

namespace reformer::serving {
namespace {

constexpr char kJsonType[] = "application/json";
constexpr char kBinaryType[] = "application/octet-stream";

void WriteData(const OutputBuffer& buffer, DataType type, JsonWriter* w) {
  const int64_t n = static_cast<int64_t>(buffer.size()) / DataTypeSize(type);
  switch (type) {
    case DataType::kFp32:
      w->FloatArray(buffer.as<float>(), n);
      return;
    case DataType::kInt64:
      w->Int64Array(buffer.as<int64_t>(), n);
      return;
    case DataType::kInt32:
      w->Int32Array(buffer.as<int32_t>(), n);
      return;
    default:  // no output of another type exists (model_signature.h)
      w->Raw("[]");
      return;
  }
}

void WriteParameters(const InferenceResult& result, JsonWriter* w) {
  const InferenceRequest& request = *result.request;
  w->Raw(",\"parameters\":{");
  w->Key("tokens");
  w->Int(result.tokens > 0 ? result.tokens : request.documents.total_tokens());
  w->Raw(",");
  w->Key("queue_ms");
  w->Double(result.queue_seconds * 1e3);
  w->Raw(",");
  w->Key("compute_ms");
  w->Double(result.compute_seconds * 1e3);
  w->Raw("}");
}

}  // namespace

void WriteInferResponseJson(const InferenceResult& result, const ServedModel& model,
                            const std::vector<bool>& binary, JsonWriter* w) {
  InferenceRequest& request = *result.request;
  w->Raw("{");
  w->Key("model_name");
  w->String(model.name);
  w->Raw(",");
  w->Key("model_version");
  w->String(model.version);
  if (!request.id.empty()) {
    w->Raw(",");
    w->Key("id");
    w->String(request.id);
  }
  WriteParameters(result, w);
  w->Raw(",\"outputs\":[");
  for (size_t i = 0; i < request.outputs.size(); ++i) {
    const OutputSpec& spec = SpecOf(request.outputs[i]);
    if (i > 0) w->Raw(",");
    w->Raw("{");
    w->Key("name");
    w->String(spec.name);
    w->Raw(",");
    w->Key("datatype");
    w->String(DataTypeName(spec.datatype));
    w->Raw(",\"shape\":[");
    const std::vector<int64_t> shape = request.OutputShape(spec.kind);
    for (size_t d = 0; d < shape.size(); ++d) {
      if (d > 0) w->Raw(",");
      w->Int(shape[d]);
    }
    w->Raw("]");
    if (binary[i]) {
      w->Raw(",\"parameters\":{\"binary_data_size\":");
      w->Int(static_cast<int64_t>(request.buffer(i).size()));
      w->Raw("}}");
    } else {
      w->Raw(",\"data\":");
      WriteData(request.buffer(i), spec.datatype, w);
      w->Raw("}");
    }
  }
  w->Raw("]}");
}

bool SendInferResponse(HttpExchange* exchange, InferenceResult& result, const ServedModel& model,
                       const std::vector<bool>& binary) {
  InferenceRequest& request = *result.request;
  bool any_binary = false;
  int64_t binary_bytes = 0;
  for (size_t i = 0; i < binary.size(); ++i) {
    if (!binary[i]) continue;
    any_binary = true;
    binary_bytes += static_cast<int64_t>(request.buffer(i).size());
  }
  if (!any_binary && exchange->http11()) {  // length unknown: streamed, chunked when long
    StreamingBody body(exchange, 200, kJsonType);
    JsonWriter w(&body);
    WriteInferResponseJson(result, model, binary, &w);
    return w.Flush() && body.Finish();
  }
  CountingSink counter;
  {
    JsonWriter w(&counter);
    WriteInferResponseJson(result, model, binary, &w);
    w.Flush();
  }
  const int64_t json_bytes = counter.bytes();
  std::vector<HttpHeader> headers;
  if (any_binary)
    headers.push_back({"Inference-Header-Content-Length", std::to_string(json_bytes)});
  if (!exchange->SendHead(200, any_binary ? kBinaryType : kJsonType, json_bytes + binary_bytes,
                          headers)) {
    return false;
  }
  ConnectionSink sink(exchange);
  JsonWriter w(&sink);
  WriteInferResponseJson(result, model, binary, &w);
  if (!w.Flush()) return false;
  for (size_t i = 0; i < binary.size(); ++i) {
    if (!binary[i]) continue;
    const OutputBuffer& buffer = request.buffer(i);
    if (!exchange->Write(absl::string_view(buffer.data(), buffer.size()))) return false;
  }
  return true;
}

}  // namespace reformer::serving
