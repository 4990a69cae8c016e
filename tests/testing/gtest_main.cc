// main() of every C++ test binary (instead of gtest_main): like gtest_main, plus a skip is never
// silent. When tests were skipped (GTEST_SKIP) and none failed, the binary exits 77, which ctest
// reports as "Skipped" outside CI and as a failure in CI (reformer_allow_skip in
// cmake/ReformerHelpers.cmake): a test that skips in CI counts as failing.
#include <cstdio>

#include "gtest/gtest.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  if (rc == 0 && unit.skipped_test_count() > 0) {
    std::printf("%d test(s) skipped: exit 77 (ctest: Skipped outside CI, a failure in CI)\n",
                unit.skipped_test_count());
    return 77;
  }
  return rc;
}
