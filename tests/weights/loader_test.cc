// Loader tests: safetensors parsing, config.json validation, weight binding, rotations, tokenizers.
// Every error path must name the file (and the tensor) and never crash.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "engine/model/config.h"
#include "engine/model/rotations.h"
#include "engine/model/tokenizer.h"
#include "engine/model/weights.h"
#include "engine/weights/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace reformer {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string SourceDir() {
  const char* d = std::getenv("REFORMER_SOURCE_DIR");
  return d ? d : ".";
}
std::string FixtureDir(const std::string& name) { return SourceDir() + "/tests/fixtures/" + name; }

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "reformer_loader_XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// All tensors of a safetensors file, for building mutated copies.
std::vector<TensorToWrite> ReadAll(const std::string& path) {
  auto f = SafetensorsFile::Open(path);
  EXPECT_TRUE(f.ok()) << f.status();
  std::vector<TensorToWrite> out;
  for (const auto& name : (*f)->Names()) {
    const TensorEntry* e = (*f)->Find(name);
    TensorToWrite t;
    t.name = name;
    t.dtype = e->dtype;
    t.shape = e->shape;
    t.bytes.assign(reinterpret_cast<const char*>(e->data), e->nbytes);
    out.push_back(std::move(t));
  }
  return out;
}

absl::StatusOr<ReformerConfig> ParseConfig(const nlohmann::json& j) {
  return ReformerConfig::FromJson(j.dump(), "test/config.json");
}

nlohmann::json FixtureConfigJson(const std::string& fixture) {
  return nlohmann::json::parse(ReadFile(FixtureDir(fixture) + "/config.json"));
}

// ---------------------------------------------------------------- safetensors

TEST(SafetensorsTest, RoundTripAndHalfConversions) {
  TempDir dir;
  const float vals[4] = {1.5f, -2.25f, 0.0f, 65504.0f};
  std::vector<TensorToWrite> ts = {F32Tensor("a", {2, 2}, vals)};
  TensorToWrite h;
  h.name = "h";
  h.dtype = DType::kF16;
  h.shape = {3};
  const uint16_t halves[3] = {0x3C00 /*1*/, 0xC000 /*-2*/, 0x0001 /*min subnormal*/};
  h.bytes.assign(reinterpret_cast<const char*>(halves), sizeof(halves));
  ts.push_back(h);
  TensorToWrite b;
  b.name = "b";
  b.dtype = DType::kBF16;
  b.shape = {2};
  const uint16_t bf[2] = {0x3F80 /*1*/, 0x4049 /*3.140625*/};
  b.bytes.assign(reinterpret_cast<const char*>(bf), sizeof(bf));
  ts.push_back(b);
  const std::string path = dir.path() + "/t.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, ts, {{"format", "pt"}}).ok());

  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  std::shared_ptr<const void> keep;
  auto a = (*f)->ReadF32("a", {2, 2}, &keep);
  ASSERT_TRUE(a.ok());
  for (int i = 0; i < 4; ++i) EXPECT_EQ((*a)[i], vals[i]);
  auto hv = (*f)->ReadF32("h", {3}, &keep);
  ASSERT_TRUE(hv.ok());
  EXPECT_EQ((*hv)[0], 1.0f);
  EXPECT_EQ((*hv)[1], -2.0f);
  EXPECT_FLOAT_EQ((*hv)[2], 5.9604645e-08f);
  auto bv = (*f)->ReadF32("b", {2}, &keep);
  ASSERT_TRUE(bv.ok());
  EXPECT_EQ((*bv)[0], 1.0f);
  EXPECT_EQ((*bv)[1], 3.140625f);
}

