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

# REFORMER_TESTS: a regular expression over test names. Empty (the default) = every test. Otherwise
# only the gtest programs whose name matches are defined (so a sanitizer or fuzzing build compiles only
# what its tests need: build the `reformer_test_programs` target; the others are EXCLUDE_FROM_ALL),
# and every other registered test is left out of ctest runs (CTestCustom.cmake, written by
# reformer_write_test_selection()).
set(REFORMER_TESTS "" CACHE STRING "Regular expression selecting the tests to build and run (empty = all)")

function(reformer_test_selected name out)
  if(REFORMER_TESTS STREQUAL "" OR name MATCHES "${REFORMER_TESTS}")
    set(${out} TRUE PARENT_SCOPE)
  else()
    set(${out} FALSE PARENT_SCOPE)
  endif()
endfunction()

# Every test program defined (gtest programs, fuzz replay programs, fuzzers): the dependencies of the
# `reformer_test_programs` target.
function(reformer_register_test_program target)
  set_property(GLOBAL APPEND PROPERTY REFORMER_TEST_PROGRAMS ${target})
endfunction()

# How a test program runs under the configured sanitizers: under ThreadSanitizer through
# tests/sanitizers/tsan_run.py (suppressions and the report check, see that file); otherwise directly.
function(reformer_test_command out)
  if(REFORMER_SANITIZE MATCHES "thread")
    set(${out} /usr/bin/python3 ${REFORMER_SOURCE_ROOT}/tests/sanitizers/tsan_run.py
        --source-root ${REFORMER_SOURCE_ROOT} --binary-root ${CMAKE_BINARY_DIR} -- ${ARGN} PARENT_SCOPE)
  else()
    set(${out} ${ARGN} PARENT_SCOPE)
  endif()
endfunction()

