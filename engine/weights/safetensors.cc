#include "engine/weights/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"
#include "engine/weights/mmap_file.h"
#include "nlohmann/json.hpp"

namespace reformer {
namespace {

constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;  // same bound as the reference format

struct DTypeInfo {
  const char* name;
  DType dtype;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {"F64", DType::kF64, 8},   {"F32", DType::kF32, 4},  {"F16", DType::kF16, 2},
    {"BF16", DType::kBF16, 2}, {"I64", DType::kI64, 8},  {"I32", DType::kI32, 4},
    {"I16", DType::kI16, 2},   {"I8", DType::kI8, 1},    {"U8", DType::kU8, 1},
    {"BOOL", DType::kBool, 1}, {"U16", DType::kU16, 2},  {"U32", DType::kU32, 4},
    {"U64", DType::kU64, 8},
};

}  // namespace

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (const auto& d : kDTypes) {
    if (name == d.name) return d.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", name, "'"));
}

const char* DTypeName(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.size;
  }
  return 0;
}

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float BFloat16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<const MmapFile> file, MmapFile::Open(path));
  const uint8_t* data = file->data();
  const size_t size = file->size();
  return Parse(std::move(file), data, size, path);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(
    std::shared_ptr<const void> owner, const uint8_t* data, size_t size, const std::string& source) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a valid safetensors file: ", what));
  };
  if (size < 8) return bad(absl::StrCat("file is ", size, " bytes, shorter than the 8-byte header length"));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > kMaxHeaderBytes) return bad(absl::StrCat("header length ", header_len, " is implausible"));
  if (header_len > size - 8) {
    return bad(absl::StrCat("header length ", header_len, " exceeds the file size ", size,
                            " (truncated file?)"));
  }
  const size_t data_start = 8 + header_len;
  const size_t data_size = size - data_start;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(data + 8, data + 8 + header_len);
  } catch (const std::exception& e) {
    return bad(absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) return bad("header is not a JSON object");

  std::unique_ptr<SafetensorsFile> out(new SafetensorsFile());
  out->path_ = source;
  out->owner_ = std::move(owner);
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (v.is_object()) {
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (m.value().is_string()) out->metadata_[m.key()] = m.value().get<std::string>();
        }
      }
      continue;
    }
    auto tensor_bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": tensor '", name, "': ", what));
    };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets")) {
      return tensor_bad("header entry lacks dtype/shape/data_offsets");
    }
    TensorEntry e;
    e.name = name;
    if (!v["dtype"].is_string()) return tensor_bad("dtype is not a string");
    auto dtype = ParseDType(v["dtype"].get<std::string>());
    if (!dtype.ok()) return tensor_bad(std::string(dtype.status().message()));
    e.dtype = *dtype;
    if (!v["shape"].is_array()) return tensor_bad("shape is not an array");
    int64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) return tensor_bad("shape has a non-integer or negative dim");
      const int64_t dim = d.get<int64_t>();
      if (dim != 0 && numel > std::numeric_limits<int64_t>::max() / dim) return tensor_bad("shape overflows");
      numel *= dim;
      e.shape.push_back(dim);
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned()) {
      return tensor_bad("data_offsets must be two non-negative integers");
    }
    const uint64_t begin = off[0].get<uint64_t>();
    const uint64_t end = off[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return tensor_bad(absl::StrCat("data_offsets [", begin, ", ", end,
                                     "] out of range: the data block has ", data_size,
                                     " bytes (truncated file?)"));
    }
    // elements x element size, without wrapping around 2^64 (a wrapped product could match a
    // short or empty byte range and make a 2^61-element tensor out of nothing).
    const uint64_t elem = DTypeSize(e.dtype);
    const uint64_t held = end - begin;
    if (static_cast<uint64_t>(numel) > held / elem || static_cast<uint64_t>(numel) * elem != held) {
      const bool huge = static_cast<uint64_t>(numel) > std::numeric_limits<uint64_t>::max() / elem;
      return tensor_bad(absl::StrCat("holds ", held, " bytes but ", DTypeName(e.dtype), " ",
                                     ShapeString(e.shape), " needs ",
                                     huge ? std::string("more than 2^64")
                                          : absl::StrCat(static_cast<uint64_t>(numel) * elem)));
    }
    e.data = data + data_start + begin;
    e.nbytes = end - begin;
    out->tensors_.emplace(name, std::move(e));
  }
  return out;
}