// The in-place writer makes the same bytes as the serialiser for the data written through its
// mapping; bytes never written read as zeros; a stale longer file at the path is truncated.
TEST(SafetensorsTest, OutputFileWrittenInPlace) {
  TempDir dir;
  const std::string path = dir.path() + "/out.safetensors";
  WriteFile(path, std::string(1 << 16, 'x'));  // stale content
  auto f = SafetensorsOutputFile::Create(
      path, {{"logits", DType::kF32, {2, 3, 5}}, {"hidden", DType::kF32, {2, 3, 4}}, {"ids", DType::kI32, {3}}},
      {{"format", "pt"}});
  ASSERT_TRUE(f.ok()) << f.status();
  float* logits = (*f)->f32("logits");
  float* hidden = (*f)->f32("hidden");
  ASSERT_NE(logits, nullptr);
  ASSERT_NE(hidden, nullptr);
  EXPECT_EQ((*f)->data("missing"), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(logits) % 8, 0u);
  std::vector<float> l(30), h(24, 0.f);
  for (int i = 0; i < 30; ++i) l[i] = logits[i] = 0.5f * i - 3;
  for (int i = 4; i < 12; ++i) h[i] = hidden[i] = -1.f * i;  // the rest is never written
  ASSERT_TRUE((*f)->Close().ok());
  EXPECT_EQ((*f)->data("logits"), nullptr);
  const int32_t zeros[3] = {0, 0, 0};
  TensorToWrite ids;
  ids.name = "ids";
  ids.dtype = DType::kI32;
  ids.shape = {3};
  ids.bytes.assign(reinterpret_cast<const char*>(zeros), sizeof(zeros));
  const std::string expected = SerializeSafetensors(
      {F32Tensor("logits", {2, 3, 5}, l.data()), F32Tensor("hidden", {2, 3, 4}, h.data()), ids}, {{"format", "pt"}});
  EXPECT_EQ(ReadFile(path), expected);
  auto opened = SafetensorsFile::Open(path);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ((*opened)->Find("hidden")->shape, std::vector<int64_t>({2, 3, 4}));

  auto bad = SafetensorsOutputFile::Create(dir.path() + "/no/such/dir/x.safetensors", {{"a", DType::kF32, {1}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("no/such/dir/x.safetensors"));
  auto negative = SafetensorsOutputFile::Create(dir.path() + "/n.safetensors", {{"a", DType::kF32, {2, -1}}});
  EXPECT_TRUE(absl::IsInvalidArgument(negative.status()));
  auto huge = SafetensorsOutputFile::Create(dir.path() + "/h.safetensors",
                                            {{"a", DType::kF32, {int64_t{1} << 40, int64_t{1} << 20}}});
  EXPECT_TRUE(absl::IsInvalidArgument(huge.status()));
}

TEST(SafetensorsTest, ErrorsNameFileAndTensor) {
  TempDir dir;
  const float vals[6] = {1, 2, 3, 4, 5, 6};
  const std::string good = SerializeSafetensors({F32Tensor("w", {2, 3}, vals)});
  const std::string path = dir.path() + "/m.safetensors";

  // Truncated data block.
  WriteFile(path, good.substr(0, good.size() - 4));
  auto f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("'w'"));
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("out of range"));

  // Header length beyond the file.
  std::string bad = good;
  bad[0] = static_cast<char>(0xff);
  bad[1] = static_cast<char>(0xff);
  WriteFile(path, bad);
  f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("exceeds the file size"));

  // Shorter than 8 bytes.
  WriteFile(path, "abc");
  f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(f.status()));

  // Header not JSON.
  std::string notjson(8, '\0');
  notjson[0] = 4;
  notjson += "{{{{";
  WriteFile(path, notjson);
  f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("not valid JSON"));

  // Byte count inconsistent with shape.
  nlohmann::json hdr = {{"w", {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 20}}}}};
  std::string hs = hdr.dump();
  std::string raw(8, '\0');
  raw[0] = static_cast<char>(hs.size());
  raw += hs + std::string(24, '\0');
  WriteFile(path, raw);
  f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("needs 24"));

  // Elements x element size past 2^64 (2^61 F64 = 2^64 bytes, 0 after wrapping) is not an empty
  // tensor (found with fuzz/safetensors_fuzzer.cc; inputs in fuzz/regressions/safetensors/).
  hdr = {{"w", {{"dtype", "F64"}, {"shape", {int64_t{1} << 61}}, {"data_offsets", {0, 0}}}}};
  hs = hdr.dump();
  raw.assign(8, '\0');
  raw[0] = static_cast<char>(hs.size());
  raw += hs;
  WriteFile(path, raw);
  f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("needs more than 2^64"));

  // Missing file.
  f = SafetensorsFile::Open(dir.path() + "/nope.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(absl::IsNotFound(f.status()));

  // Wrong dtype and wrong shape at read time.
  const int32_t ints[2] = {1, 2};
  TensorToWrite it;
  it.name = "i";
  it.dtype = DType::kI32;
  it.shape = {2};
  it.bytes.assign(reinterpret_cast<const char*>(ints), sizeof(ints));
  WriteFile(path, SerializeSafetensors({F32Tensor("w", {2, 3}, vals), it}));
  f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok());
  std::shared_ptr<const void> keep;
  auto r = (*f)->ReadF32("i", {2}, &keep);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("dtype I32"));
  r = (*f)->ReadF32("w", {3, 2}, &keep);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("has shape [2, 3], expected [3, 2]"));
  r = (*f)->ReadF32("missing", {1}, &keep);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsNotFound(r.status()));
}

