// AVX2 + FMA primitives for kernels_impl.inc (8 float lanes). Included only by kernels_avx2.cc,
// which is compiled with -march=x86-64-v3; its code runs only when SelectedIsa() >= kAvx2.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace reformer::kernels::avx2 {

using Vf = __m256;
using Vi = __m256i;
using Mask = __m256;  // all-ones lanes
constexpr int64_t kW = 8;

inline Vf Zero() { return _mm256_setzero_ps(); }
inline Vf Set1(float x) { return _mm256_set1_ps(x); }
inline Vf Load(const float* p) { return _mm256_loadu_ps(p); }
inline __m256i FirstN(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
// Lanes [n, kW) read nothing and are 0.
inline Vf LoadN(const float* p, int64_t n) { return _mm256_maskload_ps(p, FirstN(n)); }
inline void Store(float* p, Vf v) { _mm256_storeu_ps(p, v); }
inline void StoreN(float* p, Vf v, int64_t n) { _mm256_maskstore_ps(p, FirstN(n), v); }
inline Vf Broadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Vf Add(Vf a, Vf b) { return _mm256_add_ps(a, b); }
inline Vf Sub(Vf a, Vf b) { return _mm256_sub_ps(a, b); }
inline Vf Mul(Vf a, Vf b) { return _mm256_mul_ps(a, b); }
inline Vf Div(Vf a, Vf b) { return _mm256_div_ps(a, b); }
inline Vf Max(Vf a, Vf b) { return _mm256_max_ps(a, b); }
inline Vf Min(Vf a, Vf b) { return _mm256_min_ps(a, b); }
inline Vf MulAdd(Vf a, Vf b, Vf c) { return _mm256_fmadd_ps(a, b, c); }
inline Vf NegMulAdd(Vf a, Vf b, Vf c) { return _mm256_fnmadd_ps(a, b, c); }
inline float ReduceAdd(Vf v) {
  __m128 l = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  l = _mm_add_ps(l, _mm_movehl_ps(l, l));
  l = _mm_add_ss(l, _mm_shuffle_ps(l, l, 1));
  return _mm_cvtss_f32(l);
}
inline float ReduceMax(Vf v) {
  __m128 l = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  l = _mm_max_ps(l, _mm_movehl_ps(l, l));
  l = _mm_max_ss(l, _mm_shuffle_ps(l, l, 1));
  return _mm_cvtss_f32(l);
}
inline float ReduceMin(Vf v) {
  __m128 l = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  l = _mm_min_ps(l, _mm_movehl_ps(l, l));
  l = _mm_min_ss(l, _mm_shuffle_ps(l, l, 1));
  return _mm_cvtss_f32(l);
}
inline void Reduce4(Vf a, Vf b, Vf c, Vf d, float* out) {
  const __m256 t2 = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t2), _mm256_extractf128_ps(t2, 1)));
}

inline Vi LoadI(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline Vi Set1I(int32_t x) { return _mm256_set1_epi32(x); }
inline Mask EqI(Vi a, Vi b) { return _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, b)); }
inline Mask GtI(Vi a, Vi b) { return _mm256_castsi256_ps(_mm256_cmpgt_epi32(a, b)); }
inline Mask Or(Mask a, Mask b) { return _mm256_or_ps(a, b); }
inline Mask LtF(Vf a, Vf b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
inline Mask EqF(Vf a, Vf b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
inline Vf Select(Mask m, Vf yes, Vf no) { return _mm256_blendv_ps(no, yes, m); }
inline Vf ZeroWhere(Mask m, Vf v) { return _mm256_andnot_ps(m, v); }
inline unsigned Bits(Mask m) { return static_cast<unsigned>(_mm256_movemask_ps(m)); }
inline Vf RoundNearest(Vf v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline Vf Pow2(Vf n) {
  const Vi e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}


// Weights of the compute types (engine/dnnl/matmul.h), widened to float exactly: kW bf16 values
// (the upper halves of floats) or kW signed bytes.
inline Vf LoadBf16(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
inline Vf LoadS8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
// Exact for floats holding integers below 2^31.
inline Vi ToInt(Vf v) { return _mm256_cvtps_epi32(v); }
inline Vf ToFloat(Vi v) { return _mm256_cvtepi32_ps(v); }
inline Vi AddI(Vi a, Vi b) { return _mm256_add_epi32(a, b); }
inline void StoreI(int32_t* p, Vi v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
inline void Prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

#include "engine/ops/kernels/transpose8_m256.inc"

}  // namespace reformer::kernels::avx2
