# Small helpers shared by every folder's CMakeLists.txt.

# Warnings for project code only (imported targets keep their own flags).
function(reformer_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(REFORMER_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
option(REFORMER_WERROR "Treat warnings in project code as errors" OFF)

# reformer_cc_library(NAME name SRCS ... DEPS ... [PUBLIC_DEPS ...])
function(reformer_cc_library)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS;PUBLIC_DEPS" ${ARGN})
  add_library(${A_NAME} STATIC ${A_SRCS})
  target_include_directories(${A_NAME} PUBLIC ${REFORMER_SOURCE_ROOT} ${CMAKE_BINARY_DIR})
  target_link_libraries(${A_NAME} PUBLIC ${A_PUBLIC_DEPS} PRIVATE ${A_DEPS})
  reformer_set_warnings(${A_NAME})
endfunction()

# reformer_cc_test(NAME name SRCS ... DEPS ... [LABELS ...] [TIMEOUT s] [ARGS ...])
# One gtest binary registered as one ctest test (gtest_discover_tests would
# multiply start-up cost for the gRPC tests).
function(reformer_cc_test)
  cmake_parse_arguments(A "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS;ARGS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_include_directories(${A_NAME} PRIVATE ${REFORMER_SOURCE_ROOT} ${CMAKE_BINARY_DIR})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gmock reformer_gtest_main)
  set_target_properties(${A_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  reformer_set_warnings(${A_NAME})
  add_test(NAME ${A_NAME} COMMAND ${A_NAME} ${A_ARGS})
  set(_timeout 300)
  if(A_TIMEOUT)
    set(_timeout ${A_TIMEOUT})
  endif()
  set_tests_properties(${A_NAME} PROPERTIES TIMEOUT ${_timeout}
    ENVIRONMENT "REFORMER_SOURCE_DIR=${REFORMER_SOURCE_ROOT};REFORMER_BINARY_DIR=${CMAKE_BINARY_DIR};OMP_NUM_THREADS=2;OMP_WAIT_POLICY=passive")
  if(A_LABELS)
    set_tests_properties(${A_NAME} PROPERTIES LABELS "${A_LABELS}")
  endif()
  reformer_allow_skip(${A_NAME})  # exit 77 = tests skipped (tests/testing/gtest_main.cc)
endfunction()

# reformer_allow_skip(test...): exit code 77 means "skipped" (a prerequisite is missing; the test says
# which). Only outside CI: with CI=true (or 1/yes) in the environment at configure time, 77 is a failure
# like any other code, because a test that skips in CI counts as failing (.ci/run sets CI=true).
if("$ENV{CI}" MATCHES "^([Tt][Rr][Uu][Ee]|1|[Yy][Ee][Ss])$")
  set(REFORMER_CI ON)
  message(STATUS "CI=true: a test that would skip (exit 77) fails instead")
else()
  set(REFORMER_CI OFF)
endif()
function(reformer_allow_skip)
  if(NOT REFORMER_CI)
    set_tests_properties(${ARGN} PROPERTIES SKIP_RETURN_CODE 77)
  endif()
endfunction()

# -DREFORMER_SANITIZE=address,undefined
function(reformer_enable_sanitizers list)
  if(NOT list)
    return()
  endif()
  string(REPLACE "," ";" _sans "${list}")
  foreach(s IN LISTS _sans)
    if(NOT s MATCHES "^(address|undefined|thread|leak)$")
      message(FATAL_ERROR "REFORMER_SANITIZE: unknown sanitizer '${s}'")
    endif()
  endforeach()
  string(REPLACE ";" "," _joined "${_sans}")
  add_compile_options(-fsanitize=${_joined} -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=${_joined})
  message(STATUS "Sanitizers: ${_joined}")
endfunction()

# add_subdirectory only when the folder has a CMakeLists.txt (lets folders land one at a time).
macro(reformer_add_subdirectory dir)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${dir}/CMakeLists.txt)
    add_subdirectory(${dir})
  endif()
endmacro()
