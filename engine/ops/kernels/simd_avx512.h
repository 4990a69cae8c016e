// AVX-512 primitives for kernels_impl.inc (16 float lanes). Included only by kernels_avx512.cc,
// which is compiled with -march=x86-64-v4; its code runs only when SelectedIsa() is kAvx512.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace reformer::kernels::avx512 {

using Vf = __m512;
using Vi = __m512i;
using Mask = __mmask16;
constexpr int64_t kW = 16;

inline Vf Zero() { return _mm512_setzero_ps(); }
inline Vf Set1(float x) { return _mm512_set1_ps(x); }
inline Vf Load(const float* p) { return _mm512_loadu_ps(p); }
inline Mask FirstN(int64_t n) { return static_cast<Mask>((1u << n) - 1u); }
// Lanes [n, kW) read nothing and are 0.
inline Vf LoadN(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(FirstN(n), p); }
inline void Store(float* p, Vf v) { _mm512_storeu_ps(p, v); }
inline void StoreN(float* p, Vf v, int64_t n) { _mm512_mask_storeu_ps(p, FirstN(n), v); }
inline Vf Broadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Vf Add(Vf a, Vf b) { return _mm512_add_ps(a, b); }
inline Vf Sub(Vf a, Vf b) { return _mm512_sub_ps(a, b); }
inline Vf Mul(Vf a, Vf b) { return _mm512_mul_ps(a, b); }
inline Vf Div(Vf a, Vf b) { return _mm512_div_ps(a, b); }
inline Vf Max(Vf a, Vf b) { return _mm512_max_ps(a, b); }
inline Vf Min(Vf a, Vf b) { return _mm512_min_ps(a, b); }
inline Vf MulAdd(Vf a, Vf b, Vf c) { return _mm512_fmadd_ps(a, b, c); }     // a*b + c
inline Vf NegMulAdd(Vf a, Vf b, Vf c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a*b
inline float ReduceAdd(Vf v) {
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 l = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  l = _mm_add_ps(l, _mm_movehl_ps(l, l));
  l = _mm_add_ss(l, _mm_shuffle_ps(l, l, 1));
  return _mm_cvtss_f32(l);
}
inline float ReduceMax(Vf v) {
  __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 l = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  l = _mm_max_ps(l, _mm_movehl_ps(l, l));
  l = _mm_max_ss(l, _mm_shuffle_ps(l, l, 1));
  return _mm_cvtss_f32(l);
}
inline float ReduceMin(Vf v) {
  __m256 h = _mm256_min_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 l = _mm_min_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  l = _mm_min_ps(l, _mm_movehl_ps(l, l));
  l = _mm_min_ss(l, _mm_shuffle_ps(l, l, 1));
  return _mm_cvtss_f32(l);
}
// out[0..4) = {ΣA, ΣB, ΣC, ΣD}.
inline void Reduce4(Vf a, Vf b, Vf c, Vf d, float* out) {
  const Vf ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  const Vf cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
  // 128-bit lanes: [a, b, c, d] (each the sum of its two 256-bit halves' lanes).
  Vf x = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
  x = _mm512_add_ps(x, _mm512_permute_ps(x, 0x4E));
  x = _mm512_add_ps(x, _mm512_permute_ps(x, 0xB1));
  const __m512i idx = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
  _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, x)));
}

inline Vi LoadI(const int32_t* p) { return _mm512_loadu_si512(p); }
inline Vi Set1I(int32_t x) { return _mm512_set1_epi32(x); }
inline Mask EqI(Vi a, Vi b) { return _mm512_cmpeq_epi32_mask(a, b); }
inline Mask GtI(Vi a, Vi b) { return _mm512_cmpgt_epi32_mask(a, b); }
inline Mask Or(Mask a, Mask b) { return static_cast<Mask>(a | b); }
inline Mask LtF(Vf a, Vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
inline Mask EqF(Vf a, Vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
inline Vf Select(Mask m, Vf yes, Vf no) { return _mm512_mask_blend_ps(m, no, yes); }
inline Vf ZeroWhere(Mask m, Vf v) { return _mm512_maskz_mov_ps(static_cast<Mask>(~m), v); }
inline unsigned Bits(Mask m) { return m; }
inline Vf RoundNearest(Vf v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// 2^n for integral n in [-126, 127].
inline Vf Pow2(Vf n) {
  const Vi e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
  return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}


// Weights of the compute types (engine/dnnl/matmul.h), widened to float exactly: kW bf16 values
// (the upper halves of floats) or kW signed bytes.
inline Vf LoadBf16(const uint16_t* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
inline Vf LoadS8(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
// Exact for floats holding integers below 2^31.
inline Vi ToInt(Vf v) { return _mm512_cvtps_epi32(v); }
inline Vf ToFloat(Vi v) { return _mm512_cvtepi32_ps(v); }
inline Vi AddI(Vi a, Vi b) { return _mm512_add_epi32(a, b); }
inline void StoreI(int32_t* p, Vi v) { _mm512_storeu_si512(p, v); }
inline void Prefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

#include "engine/ops/kernels/transpose8_m256.inc"

}  // namespace reformer::kernels::avx512