// ---------------------------------------------------------------- config

TEST(ConfigTest, DefaultsMatchHuggingFace) {
  auto c = ReformerConfig::FromJson("{}", "c.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_layers(), 6);
  EXPECT_EQ(c->attn_layers[1], AttnType::kLsh);
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->num_attention_heads, 12);
  EXPECT_EQ(c->attention_head_size, 64);
  EXPECT_EQ(c->feed_forward_size, 512);
  EXPECT_EQ(c->vocab_size, 320);
  EXPECT_FALSE(c->is_decoder);
  EXPECT_FLOAT_EQ(c->layer_norm_eps, 1e-12f);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_EQ(c->num_hashes, 1);
  EXPECT_TRUE(c->num_buckets_auto);
  // 4096 / 64 = 64 → 2*64 = 128 → p = 7, nb = 128 > 2*max(8, 64) = 128? no → 128.
  EXPECT_EQ(c->num_buckets, std::vector<int64_t>({128}));
}

TEST(ConfigTest, AutoNumBucketsFollowsHfRule) {
  // f6: max_pos 512, chunk 16 → p = 6, nb = 64 > 2*max(5, 16) = 32 → [8, 8].
  EXPECT_EQ(ReformerConfig::AutoNumBuckets(512, 16, 512), std::vector<int64_t>({8, 8}));
  // f6 row 1 alone (padded 352) would be 32 in HF: documented difference.
  EXPECT_EQ(ReformerConfig::AutoNumBuckets(352, 16, 512), std::vector<int64_t>({32}));
  // crime-and-punishment: 524288 / 64 = 8192 → p = 14 → [128, 128].
  EXPECT_EQ(ReformerConfig::AutoNumBuckets(524288, 64, 524288), std::vector<int64_t>({128, 128}));
  auto j = FixtureConfigJson("f6_auto_buckets_leftpad_6layers");
  auto c = ParseConfig(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->num_buckets_auto);
  EXPECT_EQ(c->num_buckets, std::vector<int64_t>({8, 8}));
  EXPECT_EQ(c->rotation_size(), 16);
  EXPECT_EQ(c->total_buckets(), 64);
}

TEST(ConfigTest, NumHiddenLayersOverride) {
  auto c = ParseConfig({{"attn_layers", {"lsh"}}, {"num_hidden_layers", 3}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_layers(), 3);
  c = ParseConfig({{"attn_layers", {"local", "lsh", "local"}}, {"num_hidden_layers", 2}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_layers(), 2);
  EXPECT_EQ(c->attn_layers[1], AttnType::kLsh);
  c = ParseConfig({{"attn_layers", {"local", "lsh"}}, {"num_hidden_layers", 4}});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("num_hidden_layers"));
}

TEST(ConfigTest, PaddedLengthFollowsSpec) {
  auto c = ParseConfig(FixtureConfigJson("f4_internal_pad_to_lcm_chunks"));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->chunk_lcm(), 64);
  EXPECT_EQ(c->chunk_min(), 32);
  EXPECT_EQ(c->PaddedLength(200), 256);
  EXPECT_EQ(c->PaddedLength(150), 192);
  EXPECT_EQ(c->PaddedLength(32), 32);  // <= min chunk: no padding
  EXPECT_EQ(c->PaddedLength(33), 64);
  EXPECT_EQ(c->PaddedLength(128), 128);
}

