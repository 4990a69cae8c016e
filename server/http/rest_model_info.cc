#include "server/http/rest_model_info.h"

#include <vector>

#include "server/http/json_writer.h"
#include "server/request/model_info.h"
#include "server/request/model_signature.h"

namespace reformer::serving {
namespace {

void IntList(const std::vector<int64_t>& values, JsonWriter* w) {
  w->Raw("[");
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) w->Raw(",");
    w->Int(values[i]);
  }
  w->Raw("]");
}

void MetadataTensors(const std::vector<TensorSpec>& tensors, JsonWriter* w) {
  w->Raw("[");
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (i > 0) w->Raw(",");
    w->Raw("{\"name\":");
    w->String(tensors[i].name);
    w->Raw(",\"datatype\":");
    w->String(DataTypeName(tensors[i].datatype));
    w->Raw(",\"shape\":");
    IntList(tensors[i].shape, w);
    w->Raw("}");
  }
  w->Raw("]");
}

void ConfigTensors(const std::vector<ModelConfigInfo::Tensor>& tensors, bool inputs,
                   JsonWriter* w) {
  w->Raw("[");
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (i > 0) w->Raw(",");
    w->Raw("{\"name\":");
    w->String(tensors[i].name);
    w->Raw(",\"data_type\":");
    w->String(ConfigTypeName(tensors[i].datatype));
    w->Raw(",\"dims\":");
    IntList(tensors[i].dims, w);
    if (inputs) w->Raw(tensors[i].optional ? ",\"optional\":true" : ",\"optional\":false");
    w->Raw("}");
  }
  w->Raw("]");
}

void Duration(const char* name, const ModelStatsSnapshot::Duration& d, JsonWriter* w) {
  w->Key(name);
  w->Raw("{\"count\":");
  w->Int(static_cast<int64_t>(d.count));
  w->Raw(",\"ns\":");
  w->Int(static_cast<int64_t>(d.ns));
  w->Raw("}");
}

// `fill` writes into a JsonWriter over the returned string.
template <typename Fill>
std::string Json(Fill fill) {
  std::string out;
  StringSink sink(&out);
  JsonWriter w(&sink);
  fill(&w);
  w.Flush();
  return out;
}

}  // namespace

std::string ServerMetadataJson() {
  return Json([](JsonWriter* w) {
    w->Raw("{\"name\":");
    w->String(kServerName);
    w->Raw(",\"version\":");
    w->String(kServerVersion);
    w->Raw(",\"extensions\":[");
    bool first = true;
    for (const char* extension : ServerExtensions()) {
      if (!first) w->Raw(",");
      first = false;
      w->String(extension);
    }
    w->Raw("]}");
  });
}

std::string ModelMetadataJson(const ServedModel& m, const ServiceLimits& limits) {
  return Json([&](JsonWriter* w) {
    const ModelSignature sig = SignatureOf(m);
    w->Raw("{\"name\":");
    w->String(m.name);
    w->Raw(",\"versions\":[");
    w->String(m.version);
    w->Raw("],\"platform\":");
    w->String(m.platform);
    w->Raw(",\"inputs\":");
    MetadataTensors(sig.inputs, w);
    w->Raw(",\"outputs\":");
    MetadataTensors(sig.outputs, w);
    w->Raw(",\"properties\":{");
    bool first = true;
    for (const auto& [key, value] : ModelProperties(m, limits)) {
      if (!first) w->Raw(",");
      first = false;
      w->Key(key);
      w->String(value);
    }
    w->Raw("}}");
  });
}

std::string ModelConfigJson(const ServedModel& m) {
  return Json([&](JsonWriter* w) {
    const ModelConfigInfo c = ConfigOf(m);
    w->Raw("{\"name\":");
    w->String(c.name);
    w->Raw(",\"platform\":");
    w->String(c.platform);
    w->Raw(",\"backend\":");
    w->String(c.backend);
    w->Raw(",\"max_batch_size\":");
    w->Int(c.max_batch_size);
    w->Raw(",\"input\":");
    ConfigTensors(c.inputs, /*inputs=*/true, w);
    w->Raw(",\"output\":");
    ConfigTensors(c.outputs, /*inputs=*/false, w);
    w->Raw("}");
  });
}

std::string ModelStatsJson(const ServedModel& m, const ModelStatsSnapshot& s) {
  return Json([&](JsonWriter* w) {
    w->Raw("{\"model_stats\":[{\"name\":");
    w->String(m.name);
    w->Raw(",\"version\":");
    w->String(m.version);
    w->Raw(",\"last_inference\":");
    w->Int(static_cast<int64_t>(s.last_inference_ms));
    w->Raw(",\"inference_count\":");
    w->Int(static_cast<int64_t>(s.inference_count));
    w->Raw(",\"execution_count\":");
    w->Int(static_cast<int64_t>(s.execution_count));
    w->Raw(",\"inference_stats\":{");
    Duration("success", s.success, w);
    w->Raw(",");
    Duration("fail", s.fail, w);
    w->Raw(",");
    Duration("queue", s.queue, w);
    w->Raw(",");
    Duration("compute_infer", s.compute, w);
    w->Raw("},\"batch_stats\":[");
    bool first = true;
    for (const auto& [size, compute] : s.batch_sizes) {
      if (!first) w->Raw(",");
      first = false;
      w->Raw("{\"batch_size\":");
      w->Int(static_cast<int64_t>(size));
      w->Raw(",");
      Duration("compute_infer", compute, w);
      w->Raw("}");
    }
    w->Raw("]}]}");
  });
}

}  // namespace reformer::serving
