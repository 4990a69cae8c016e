// Test-only: a direct, slow transcription of Hugging Face v4.40.2's cached generation
// (engine-numerics §13) for one sequence, written independently of the engine's decoder. It keeps
// what HF keeps (per layer the LayerNorm outputs of every position, per hashing LSH layer the sort
// keys with their round offsets) and does what HF does at every step: project the window's states
// again, stable-sort each hash round's keys in full, take the new token's chunk window modulo the
// length. Arithmetic is float32 with double accumulation; it agrees with HF to ~1e-6 wherever no
// bucket decision is within rounding of a tie (min_margin() reports the smallest margin it saw).
//
// The prompt pass uses the engine's forward (checked against HF by the forward fixtures) through
// its at_layer hook to read each layer's input stream, and its sort keys (want_buckets).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "engine/dnnl/matmul.h"
#include "engine/model/engine_api.h"
#include "engine/model/forward.h"
#include "engine/model/weights.h"
#include "engine/tensor/workspace.h"

namespace reformer {
namespace testing {

class ReferenceDecoder {
 public:
  explicit ReferenceDecoder(std::shared_ptr<const ReformerModel> model)
      : m_(std::move(model)), c_(m_->config()) {}

  // The prompt pass; returns the last position's logits.
  std::vector<float> Prefill(const std::vector<int32_t>& prompt) {
    const int64_t t0 = static_cast<int64_t>(prompt.size()), H = c_.hidden_size, t = c_.PaddedLength(t0);
    std::vector<int32_t> ids(prompt);
    ids.resize(t, static_cast<int32_t>(c_.pad_token_id));
    std::vector<uint8_t> mask(t, 0);
    std::fill(mask.begin(), mask.begin() + t0, 1);
    ForwardDoc doc;
    doc.ids = ids.data();
    doc.padded_length = t;
    doc.output_length = t0;
    doc.mask = t > t0 ? mask.data() : nullptr;
    doc.padding_bucket = t > t0;
    std::vector<float> logits(t0 * c_.vocab_size);
    doc.dst.logits = logits.data();
    padded_prompt_ = t > t0 && t > c_.lsh_attn_chunk_length;
    states_.assign(c_.num_layers(), {});
    keys_.assign(c_.num_layers(), {});
    ForwardOptions fo;
    fo.outputs = kOutputLogits;
    fo.want_buckets = true;
    fo.at_layer = [&](int64_t li, const float*, const float* z, const std::vector<int64_t>& first_row) {
      z += first_row[0] * H;
      if (li < c_.num_layers()) {
        const LayerWeights& w = m_->weights().layers[li];
        for (int64_t p = 0; p < t0; ++p)
          states_[li].push_back(LayerNorm(z + p * H, H, w.attn_ln_weight.data, w.attn_ln_bias.data));
      }
      return absl::OkStatus();
    };
    auto ctx = DnnlContext::Create();
    Workspace ws;
    ForwardOutputs out;
    absl::Status st = RunForward(*m_, ctx->get(), &ws, 256, {doc}, fo, &out);
    if (!st.ok()) return {};
    for (size_t s = 0; s < out.bucket_layers.size(); ++s) {
      if (t <= c_.lsh_attn_chunk_length) continue;
      auto& k = keys_[out.bucket_layers[s]];
      const int64_t nh = c_.num_attention_heads, nr = c_.num_hashes;
      k.assign(nh * nr, {});
      for (int64_t h = 0; h < nh; ++h)
        for (int64_t r = 0; r < nr; ++r)
          for (int64_t p = 0; p < t0; ++p) k[h * nr + r].push_back(out.buckets[s][0][(h * nr + r) * t + p]);
    }
    return std::vector<float>(logits.end() - c_.vocab_size, logits.end());
  }