TEST(ConfigTest, BadSettingsAreRejectedWithTheField) {
  struct Case {
    nlohmann::json j;
    const char* field;
  };
  const Case cases[] = {
      {{{"attn_layers", {"local", "global"}}}, "attn_layers"},
      {{{"tie_word_embeddings", true}}, "tie_word_embeddings"},
      {{{"lsh_attn_chunk_length", 0}}, "lsh_attn_chunk_length"},
      {{{"local_num_chunks_before", -1}}, "local_num_chunks_before"},
      {{{"is_decoder", true}, {"lsh_num_chunks_after", 1}}, "lsh_num_chunks_after"},
      {{{"axial_pos_embds_dim", {64, 64}}}, "axial_pos_embds_dim"},
      {{{"axial_pos_shape", {64}}}, "axial_pos_shape"},
      {{{"num_buckets", 7}}, "num_buckets"},
      {{{"num_buckets", {4, 3}}}, "num_buckets"},
      {{{"num_buckets", "8"}}, "num_buckets"},
      {{{"hidden_act", "swiglu"}}, "hidden_act"},
      {{{"hidden_size", "big"}}, "hidden_size"},
      {{{"num_hashes", 0}}, "num_hashes"},
      {{{"chunk_size_feed_forward", -4}}, "chunk_size_feed_forward"},
      {{{"pad_token_id", 400}}, "pad_token_id"},
      {{{"eos_token_id", 100000}}, "eos_token_id"},
      {{{"eos_token_id", {2, -1}}}, "eos_token_id"},
      {{{"model_type", "bert"}}, "model_type"},
  };
  for (const auto& tc : cases) {
    auto c = ParseConfig(tc.j);
    ASSERT_FALSE(c.ok()) << tc.j.dump();
    EXPECT_TRUE(absl::IsInvalidArgument(c.status()));
    EXPECT_THAT(std::string(c.status().message()), HasSubstr("test/config.json"));
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(tc.field)) << c.status();
  }
  auto bad_json = ReformerConfig::FromJson("{\"hidden_size\": ", "x/config.json");
  EXPECT_FALSE(bad_json.ok());
  auto missing = ReformerConfig::FromFile("/nonexistent/config.json");
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
}

// Every field that sizes memory or a loop has a bound (ConfigLimits); the message names the field
// and the bound.
TEST(ConfigTest, FieldsThatSizeMemoryOrLoopsAreBounded) {
  struct Case {
    nlohmann::json j;
    const char* field;
    const char* bound;
  };
  const nlohmann::json no_axial = {{"axial_pos_embds", false}};
  auto with = [&](nlohmann::json extra) {
    nlohmann::json j = no_axial;
    j.update(extra);
    return j;
  };
  const Case cases[] = {
      {{{"num_hidden_layers", 100000}}, "num_hidden_layers", "1024"},
      {with({{"hidden_size", 100000}}), "hidden_size", "65536"},
      {{{"num_attention_heads", 2000}}, "num_attention_heads", "1024"},
      {{{"attention_head_size", 5000}}, "attention_head_size", "4096"},
      {{{"num_attention_heads", 1024}, {"attention_head_size", 2048}}, "num_attention_heads", "1048576"},
      {{{"feed_forward_size", 1 << 21}}, "feed_forward_size", "1048576"},
      {{{"vocab_size", 1 << 25}}, "vocab_size", "16777216"},
      {with({{"max_position_embeddings", 1 << 25}}), "max_position_embeddings", "16777216"},
      {{{"axial_pos_shape", {1 << 25, 1}}}, "axial_pos_shape", "16777216"},
      {{{"lsh_attn_chunk_length", 10000}}, "lsh_attn_chunk_length", "67108864"},
      {{{"local_attn_chunk_length", 8192}, {"local_num_chunks_before", 1}}, "local_attn_chunk_length", "67108864"},
      {{{"local_num_chunks_before", 5000}}, "local_num_chunks_before", "1024"},
      {{{"lsh_num_chunks_after", 2000}}, "lsh_num_chunks_after", "1024"},
      {{{"num_hashes", 2000}}, "num_hashes", "1024"},
      {with({{"num_hashes", 1000}, {"max_position_embeddings", 1 << 22}}), "num_hashes", "2147483647"},
      {{{"num_buckets", {2, 2, 2, 2, 2, 2, 2, 2, 2}}}, "num_buckets", "8"},
      {{{"num_buckets", {1 << 13, 1 << 13}}}, "num_buckets", "16777216"},
      {{{"num_buckets", 1 << 25}}, "num_buckets", "16777216"},
      {{{"num_hashes", 1024}, {"num_buckets", 4096}}, "num_hashes", "1048576"},
      {{{"num_attention_heads", 1024}, {"attention_head_size", 1024}, {"num_buckets", 1024}},
       "num_hashes",
       "268435456"},
  };
  for (const auto& tc : cases) {
    auto c = ParseConfig(tc.j);
    ASSERT_FALSE(c.ok()) << tc.j.dump();
    EXPECT_TRUE(absl::IsInvalidArgument(c.status())) << c.status();
    const std::string msg(c.status().message());
    EXPECT_THAT(msg, HasSubstr("test/config.json")) << tc.j.dump();
    EXPECT_THAT(msg, HasSubstr(absl::StrCat("field '", tc.field, "'"))) << msg;
    EXPECT_THAT(msg, HasSubstr(tc.bound)) << msg;
  }
  // At the bounds (and the published shapes) configs load.
  for (const nlohmann::json& j :
       {nlohmann::json{{"num_hashes", 100}}, nlohmann::json{{"num_hashes", 1024}, {"num_buckets", 256}, {"num_attention_heads", 2}},
        nlohmann::json{{"lsh_attn_chunk_length", 4096}, {"lsh_num_chunks_before", 3}},
        nlohmann::json{{"max_position_embeddings", 524288}, {"axial_pos_shape", {512, 1024}},
                       {"num_buckets", {64, 128}}}}) {
    auto c = ParseConfig(j);
    EXPECT_TRUE(c.ok()) << j.dump() << ": " << c.status();
  }
}

