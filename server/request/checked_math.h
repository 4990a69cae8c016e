// Overflow-safe arithmetic for sizes a client declares (shapes, counts). Every size computed from
// client input goes through these before anything is allocated.
#pragma once

#include <cstdint>
#include <optional>

namespace reformer::serving {

// a * b for a, b >= 0; nullopt when the product exceeds INT64_MAX.
inline std::optional<int64_t> CheckedMul(int64_t a, int64_t b) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// a + b for a, b >= 0; nullopt on overflow.
inline std::optional<int64_t> CheckedAdd(int64_t a, int64_t b) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// a * b saturated at INT64_MAX (for sizes compared against a limit: "too large" either way).
inline int64_t SaturatingMul(int64_t a, int64_t b) { return CheckedMul(a, b).value_or(INT64_MAX); }
inline int64_t SaturatingAdd(int64_t a, int64_t b) { return CheckedAdd(a, b).value_or(INT64_MAX); }

}  // namespace reformer::serving
