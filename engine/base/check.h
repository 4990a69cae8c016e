// Hard assertions for broken invariants (programmer errors): abort with file:line.
#pragma once

#include <cstdio>
#include <cstdlib>

#define REFORMER_CHECK(cond)                                                        \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)