// Numbers outside the type they are read into, and a sum that would overflow before the bounds
// are checked (found with fuzz/config_fuzzer.cc; inputs in fuzz/regressions/config/).
TEST(ConfigTest, NumbersOutsideTheirTypeAreRejected) {
  const int64_t big = int64_t{1} << 62;
  struct Case {
    nlohmann::json j;
    const char* field;
  };
  const Case cases[] = {
      {{{"hidden_size", 1.66667e+30}}, "hidden_size"},
      {{{"hidden_size", -1e300}}, "hidden_size"},
      {{{"layer_norm_eps", 1e300}}, "layer_norm_eps"},
      {{{"axial_pos_embds_dim", {big, big}}}, "axial_pos_embds_dim"},
      {{{"attn_layers", {"lsh"}}, {"num_hidden_layers", int64_t{1} << 40}}, "num_hidden_layers"},
  };
  for (const auto& tc : cases) {
    auto c = ParseConfig(tc.j);
    ASSERT_FALSE(c.ok()) << tc.j.dump();
    EXPECT_TRUE(absl::IsInvalidArgument(c.status())) << c.status();
    EXPECT_THAT(std::string(c.status().message()), HasSubstr(absl::StrCat("field '", tc.field, "'")))
        << c.status();
  }
  // Integral floats inside the range still count as integers (HF writes some ints as 64.0).
  auto ok = ParseConfig({{"hidden_size", 256.0}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->hidden_size, 256);
}

TEST(ConfigTest, ContextLengthHonoursAxialShape) {
  auto c = ParseConfig({{"max_position_embeddings", 8192}, {"axial_pos_shape", {64, 64}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->context_length(), 4096);
}

// ---------------------------------------------------------------- weights

struct Broken {
  std::string dir;
};

// Writes `fixture` to a temp dir with `mutate` applied to model.safetensors tensors.
void CopyFixture(const std::string& fixture, const std::string& dst,
                 const std::function<void(std::vector<TensorToWrite>*)>& mutate) {
  const std::string src = FixtureDir(fixture);
  fs::copy_file(src + "/config.json", dst + "/config.json", fs::copy_options::overwrite_existing);
  auto tensors = ReadAll(src + "/model.safetensors");
  if (mutate) mutate(&tensors);
  ASSERT_TRUE(WriteSafetensors(dst + "/model.safetensors", tensors).ok());
}

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadDir(const std::string& dir, bool rotations = true) {
  auto c = ReformerConfig::FromFile(dir + "/config.json");
  if (!c.ok()) return c.status();
  std::string rot = dir + "/rotations.safetensors";
  if (!rotations || !fs::exists(rot)) rot.clear();
  return ModelWeights::Load(*c, dir + "/model.safetensors", rot, 0);
}

TEST(WeightsTest, EveryFixtureLoads) {
  for (const char* f : {"f1_mixed_causal_multihash_rightpad", "f2_lsh_factorized_4hash_gelu_ffchunk",
                        "f3_bidirectional_lookahead_noaxial", "f4_internal_pad_to_lcm_chunks",
                        "f5_short_seq_standard_attention", "f6_auto_buckets_leftpad_6layers"}) {
    auto w = LoadDir(FixtureDir(f));
    ASSERT_TRUE(w.ok()) << f << ": " << w.status();
    auto c = ReformerConfig::FromFile(FixtureDir(f) + "/config.json");
    ASSERT_EQ((*w)->layers.size(), static_cast<size_t>(c->num_layers()));
    ASSERT_NE((*w)->lm_bias.data, nullptr) << f;
    for (size_t i = 0; i < (*w)->layers.size(); ++i) {
      const auto& L = (*w)->layers[i];
      if (L.type == AttnType::kLsh && c->context_length() > c->lsh_attn_chunk_length) {
        EXPECT_NE(L.rotations.data, nullptr) << f << " layer " << i;
      }
    }
  }
}

TEST(WeightsTest, MissingTensorIsNamed) {
  TempDir dir;
  CopyFixture("f1_mixed_causal_multihash_rightpad", dir.path(), [](std::vector<TensorToWrite>* t) {
    t->erase(std::remove_if(t->begin(), t->end(),
                            [](const TensorToWrite& x) {
                              return x.name == "reformer.encoder.layers.2.feed_forward.output.dense.bias";
                            }),
             t->end());
  });
  auto w = LoadDir(dir.path(), false);
  ASSERT_FALSE(w.ok());
  EXPECT_TRUE(absl::IsNotFound(w.status()));
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("model.safetensors"));
  EXPECT_THAT(std::string(w.status().message()),
              HasSubstr("reformer.encoder.layers.2.feed_forward.output.dense.bias"));
}

TEST(WeightsTest, WrongShapeAndDtypeAreNamed) {
  TempDir dir;
  CopyFixture("f1_mixed_causal_multihash_rightpad", dir.path(), [](std::vector<TensorToWrite>* t) {
    for (auto& x : *t) {
      if (x.name == "reformer.encoder.layers.1.feed_forward.dense.dense.weight") {
        x.shape = {x.shape[1], x.shape[0]};
      }
    }
  });
  auto w = LoadDir(dir.path(), false);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("layers.1.feed_forward.dense.dense.weight' has shape [64, 128], expected [128, 64]"))
      << w.status();

  TempDir dir2;
  CopyFixture("f1_mixed_causal_multihash_rightpad", dir2.path(), [](std::vector<TensorToWrite>* t) {
    for (auto& x : *t) {
      if (x.name == "lm_head.decoder.weight") x.dtype = DType::kI32;
    }
  });
  w = LoadDir(dir2.path(), false);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("'lm_head.decoder.weight' has dtype I32"));
}

