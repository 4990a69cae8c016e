// Status helpers missing from Abseil 20220623 (it has no status macros).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define REFORMER_CONCAT_INNER_(a, b) a##b
#define REFORMER_CONCAT_(a, b) REFORMER_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                       \
  do {                                              \
    ::absl::Status _reformer_status = (expr);       \
    if (!_reformer_status.ok()) return _reformer_status; \
  } while (0)

// ASSIGN_OR_RETURN(auto x, MakeX()); declares/assigns `lhs` or returns the error.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL_(REFORMER_CONCAT_(_reformer_statusor_, __LINE__), lhs, rexpr)
#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                           \
  if (!statusor.ok()) return statusor.status();      \
  lhs = std::move(statusor).value()