  // Feeds one token; returns the next logits.
  std::vector<float> Step(int32_t token) {
    const int64_t H = c_.hidden_size, L = static_cast<int64_t>(states_[0].size());
    std::vector<float> a = Embed(token, L), z = a;
    for (int64_t li = 0; li < c_.num_layers(); ++li) {
      const LayerWeights& w = m_->weights().layers[li];
      std::vector<float> y = LayerNorm(z.data(), H, w.attn_ln_weight.data, w.attn_ln_bias.data);
      std::vector<float> att = c_.attn_layers[li] == AttnType::kLsh ? LshLayer(li, y) : LocalLayer(li, y);
      states_[li].push_back(y);
      Add(&a, Linear(att, m_->packed().layers[li].attn_out, nullptr));
      std::vector<float> x = LayerNorm(a.data(), H, w.ff_ln_weight.data, w.ff_ln_bias.data);
      std::vector<float> f = Linear(x, m_->packed().layers[li].ff_in, w.ff_in_bias.data);
      for (float& v : f) v = Act(v);
      Add(&z, Linear(f, m_->packed().layers[li].ff_out, w.ff_out_bias.data));
    }
    std::vector<float> az(a);
    az.insert(az.end(), z.begin(), z.end());
    const ModelWeights& mw = m_->weights();
    std::vector<float> h = LayerNorm(az.data(), 2 * H, mw.final_ln_weight.data, mw.final_ln_bias.data);
    return Linear(h, m_->packed().lm_head, mw.lm_bias.data);
  }

  double min_margin() const { return min_margin_; }
  // LSH layer steps whose cached keys came from a padded prompt, with and without HF's
  // increase_num_buckets (its test is data-dependent, engine-numerics §13).
  int64_t padded_increase_steps() const { return padded_increase_steps_; }
  int64_t padded_no_increase_steps() const { return padded_no_increase_steps_; }