# reformer_cc_test(NAME name SRCS ... DEPS ... [LABELS ...] [TIMEOUT s] [ARGS ...])
# One gtest binary registered as one ctest test (gtest_discover_tests would
# multiply start-up cost for the gRPC tests). When REFORMER_TESTS leaves it out, the program is still
# defined (folders may set its properties) but built by no default target, and ctest ignores it.
function(reformer_cc_test)
  cmake_parse_arguments(A "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS;ARGS" ${ARGN})
  reformer_test_selected(${A_NAME} _selected)
  add_executable(${A_NAME} ${A_SRCS})
  target_include_directories(${A_NAME} PRIVATE ${REFORMER_SOURCE_ROOT} ${CMAKE_BINARY_DIR})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gmock reformer_gtest_main)
  set_target_properties(${A_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  reformer_set_warnings(${A_NAME})
  if(_selected)
    reformer_register_test_program(${A_NAME})
  else()
    set_target_properties(${A_NAME} PROPERTIES EXCLUDE_FROM_ALL TRUE)
  endif()
  reformer_test_command(_command $<TARGET_FILE:${A_NAME}> ${A_ARGS})
  add_test(NAME ${A_NAME} COMMAND ${_command})
  set(_timeout 300)
  if(A_TIMEOUT)
    set(_timeout ${A_TIMEOUT})
  endif()
  if(REFORMER_SANITIZE MATCHES "thread")
    math(EXPR _timeout "${_timeout} * 3")  # ThreadSanitizer runs programs 5-15x slower
  endif()
  set_tests_properties(${A_NAME} PROPERTIES TIMEOUT ${_timeout}
    ENVIRONMENT "REFORMER_SOURCE_DIR=${REFORMER_SOURCE_ROOT};REFORMER_BINARY_DIR=${CMAKE_BINARY_DIR};OMP_NUM_THREADS=2;OMP_WAIT_POLICY=passive")
  if(A_LABELS)
    set_tests_properties(${A_NAME} PROPERTIES LABELS "${A_LABELS}")
  endif()
  reformer_allow_skip(${A_NAME})  # exit 77 = tests skipped (tests/testing/gtest_main.cc)
endfunction()

# reformer_python_server_test(NAME name SCRIPT file.py [PROGRAMS target...] [TIMEOUT s] [LABELS ...]
#                             [ENVIRONMENT VAR=value...])
# A Python test that starts reformer-server itself (tests/python/server_harness.py):
#   /usr/bin/python3 SCRIPT <reformer-server> [<each PROGRAMS target>...] <source root>
# SCRIPT is relative to tests/python/ unless absolute. Registered only when reformer-server and every
# PROGRAMS target are defined. TIMEOUT defaults to 300 s, LABELS to "server;python"; no ENVIRONMENT by
# default. Like every registered test, REFORMER_TESTS selects it by name (reformer_write_test_selection);
# it builds no program of its own, so it is no test program, and it registers no skip code (these tests
# never skip: a missing tool fails them).
function(reformer_python_server_test)
  cmake_parse_arguments(A "" "NAME;SCRIPT;TIMEOUT" "PROGRAMS;LABELS;ENVIRONMENT" ${ARGN})
  set(_files $<TARGET_FILE:reformer-server>)
  foreach(t IN ITEMS reformer-server ${A_PROGRAMS})
    if(NOT TARGET ${t})
      return()
    endif()
  endforeach()
  foreach(t IN LISTS A_PROGRAMS)
    list(APPEND _files $<TARGET_FILE:${t}>)
  endforeach()
  get_filename_component(_script ${A_SCRIPT} ABSOLUTE BASE_DIR ${REFORMER_SOURCE_ROOT}/tests/python)
  add_test(NAME ${A_NAME} COMMAND /usr/bin/python3 ${_script} ${_files} ${REFORMER_SOURCE_ROOT})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  if(NOT A_LABELS)
    set(A_LABELS server python)
  endif()
  set_tests_properties(${A_NAME} PROPERTIES TIMEOUT ${A_TIMEOUT} LABELS "${A_LABELS}")
  if(A_ENVIRONMENT)
    set_tests_properties(${A_NAME} PROPERTIES ENVIRONMENT "${A_ENVIRONMENT}")
  endif()
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

# Collects every test registered under `dir` (recursively).
function(_reformer_collect_tests dir out)
  get_property(_tests DIRECTORY ${dir} PROPERTY TESTS)
  get_property(_subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(sub IN LISTS _subdirs)
    _reformer_collect_tests(${sub} _sub_tests)
    list(APPEND _tests ${_sub_tests})
  endforeach()
  set(${out} ${_tests} PARENT_SCOPE)
endfunction()

# Called last by the top-level CMakeLists.txt: ctest runs only the tests REFORMER_TESTS selects
# (the others, e.g. Python tests of programs such a build does not make, are ignored by ctest), and
# the `reformer_test_programs` target builds every test program that was defined.
function(reformer_write_test_selection)
  get_property(_programs GLOBAL PROPERTY REFORMER_TEST_PROGRAMS)
  add_custom_target(reformer_test_programs)
  if(_programs)
    add_dependencies(reformer_test_programs ${_programs})
  endif()
  set(_ignore "")
  if(NOT REFORMER_TESTS STREQUAL "")
    _reformer_collect_tests(${CMAKE_SOURCE_DIR} _all)
    foreach(t IN LISTS _all)
      if(NOT t MATCHES "${REFORMER_TESTS}")
        list(APPEND _ignore ${t})
      endif()
    endforeach()
    message(STATUS "REFORMER_TESTS='${REFORMER_TESTS}': ctest leaves out ${_ignore}")
  endif()
  file(WRITE ${CMAKE_BINARY_DIR}/CTestCustom.cmake
       "# Written by reformer_write_test_selection() (cmake/ReformerHelpers.cmake).\n"
       "set(CTEST_CUSTOM_TESTS_IGNORE ${_ignore})\n")
endfunction()

# -DREFORMER_SANITIZE=address,undefined (or thread). With thread, REFORMER_ABSEIL_PREFIX names an
# Abseil built with -fsanitize=thread (scripts/build-tsan-abseil.sh): it is found before Debian's and
# every program links it with DT_RPATH, which the dynamic loader also applies to the dependencies of
# gRPC, so the whole process uses the instrumented absl::Mutex (and TSan sees that synchronisation).
set(REFORMER_ABSEIL_PREFIX "" CACHE PATH "Prefix of a ThreadSanitizer-built Abseil (REFORMER_SANITIZE=thread)")
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
  if("thread" IN_LIST _sans)
    if(REFORMER_ABSEIL_PREFIX)
      if(NOT EXISTS ${REFORMER_ABSEIL_PREFIX}/lib/cmake/absl/abslConfig.cmake)
        message(FATAL_ERROR "REFORMER_ABSEIL_PREFIX=${REFORMER_ABSEIL_PREFIX} holds no Abseil "
                            "(run scripts/build-tsan-abseil.sh ${REFORMER_ABSEIL_PREFIX})")
      endif()
      set(CMAKE_PREFIX_PATH ${REFORMER_ABSEIL_PREFIX} ${CMAKE_PREFIX_PATH} PARENT_SCOPE)
      add_link_options(-Wl,--disable-new-dtags -Wl,-rpath,${REFORMER_ABSEIL_PREFIX}/lib)
      message(STATUS "ThreadSanitizer: Abseil from ${REFORMER_ABSEIL_PREFIX}")
    else()
      message(WARNING "REFORMER_SANITIZE=thread without REFORMER_ABSEIL_PREFIX: Debian's Abseil is not "
                      "instrumented, so TSan cannot see absl::Mutex and reports races that are none")
    endif()
  endif()
endfunction()

# REFORMER_FUZZ: every project target is compiled with libFuzzer's coverage instrumentation
# (-fsanitize=fuzzer-no-link), so the fuzzers see the branches of the parsers they drive; the fuzzers
# themselves link -fsanitize=fuzzer (fuzz/CMakeLists.txt). Pair it with
# REFORMER_SANITIZE=address,undefined.
function(reformer_enable_fuzzing)
  if(NOT REFORMER_FUZZ)
    return()
  endif()
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "REFORMER_FUZZ needs clang (libFuzzer): -DCMAKE_CXX_COMPILER=clang++")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
endfunction()

# add_subdirectory only when the folder has a CMakeLists.txt (lets folders land one at a time).
macro(reformer_add_subdirectory dir)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${dir}/CMakeLists.txt)
    add_subdirectory(${dir})
  endif()
endmacro()
