// x86-64-v2 baseline primitives for kernels_impl.inc (SSE4.1, 4 float lanes, no FMA: a*b + c
// rounds twice). The code every x86-64-v2 CPU runs (kernels_portable.cc).
#pragma once

#include <smmintrin.h>

#include <cstdint>

namespace reformer::kernels::portable {

using Vf = __m128;
using Vi = __m128i;
using Mask = __m128;
constexpr int64_t kW = 4;

inline Vf Zero() { return _mm_setzero_ps(); }
inline Vf Set1(float x) { return _mm_set1_ps(x); }
inline Vf Load(const float* p) { return _mm_loadu_ps(p); }
inline Vf LoadN(const float* p, int64_t n) {
  alignas(16) float t[4] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t i = 0; i < n; ++i) t[i] = p[i];
  return _mm_load_ps(t);
}
inline void Store(float* p, Vf v) { _mm_storeu_ps(p, v); }
inline void StoreN(float* p, Vf v, int64_t n) {
  alignas(16) float t[4];
  _mm_store_ps(t, v);
  for (int64_t i = 0; i < n; ++i) p[i] = t[i];
}
inline Vf Broadcast(const float* p) { return _mm_set1_ps(*p); }
inline Vf Add(Vf a, Vf b) { return _mm_add_ps(a, b); }
inline Vf Sub(Vf a, Vf b) { return _mm_sub_ps(a, b); }
inline Vf Mul(Vf a, Vf b) { return _mm_mul_ps(a, b); }
inline Vf Div(Vf a, Vf b) { return _mm_div_ps(a, b); }
inline Vf Max(Vf a, Vf b) { return _mm_max_ps(a, b); }
inline Vf Min(Vf a, Vf b) { return _mm_min_ps(a, b); }
inline Vf MulAdd(Vf a, Vf b, Vf c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
inline Vf NegMulAdd(Vf a, Vf b, Vf c) { return _mm_sub_ps(c, _mm_mul_ps(a, b)); }
inline float ReduceAdd(Vf l) {
  l = _mm_add_ps(l, _mm_movehl_ps(l, l));
  l = _mm_add_ss(l, _mm_shuffle_ps(l, l, 1));
  return _mm_cvtss_f32(l);
}
inline float ReduceMax(Vf l) {
  l = _mm_max_ps(l, _mm_movehl_ps(l, l));
  l = _mm_max_ss(l, _mm_shuffle_ps(l, l, 1));
  return _mm_cvtss_f32(l);
}
inline float ReduceMin(Vf l) {
  l = _mm_min_ps(l, _mm_movehl_ps(l, l));
  l = _mm_min_ss(l, _mm_shuffle_ps(l, l, 1));
  return _mm_cvtss_f32(l);
}
inline void Reduce4(Vf a, Vf b, Vf c, Vf d, float* out) {
  _MM_TRANSPOSE4_PS(a, b, c, d);
  _mm_storeu_ps(out, _mm_add_ps(_mm_add_ps(a, b), _mm_add_ps(c, d)));
}

inline Vi LoadI(const int32_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline Vi Set1I(int32_t x) { return _mm_set1_epi32(x); }
inline Mask EqI(Vi a, Vi b) { return _mm_castsi128_ps(_mm_cmpeq_epi32(a, b)); }
inline Mask GtI(Vi a, Vi b) { return _mm_castsi128_ps(_mm_cmpgt_epi32(a, b)); }
inline Mask Or(Mask a, Mask b) { return _mm_or_ps(a, b); }
inline Mask LtF(Vf a, Vf b) { return _mm_cmplt_ps(a, b); }
inline Mask EqF(Vf a, Vf b) { return _mm_cmpeq_ps(a, b); }
inline Vf Select(Mask m, Vf yes, Vf no) { return _mm_blendv_ps(no, yes, m); }
inline Vf ZeroWhere(Mask m, Vf v) { return _mm_andnot_ps(m, v); }
inline unsigned Bits(Mask m) { return static_cast<unsigned>(_mm_movemask_ps(m)); }
inline Vf RoundNearest(Vf v) { return _mm_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline Vf Pow2(Vf n) {
  const Vi e = _mm_add_epi32(_mm_cvtps_epi32(n), _mm_set1_epi32(127));
  return _mm_castsi128_ps(_mm_slli_epi32(e, 23));
}


// Weights of the compute types (engine/dnnl/matmul.h), widened to float exactly: kW bf16 values
// (the upper halves of floats) or kW signed bytes.
inline Vf LoadBf16(const uint16_t* p) {
  const __m128i w = _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm_castsi128_ps(_mm_slli_epi32(w, 16));
}
inline Vf LoadS8(const int8_t* p) {
  int32_t four;
  __builtin_memcpy(&four, p, 4);
  return _mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(four)));
}
// Exact for floats holding integers below 2^31.
inline Vi ToInt(Vf v) { return _mm_cvtps_epi32(v); }
inline Vf ToFloat(Vi v) { return _mm_cvtepi32_ps(v); }
inline Vi AddI(Vi a, Vi b) { return _mm_add_epi32(a, b); }
inline void StoreI(int32_t* p, Vi v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); }
inline void Prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

// Eight rows' elements [p, p + 8), each scaled as scale_div does ((x · mul[i]) / div; mul null =
// 1), stored transposed: dst[c * ld + i] = scaled rows[i][p + c] for i, c < 8. Static: too large
// to be inlined everywhere, and this object must export nothing but its table (kernel_symbols_check).
static inline void Transpose8Scaled(const float* const* rows, int64_t p, const float* mul, float div, float* dst,
                             int64_t ld) {
  for (int i = 0; i < 8; ++i)
    for (int c = 0; c < 8; ++c) dst[c * ld + i] = (mul ? rows[i][p + c] * mul[i] : rows[i][p + c]) / div;
}

}  // namespace reformer::kernels::portable