TEST(WeightsTest, Float16CheckpointIsConvertedAndBiasNamesAndLegacyBuffersWork) {
  TempDir dir;
  CopyFixture("f1_mixed_causal_multihash_rightpad", dir.path(), [](std::vector<TensorToWrite>* t) {
    for (auto& x : *t) {
      if (x.name == "reformer.embeddings.word_embeddings.weight") {
        // Convert to bf16 by truncation.
        std::string out;
        for (size_t i = 0; i < x.bytes.size(); i += 4) out.append(x.bytes, i + 2, 2);
        x.bytes = out;
        x.dtype = DType::kBF16;
      }
      if (x.name == "lm_head.bias" || x.name == "lm_head.decoder.bias") x.name = "lm_head.decoder.bias";
    }
    TensorToWrite legacy;
    legacy.name = "reformer.encoder.layers.1.attention.self_attention.self_mask_value_float32";
    legacy.dtype = DType::kF32;
    legacy.shape = {};
    const float v = -1e5f;
    legacy.bytes.assign(reinterpret_cast<const char*>(&v), 4);
    t->push_back(legacy);
  });
  auto w = LoadDir(dir.path(), false);
  ASSERT_TRUE(w.ok()) << w.status();
  auto orig = LoadDir(FixtureDir("f1_mixed_causal_multihash_rightpad"), false);
  ASSERT_TRUE(orig.ok());
  const auto& a = (*w)->word_embeddings;
  const auto& b = (*orig)->word_embeddings;
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_NEAR(a.data[i], b.data[i], std::abs(b.data[i]) * 1e-2 + 1e-6);
  for (int64_t i = 0; i < (*w)->lm_bias.numel(); ++i) EXPECT_EQ((*w)->lm_bias.data[i], (*orig)->lm_bias.data[i]);
}