const TensorEntry* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, e] : tensors_) names.push_back(name);
  return names;
}

absl::StatusOr<const float*> SafetensorsFile::ReadF32(const std::string& name,
                                                      const std::vector<int64_t>& expected_shape,
                                                      std::shared_ptr<const void>* keepalive) const {
  const TensorEntry* e = Find(name);
  if (e == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": missing tensor '", name, "'",
                                            expected_shape.empty()
                                                ? ""
                                                : absl::StrCat(" (expected shape ",
                                                               ShapeString(expected_shape), ")")));
  }
  if (!expected_shape.empty() && e->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor '", name, "' has shape ",
                                                   ShapeString(e->shape), ", expected ",
                                                   ShapeString(expected_shape)));
  }
  const int64_t n = e->numel();
  if (e->dtype == DType::kF32 && reinterpret_cast<uintptr_t>(e->data) % alignof(float) == 0) {
    *keepalive = owner_;
    return reinterpret_cast<const float*>(e->data);
  }
  if (e->dtype != DType::kF32 && e->dtype != DType::kF16 && e->dtype != DType::kBF16 &&
      e->dtype != DType::kF64) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor '", name, "' has dtype ",
                                                   DTypeName(e->dtype),
                                                   ", expected a float type (F32, F16, BF16)"));
  }
  auto buf = std::shared_ptr<float[]>(new float[std::max<int64_t>(n, 1)]);
  const uint8_t* src = e->data;
  for (int64_t i = 0; i < n; ++i) {
    switch (e->dtype) {
      case DType::kF32: std::memcpy(&buf[i], src + 4 * i, 4); break;
      case DType::kF64: {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        buf[i] = static_cast<float>(d);
        break;
      }
      case DType::kF16:
      case DType::kBF16: {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        buf[i] = e->dtype == DType::kF16 ? HalfToFloat(h) : BFloat16ToFloat(h);
        break;
      }
      default: break;
    }
  }
  const float* ptr = buf.get();
  *keepalive = std::shared_ptr<const void>(buf, buf.get());
  return ptr;
}

namespace {

// The 8-byte length and the JSON header, padded with spaces so that the data block starts 8-byte
// aligned; `sizes` are the tensors' byte counts in data order.
std::string HeaderBytes(const std::vector<const std::string*>& names, const std::vector<DType>& dtypes,
                        const std::vector<const std::vector<int64_t>*>& shapes, const std::vector<uint64_t>& sizes,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    header[*names[i]] = {{"dtype", DTypeName(dtypes[i])},
                         {"shape", *shapes[i]},
                         {"data_offsets", {offset, offset + sizes[i]}}};
    offset += sizes[i];
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');
  std::string out;
  const uint64_t len = h.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  return out + h;
}

std::string Errno(const std::string& path, const char* what) {
  return absl::StrCat(path, ": ", what, ": ", std::strerror(errno));
}

}  // namespace

std::string SerializeSafetensors(const std::vector<TensorToWrite>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  std::vector<const std::string*> names;
  std::vector<DType> dtypes;
  std::vector<const std::vector<int64_t>*> shapes;
  std::vector<uint64_t> sizes;
  uint64_t total = 0;
  for (const auto& t : tensors) {
    names.push_back(&t.name);
    dtypes.push_back(t.dtype);
    shapes.push_back(&t.shape);
    sizes.push_back(t.bytes.size());
    total += t.bytes.size();
  }
  std::string out = HeaderBytes(names, dtypes, shapes, sizes, metadata);
  out.reserve(out.size() + total);
  for (const auto& t : tensors) out += t.bytes;
  return out;
}

