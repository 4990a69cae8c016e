// Safetensors reader (bounds-checked, over an mmap) and writer.
//
// Format: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the data block; offsets are relative to the start of the data block.
// Every error message names the file (and the tensor when there is one).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace reformer {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool, kU16, kU32, kU64 };

absl::StatusOr<DType> ParseDType(absl::string_view name);
const char* DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapping
  size_t nbytes = 0;
  int64_t numel() const;
};

std::string ShapeString(const std::vector<int64_t>& shape);

class SafetensorsFile {
 public:
  // Maps and parses `path`.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses an in-memory buffer; `owner` keeps `data` alive; `source` names it in errors.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(std::shared_ptr<const void> owner,
                                                                const uint8_t* data, size_t size,
                                                                const std::string& source);

  const std::string& path() const { return path_; }
  // nullptr when absent.
  const TensorEntry* Find(const std::string& name) const;
  bool Has(const std::string& name) const { return Find(name) != nullptr; }
  std::vector<std::string> Names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::shared_ptr<const void> owner() const { return owner_; }

  // Returns the tensor as float32, checking the shape (`expected_shape` empty = any shape).
  // F32 aligned data is returned as a view into the mapping (kept alive by `*keepalive`);
  // F16/BF16/F64 (and unaligned F32) are converted into a new buffer stored in `*keepalive`.
  // Errors: NOT_FOUND (missing tensor), INVALID_ARGUMENT (shape or dtype), naming file and tensor.
  absl::StatusOr<const float*> ReadF32(const std::string& name,
                                       const std::vector<int64_t>& expected_shape,
                                       std::shared_ptr<const void>* keepalive) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::shared_ptr<const void> owner_;
  std::map<std::string, TensorEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: raw little-endian bytes of `dtype` with `shape`.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Serialises tensors (header keys sorted; data 8-byte aligned) to `path`.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});
std::string SerializeSafetensors(const std::vector<TensorToWrite>& tensors,
                                 const std::map<std::string, std::string>& metadata = {});

TensorToWrite F32Tensor(const std::string& name, std::vector<int64_t> shape, const float* data);

// A safetensors file filled in place (outputs far larger than what should be copied): Create makes
// the file at its final size (blocks reserved where the file system can, so a full disk fails here
// and not as SIGBUS later), writes the header (same layout as SerializeSafetensors) and maps the
// whole file writable and shared; the caller writes each tensor's bytes through data(), then
// Close(). Nothing is zero-filled: bytes never written read as zeros.
class SafetensorsOutputFile {
 public:
  struct Tensor {
    std::string name;
    DType dtype = DType::kF32;
    std::vector<int64_t> shape;
  };
  // INVALID_ARGUMENT for a negative dimension or a size that overflows; INTERNAL for OS errors
  // (message names the path and the error).
  static absl::StatusOr<std::unique_ptr<SafetensorsOutputFile>> Create(
      const std::string& path, const std::vector<Tensor>& tensors,
      const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsOutputFile();  // unmaps and closes if Close() was not called
  SafetensorsOutputFile(const SafetensorsOutputFile&) = delete;
  SafetensorsOutputFile& operator=(const SafetensorsOutputFile&) = delete;

  // The tensor's bytes in the mapping (8-byte aligned); nullptr for an unknown name or after Close.
  uint8_t* data(const std::string& name) const;
  float* f32(const std::string& name) const { return reinterpret_cast<float*>(data(name)); }
  size_t file_bytes() const { return size_; }
  // Faults the whole mapping in before the writes (MADV_POPULATE_WRITE, Linux 5.14+), split into
  // `threads` 2 MiB-aligned slices populated side by side; the contents do not change. Advisory:
  // returns false where unsupported or on error, and the writes then fault page by page as before.
  // Measured on the VMs this runs on: a whole-file populate cost a fraction of the CPU the same
  // pages cost when first written by the forward's threads (docs/results/forward.md).
  bool Prefault(int threads);
  // Unmaps and closes; the contents reach the disk through the page cache as for any write.
  absl::Status Close();

 private:
  SafetensorsOutputFile() = default;
  std::string path_;
  int fd_ = -1;
  uint8_t* map_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, size_t> offsets_;  // tensor name -> byte offset in the file
};

// IEEE half / bfloat16 → float.
float HalfToFloat(uint16_t h);
float BFloat16ToFloat(uint16_t b);

}  // namespace reformer