TEST(WeightsTest, MissingLmBiasIsNamed) {
  TempDir dir;
  CopyFixture("f1_mixed_causal_multihash_rightpad", dir.path(), [](std::vector<TensorToWrite>* t) {
    t->erase(std::remove_if(t->begin(), t->end(),
                            [](const TensorToWrite& x) { return x.name == "lm_head.bias" || x.name == "lm_head.decoder.bias"; }),
             t->end());
  });
  auto w = LoadDir(dir.path(), false);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("lm_head.decoder.bias"));
}

TEST(WeightsTest, RotationShapeMismatchIsNamed) {
  TempDir dir;
  CopyFixture("f1_mixed_causal_multihash_rightpad", dir.path(), nullptr);
  auto rot = ReadAll(FixtureDir("f1_mixed_causal_multihash_rightpad") + "/rotations.safetensors");
  for (auto& x : rot) {
    if (x.name == "encoder.layers.3.lsh_rotations") {
      x.shape.back() /= 2;
      x.bytes.resize(x.bytes.size() / 2);
    }
  }
  ASSERT_TRUE(WriteSafetensors(dir.path() + "/rotations.safetensors", rot).ok());
  auto w = LoadDir(dir.path());
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("rotations.safetensors"));
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("encoder.layers.3.lsh_rotations"));
}

TEST(WeightsTest, TruncatedModelFileFailsCleanly) {
  TempDir dir;
  CopyFixture("f2_lsh_factorized_4hash_gelu_ffchunk", dir.path(), nullptr);
  const std::string path = dir.path() + "/model.safetensors";
  std::string bytes = ReadFile(path);
  WriteFile(path, bytes.substr(0, bytes.size() / 2));
  auto w = LoadDir(dir.path(), false);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("out of range"));
}

TEST(WeightsTest, SeededRotationsAreDeterministicAndHashSeedSharesThem) {
  auto c = ReformerConfig::FromFile(FixtureDir("f1_mixed_causal_multihash_rightpad") + "/config.json");
  ASSERT_TRUE(c.ok());
  const std::string model = FixtureDir("f1_mixed_causal_multihash_rightpad") + "/model.safetensors";
  auto a = ModelWeights::Load(*c, model, "", 5);
  auto b = ModelWeights::Load(*c, model, "", 5);
  auto d = ModelWeights::Load(*c, model, "", 6);
  ASSERT_TRUE(a.ok() && b.ok() && d.ok());
  const auto& ra = (*a)->layers[1].rotations;
  ASSERT_EQ(ra.shape, std::vector<int64_t>({2, 32, 2, 4}));
  EXPECT_EQ(0, std::memcmp(ra.data, (*b)->layers[1].rotations.data, ra.numel() * 4));
  EXPECT_NE(0, std::memcmp(ra.data, (*d)->layers[1].rotations.data, ra.numel() * 4));
  // Without hash_seed, layers draw in sequence: layer 3 differs from layer 1.
  EXPECT_NE(0, std::memcmp(ra.data, (*a)->layers[3].rotations.data, ra.numel() * 4));
  c->hash_seed = 11;
  auto h = ModelWeights::Load(*c, model, "", 5);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(0, std::memcmp((*h)->layers[1].rotations.data, (*h)->layers[3].rotations.data, ra.numel() * 4));
}

// ---------------------------------------------------------------- rotations vs torch.randn

TEST(RotationsTest, MatchesTorchRandn) {
  auto cases = nlohmann::json::parse(ReadFile(SourceDir() + "/tests/weights/testdata/torch_randn.json"));
  ASSERT_FALSE(cases.empty());
  for (const auto& tc : cases) {
    TorchLikeNormalGenerator gen(tc["seed"].get<uint64_t>());
    for (size_t k = 0; k < tc["sizes"].size(); ++k) {
      const int64_t n = tc["sizes"][k].get<int64_t>();
      std::vector<float> got = gen.Randn(n);
      const auto& want = tc["values"][k];
      ASSERT_EQ(static_cast<int64_t>(want.size()), n);
      for (int64_t i = 0; i < n; ++i) {
        // torch's AVX2 build uses vectorised log/sin/cos: allow a few ulps.
        EXPECT_NEAR(got[i], want[i].get<float>(), 2e-6f + 2e-6f * std::abs(want[i].get<float>()))
            << "seed " << tc["seed"] << " draw " << k << " index " << i;
      }
    }
  }
}

