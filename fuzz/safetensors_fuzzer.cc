// Fuzz target: the safetensors reader (engine/weights/safetensors.h), the format of every weights
// file the server maps (model.safetensors, rotations.safetensors). Input: the whole file.
// Checks beyond "no crash": every tensor the reader accepts lies inside the buffer, and converting it
// to float32 (ReadF32, as the weight loader does) reads exactly its bytes.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/weights/safetensors.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "safetensors_fuzzer: invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = reformer::SafetensorsFile::Parse(nullptr, data, size, "fuzz.safetensors");
  if (!file.ok()) return 0;
  for (const std::string& name : (*file)->Names()) {
    const reformer::TensorEntry* e = (*file)->Find(name);
    Check(e != nullptr, "a listed tensor is found");
    Check(e->data >= data && e->nbytes <= size && e->data + e->nbytes <= data + size,
          "tensor bytes inside the file");
    Check(static_cast<uint64_t>(e->numel()) * reformer::DTypeSize(e->dtype) == e->nbytes ||
              reformer::DTypeSize(e->dtype) == 0,
          "bytes = elements x element size");
    std::shared_ptr<const void> keep;
    auto values = (*file)->ReadF32(name, e->shape, &keep);
    if (!values.ok()) continue;
    volatile float sum = 0;
    for (int64_t i = 0; i < e->numel(); ++i) sum = sum + (*values)[i];
  }
  return 0;
}