absl::StatusOr<std::unique_ptr<SafetensorsOutputFile>> SafetensorsOutputFile::Create(
    const std::string& path, const std::vector<Tensor>& tensors, const std::map<std::string, std::string>& metadata) {
  std::vector<const std::string*> names;
  std::vector<DType> dtypes;
  std::vector<const std::vector<int64_t>*> shapes;
  std::vector<uint64_t> sizes;
  constexpr uint64_t kMaxBytes = uint64_t{1} << 50;
  uint64_t total = 0;
  for (const Tensor& t : tensors) {
    uint64_t n = DTypeSize(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0 || (d > 0 && n > kMaxBytes / static_cast<uint64_t>(d)))
        return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "' has shape ",
                                                       ShapeString(t.shape), " (negative or too large)"));
      n *= static_cast<uint64_t>(d);
    }
    if (total + n > kMaxBytes)
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensors add up to more than 2^50 bytes"));
    names.push_back(&t.name);
    dtypes.push_back(t.dtype);
    shapes.push_back(&t.shape);
    sizes.push_back(n);
    total += n;
  }
  const std::string header = HeaderBytes(names, dtypes, shapes, sizes, metadata);
  std::unique_ptr<SafetensorsOutputFile> f(new SafetensorsOutputFile());
  f->path_ = path;
  f->size_ = header.size() + total;
  size_t offset = header.size();
  for (size_t i = 0; i < tensors.size(); ++i) {
    f->offsets_[tensors[i].name] = offset;
    offset += sizes[i];
  }
  f->fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (f->fd_ < 0) return absl::InternalError(Errno(path, "cannot create"));
  if (::ftruncate(f->fd_, static_cast<off_t>(f->size_)) != 0) return absl::InternalError(Errno(path, "ftruncate"));
  // Reserve the blocks (no zeros are written); file systems without fallocate stay sparse.
  if (::fallocate(f->fd_, 0, 0, static_cast<off_t>(f->size_)) != 0 && errno != EOPNOTSUPP && errno != ENOSYS)
    return absl::InternalError(Errno(path, "cannot reserve the file's blocks"));
  if (::pwrite(f->fd_, header.data(), header.size(), 0) != static_cast<ssize_t>(header.size()))
    return absl::InternalError(Errno(path, "writing the header"));
  void* m = ::mmap(nullptr, f->size_, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd_, 0);
  if (m == MAP_FAILED) return absl::InternalError(Errno(path, "mmap"));
  f->map_ = static_cast<uint8_t*>(m);
  // Advisory: where the file system caches in large folios, the mapping takes one fault per 2 MiB
  // instead of one per 4 KiB page (fresh pages are the dear part on a VM, docs/results/forward.md).
  (void)::madvise(m, f->size_, MADV_HUGEPAGE);
  return f;
}

bool SafetensorsOutputFile::Prefault(int threads) {
#ifdef MADV_POPULATE_WRITE
  if (map_ == nullptr || size_ == 0) return false;
  constexpr size_t kSlice = size_t{2} << 20;
  const size_t n = static_cast<size_t>(std::max(1, threads));
  const size_t per = (size_ / n + kSlice - 1) / kSlice * kSlice;  // the mapping is page-aligned
  std::vector<int> rc(n, 0);
  auto populate = [&](size_t i) {
    const size_t begin = std::min(size_, i * per), end = std::min(size_, begin + per);
    if (end > begin) rc[i] = ::madvise(map_ + begin, end - begin, MADV_POPULATE_WRITE);
  };
  std::vector<std::thread> helpers;
  for (size_t i = 1; i < n; ++i) helpers.emplace_back(populate, i);
  populate(0);
  for (std::thread& t : helpers) t.join();
  return std::all_of(rc.begin(), rc.end(), [](int r) { return r == 0; });
#else
  (void)threads;
  return false;
#endif
}

uint8_t* SafetensorsOutputFile::data(const std::string& name) const {
  auto it = offsets_.find(name);
  return (map_ == nullptr || it == offsets_.end()) ? nullptr : map_ + it->second;
}

absl::Status SafetensorsOutputFile::Close() {
  absl::Status st;
  if (map_ != nullptr && ::munmap(map_, size_) != 0) st = absl::InternalError(Errno(path_, "munmap"));
  map_ = nullptr;
  if (fd_ >= 0 && ::close(fd_) != 0 && st.ok()) st = absl::InternalError(Errno(path_, "close"));
  fd_ = -1;
  return st;
}

SafetensorsOutputFile::~SafetensorsOutputFile() { (void)Close(); }

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  const std::string bytes = SerializeSafetensors(tensors, metadata);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return absl::InternalError(absl::StrCat(path, ": cannot open for writing"));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

TensorToWrite F32Tensor(const std::string& name, std::vector<int64_t> shape, const float* data) {
  TensorToWrite t;
  t.name = name;
  t.dtype = DType::kF32;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  t.shape = std::move(shape);
  t.bytes.assign(reinterpret_cast<const char*>(data), static_cast<size_t>(n) * sizeof(float));
  return t;
}

}  // namespace reformer