// ---------------------------------------------------------------- tokenizers

TEST(TokenizerTest, ByteLevelForVocab258) {
  ReformerConfig c;
  c.vocab_size = 258;
  TempDir dir;
  auto t = Tokenizer::ForModelDir(dir.path(), c);
  ASSERT_TRUE(t.ok());
  ASSERT_NE(t->get(), nullptr);
  auto ids = (*t)->Encode("Hi\xff");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<int32_t>({'H' + 2, 'i' + 2, 257}));
  EXPECT_EQ((*t)->Decode({0, 1, 'H' + 2, 'i' + 2}), "Hi");
  EXPECT_EQ((*t)->TokenBytes(0), 0);
  EXPECT_EQ((*t)->TokenBytes(100), 1);
}

TEST(TokenizerTest, IdsOnlyOtherwiseAndDirSettingSaysBytes) {
  ReformerConfig c;
  c.vocab_size = 64;
  TempDir dir;
  auto t = Tokenizer::ForModelDir(dir.path(), c);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->get(), nullptr);
  c.vocab_size = 300;
  WriteFile(dir.path() + "/tokenizer_config.json", R"({"tokenizer_type": "bytes"})");
  t = Tokenizer::ForModelDir(dir.path(), c);
  ASSERT_TRUE(t.ok());
  ASSERT_NE(t->get(), nullptr);
  EXPECT_EQ((*t)->Name(), "bytes");
}

TEST(TokenizerTest, BrokenSentencePieceModelFailsWithPath) {
  ReformerConfig c;
  TempDir dir;
  WriteFile(dir.path() + "/spiece.model", "not a model");
  auto t = Tokenizer::ForModelDir(dir.path(), c);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("spiece.model"));

  // A model libsentencepiece rejects by throwing (a zero-length piece; found with
  // fuzz/sentencepiece_fuzzer.cc) is an error too, not std::terminate.
  WriteFile(dir.path() + "/spiece.model",
            ReadFile(SourceDir() + "/fuzz/regressions/sentencepiece/zero_length_piece_darts_exception"));
  c.vocab_size = 4096;
  t = Tokenizer::ForModelDir(dir.path(), c);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("spiece.model"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("zero-length key"));
}

// A malformed normalizer charsmap used to load and then crash Encode inside libsentencepiece (SEGV in
// Normalizer::NormalizePrefix; fuzz/regressions/sentencepiece/charsmap_trie_out_of_bounds): the
// tokenizer refuses it at load, naming the file, the field and the trie unit.
TEST(TokenizerTest, MalformedCharsmapIsRefusedAtLoad) {
  ReformerConfig c;
  c.vocab_size = 4096;
  TempDir dir;
  WriteFile(dir.path() + "/spiece.model",
            ReadFile(SourceDir() + "/fuzz/regressions/sentencepiece/charsmap_trie_out_of_bounds"));
  auto t = Tokenizer::ForModelDir(dir.path(), c);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(t.status().message());
  EXPECT_THAT(message, HasSubstr(dir.path() + "/spiece.model: "));
  EXPECT_THAT(message, HasSubstr("normalizer_spec.precompiled_charsmap: trie unit "));
  EXPECT_THAT(message, HasSubstr("outside the 256-unit trie"));
}

// The charsmap check accepts every well-formed model of the corpus, a real charsmap included
// (word_custom_rules: spm_train --normalization_rule_tsv), and the accepted one still encodes.
TEST(TokenizerTest, WellFormedCharsmapsLoad) {
  ReformerConfig c;
  c.vocab_size = 4096;
  for (const char* name : {"bpe_100", "char_bytefallback", "unigram_100", "word_custom_rules"}) {
    TempDir dir;
    WriteFile(dir.path() + "/spiece.model", ReadFile(SourceDir() + "/fuzz/corpus/sentencepiece/" + name));
    auto t = Tokenizer::ForModelDir(dir.path(), c);
    ASSERT_TRUE(t.ok()) << name << ": " << t.status();
    auto ids = (*t)->Encode("AB the of a to");
    ASSERT_TRUE(ids.ok()) << name << ": " << ids.status();
    EXPECT_FALSE(ids->empty()) << name;
  }
}

}  // namespace
}  // namespace reformer