 private:
  // Column block [col, col + width) of a packed [K, N] weight applied to x.
  static std::vector<float> Project(const std::vector<float>& x, const PackedWeight& w, int64_t col, int64_t width) {
    std::vector<float> y(width);
    for (int64_t j = 0; j < width; ++j) {
      double s = 0;
      for (int64_t k = 0; k < w.k(); ++k) s += static_cast<double>(x[k]) * w.data()[k * w.n() + col + j];
      y[j] = static_cast<float>(s);
    }
    return y;
  }
  static std::vector<float> Linear(const std::vector<float>& x, const PackedWeight& w, const float* bias) {
    std::vector<float> y = Project(x, w, 0, w.n());
    if (bias)
      for (int64_t j = 0; j < w.n(); ++j) y[j] += bias[j];
    return y;
  }
  static void Add(std::vector<float>* a, const std::vector<float>& b) {
    for (size_t i = 0; i < a->size(); ++i) (*a)[i] += b[i];
  }
  std::vector<float> LayerNorm(const float* x, int64_t n, const float* g, const float* b) const {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; ++i) mean += x[i];
    mean /= n;
    for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
    var /= n;
    std::vector<float> y(n);
    for (int64_t i = 0; i < n; ++i)
      y[i] = static_cast<float>((x[i] - mean) / std::sqrt(var + c_.layer_norm_eps) * g[i] + b[i]);
    return y;
  }
  float Act(float x) const {
    const double v = x;
    switch (c_.hidden_act) {
      case Activation::kRelu: return x > 0 ? x : 0.f;
      case Activation::kGelu: return static_cast<float>(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))));
      case Activation::kGeluNew:
      case Activation::kGeluFast:
        return static_cast<float>(0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))));
      default: return x;
    }
  }
  std::vector<float> Embed(int32_t token, int64_t pos) const {
    const ModelWeights& w = m_->weights();
    const int64_t H = c_.hidden_size;
    std::vector<float> x(w.word_embeddings.data + token * H, w.word_embeddings.data + (token + 1) * H);
    if (c_.axial_pos_embds) {
      const int64_t a1 = c_.axial_pos_shape[1], d0 = c_.axial_pos_embds_dim[0], d1 = c_.axial_pos_embds_dim[1];
      for (int64_t j = 0; j < d0; ++j) x[j] += w.axial_pos0.data[(pos / a1) * d0 + j];
      for (int64_t j = 0; j < d1; ++j) x[d0 + j] += w.axial_pos1.data[(pos % a1) * d1 + j];
    } else {
      for (int64_t j = 0; j < H; ++j) x[j] += w.position_embeddings.data[pos * H + j];
    }
    return x;
  }
  // out = Σ softmax(q·k_j) v_j over keys, double; self mask where self[j].
  static std::vector<float> Attend(const std::vector<float>& q, const std::vector<std::vector<float>>& k,
                                   const std::vector<std::vector<float>>& v, const std::vector<bool>& self,
                                   double* lse) {
    std::vector<double> s(k.size());
    double mx = -1e300;
    for (size_t j = 0; j < k.size(); ++j) {
      double d = 0;
      for (size_t i = 0; i < q.size(); ++i) d += static_cast<double>(q[i]) * k[j][i];
      s[j] = self[j] ? -1e5 : d;
      mx = std::max(mx, s[j]);
    }
    double sum = 0;
    for (double x : s) sum += std::exp(x - mx);
    *lse = mx + std::log(sum);
    std::vector<float> out(q.size(), 0.f);
    std::vector<double> acc(q.size(), 0.0);
    for (size_t j = 0; j < k.size(); ++j)
      for (size_t i = 0; i < q.size(); ++i) acc[i] += std::exp(s[j] - *lse) * v[j][i];
    for (size_t i = 0; i < q.size(); ++i) out[i] = static_cast<float>(acc[i]);
    return out;
  }
  std::vector<float> KNorm(std::vector<float> u) const {
    double ms = 0;
    for (float x : u) ms += static_cast<double>(x) * x;
    ms /= u.size();
    for (float& x : u) x = static_cast<float>(x / std::sqrt(ms + 1e-6) / std::sqrt(static_cast<double>(u.size())));
    return u;
  }

  // engine-numerics §13, local layer: keys/values from states[start:] ++ new (Python slice), no
  // mask.
  std::vector<float> LocalLayer(int64_t li, const std::vector<float>& y) const {
    const int64_t nh = c_.num_attention_heads, dh = c_.attention_head_size, c = c_.local_attn_chunk_length;
    const auto& st = states_[li];
    const int64_t L = static_cast<int64_t>(st.size());
    int64_t start = ((L / c) - c_.local_num_chunks_before) * c;
    if (start < 0) start = std::max<int64_t>(0, L + start);
    std::vector<float> out;
    for (int64_t h = 0; h < nh; ++h) {
      const PackedWeight& wh = m_->packed().layers[li].head_proj[h];
      std::vector<std::vector<float>> k, v;
      for (int64_t p = start; p <= L; ++p) {
        const std::vector<float>& x = p < L ? st[p] : y;
        std::vector<float> kk = Project(x, wh, dh, dh);
        for (float& e : kk) e /= static_cast<float>(std::sqrt(static_cast<double>(dh)));
        k.push_back(kk);
        v.push_back(Project(x, wh, 2 * dh, dh));
      }
      double lse;
      std::vector<float> o = Attend(Project(y, wh, 0, dh), k, v, std::vector<bool>(k.size(), false), &lse);
      out.insert(out.end(), o.begin(), o.end());
    }
    return out;
  }

  // Bucket of one qk row per round (engine-numerics §7.3), recording the decision margins.
  std::vector<int64_t> Hash(int64_t li, int64_t h, const std::vector<float>& qk, bool increase) {
    const int64_t nr = c_.num_hashes, dh = c_.attention_head_size, half = c_.rotation_size() / 2;
    const float* rot = m_->weights().layers[li].rotations.data + h * dh * nr * half;
    std::vector<int64_t> keys;
    const int64_t nb = c_.total_buckets(), offset = nb + (increase ? 1 : 0);
    for (int64_t r = 0; r < nr; ++r) {
      std::vector<double> proj(half);
      for (int64_t j = 0; j < half; ++j)
        for (int64_t d = 0; d < dh; ++d) proj[j] += static_cast<double>(qk[d]) * rot[(d * nr + r) * half + j];
      int64_t bucket = 0, off = 0, prod = 1;
      for (int64_t f : c_.num_buckets) {
        std::vector<double> v;
        for (int64_t j = 0; j < f / 2; ++j) v.push_back(proj[off + j]);
        for (int64_t j = 0; j < f / 2; ++j) v.push_back(-proj[off + j]);
        const int64_t am = std::max_element(v.begin(), v.end()) - v.begin();
        std::vector<double> sorted(v);
        std::sort(sorted.rbegin(), sorted.rend());
        min_margin_ = std::min(min_margin_, sorted[0] - sorted[1]);
        bucket += prod * am;
        off += f / 2;
        prod *= f;
      }
      keys.push_back(bucket + r * offset);
    }
    return keys;
  }

  std::vector<float> LshLayer(int64_t li, const std::vector<float>& y) {
    const int64_t nh = c_.num_attention_heads, dh = c_.attention_head_size, nr = c_.num_hashes;
    const int64_t c = c_.lsh_attn_chunk_length, L = static_cast<int64_t>(states_[li].size());
    auto& keys = keys_[li];
    std::vector<std::vector<float>> all(states_[li]);
    all.push_back(y);
    bool increase = false;
    if (!keys.empty()) {
      int64_t mx = -1;
      for (const auto& k : keys) mx = std::max(mx, *std::max_element(k.begin(), k.end()));
      increase = mx > nr * c_.total_buckets() - 1;
      if (padded_prompt_) (increase ? padded_increase_steps_ : padded_no_increase_steps_) += 1;
    }
    const bool hash_all = keys.empty() && L + 1 >= c;
    std::vector<std::vector<int64_t>> new_keys(nh * nr);
    std::vector<float> out;
    for (int64_t h = 0; h < nh; ++h) {
      const PackedWeight& wh = m_->packed().layers[li].head_proj[h];
      const std::vector<float> q = Project(y, wh, 0, dh);
      if (keys.empty()) {
        std::vector<std::vector<float>> k, v;
        std::vector<bool> self;
        for (int64_t p = 0; p <= L; ++p) {
          const std::vector<float> qk = Project(all[p], wh, 0, dh);
          k.push_back(KNorm(qk));
          v.push_back(Project(all[p], wh, dh, dh));
          self.push_back(p == L);
          if (hash_all) {
            const std::vector<int64_t> b = Hash(li, h, qk, false);
            for (int64_t r = 0; r < nr; ++r) new_keys[h * nr + r].push_back(b[r]);
          }
        }
        double lse;
        std::vector<float> o = Attend(q, k, v, self, &lse);
        out.insert(out.end(), o.begin(), o.end());
        continue;
      }
      const std::vector<int64_t> b = Hash(li, h, q, increase);
      std::vector<std::vector<float>> o(nr);
      std::vector<double> lse(nr);
      const int64_t w = c * (1 + c_.lsh_num_chunks_before + c_.lsh_num_chunks_after);
      for (int64_t r = 0; r < nr; ++r) {
        std::vector<int64_t> k = keys[h * nr + r];
        k.push_back(b[r]);
        new_keys[h * nr + r].push_back(b[r]);
        std::vector<int64_t> idx(L + 1);
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](int64_t x, int64_t z) { return k[x] < k[z]; });
        const int64_t slot = std::find(idx.begin(), idx.end(), L) - idx.begin();
        const int64_t start = (slot / c - c_.lsh_num_chunks_before) * c;
        std::vector<std::vector<float>> kk, vv;
        std::vector<bool> self;
        for (int64_t i = 0; i < w; ++i) {
          const int64_t p = idx[(((start + i) % (L + 1)) + (L + 1)) % (L + 1)];
          kk.push_back(KNorm(Project(all[p], wh, 0, dh)));
          vv.push_back(Project(all[p], wh, dh, dh));
          self.push_back(p == L);
        }
        o[r] = Attend(q, kk, vv, self, &lse[r]);
      }
      double mx = *std::max_element(lse.begin(), lse.end()), sum = 0;
      for (double l : lse) sum += std::exp(l - mx);
      const double total = mx + std::log(sum);
      for (int64_t j = 0; j < dh; ++j) {
        double acc = 0;
        for (int64_t r = 0; r < nr; ++r) acc += std::exp(lse[r] - total) * o[r][j];
        out.push_back(static_cast<float>(acc));
      }
    }
    if (!keys.empty()) {
      for (int64_t i = 0; i < nh * nr; ++i) keys[i].push_back(new_keys[i][0]);
    } else if (hash_all) {
      keys = new_keys;
    }
    return out;
  }

  std::shared_ptr<const ReformerModel> m_;
  const ReformerConfig& c_;
  std::vector<std::vector<std::vector<float>>> states_;  // [layer][position][H]
  std::vector<std::vector<std::vector<int64_t>>> keys_;  // [layer][head * nH + round][position]
  double min_margin_ = 1e300;
  bool padded_prompt_ = false;
  int64_t padded_increase_steps_ = 0;
  int64_t padded_no_increase_steps_ = 0;
};

}  // namespace testing
}  // namespace reformer
