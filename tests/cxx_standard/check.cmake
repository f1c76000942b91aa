# The C++ standard check at the top of lockfile.hpp (CTest test
# cxx17_is_one_clear_error): a translation unit that only includes the
# header must, compiled as C++17, fail with exactly one error, and that error
# must say that lockfile requires C++20; compiled as C++20 it must compile
# (so the check does not turn away a C++20 compiler, e.g. GCC 10, whose
# __cplusplus for -std=c++20 is 201709L).
#
#   cmake -DCXX_COMPILER=<path> -DCXX_COMPILER_ID=<GNU|Clang|MSVC|...>
#         -DINCLUDE_DIR=<lockfile's include/> [-DCXX_FLAGS=<CMAKE_CXX_FLAGS>]
#         -P check.cmake
cmake_minimum_required(VERSION 3.22)

foreach(_var IN ITEMS CXX_COMPILER CXX_COMPILER_ID INCLUDE_DIR)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "check.cmake: -D${_var}=... is required")
  endif()
endforeach()

set(_tu "${CMAKE_CURRENT_LIST_DIR}/include_lockfile.cpp")
set(_expected "lockfile requires C++20")
separate_arguments(_flags NATIVE_COMMAND "${CXX_FLAGS}")

# compile(<standard> <rc_out> <output_out>): syntax check only, no object.
function(compile standard rc_out output_out)
  if(CXX_COMPILER_ID STREQUAL "MSVC")
    set(_command "${CXX_COMPILER}" ${_flags} /nologo "/std:c++${standard}" /Zs
                 "/I${INCLUDE_DIR}" "${_tu}")
  else()
    set(_command "${CXX_COMPILER}" ${_flags} "-std=c++${standard}" -fsyntax-only
                 "-I${INCLUDE_DIR}" "${_tu}")
  endif()
  list(JOIN _command " " _shown)
  message(STATUS "${_shown}")
  execute_process(COMMAND ${_command}
    RESULT_VARIABLE _rc
    OUTPUT_VARIABLE _output
    ERROR_VARIABLE _output
    TIMEOUT 200)
  set(${rc_out} "${_rc}" PARENT_SCOPE)
  set(${output_out} "${_output}" PARENT_SCOPE)
endfunction()

# --- C++17: one error, and it is ours ----------------------------------------
compile(17 _rc _output)
message("${_output}")
if(_rc STREQUAL "0")
  message(FATAL_ERROR "lockfile.hpp compiled as C++17: the standard check is missing")
endif()
# Diagnostic lines: GCC and Clang "file:line:col: error: ...", MSVC
# "file(line): fatal error C1189: ...". Not "1 error generated.", nor the
# quoted source line under the diagnostic.
# A ";" in a diagnostic would split a CMake list item.
string(REPLACE ";" "," _text "${_output}")
string(REGEX MATCHALL "[^\n]*: (fatal )?error( C[0-9]+)?:[^\n]*" _errors "${_text}")
list(LENGTH _errors _count)
if(NOT _count EQUAL 1)
  message(FATAL_ERROR "C++17: expected exactly 1 error, got ${_count}")
endif()
string(FIND "${_errors}" "${_expected}" _at)
if(_at EQUAL -1)
  message(FATAL_ERROR "C++17: the one error does not say '${_expected}': ${_errors}")
endif()

# --- C++20: no error -----------------------------------------------------------
compile(20 _rc _output)
if(NOT _rc STREQUAL "0")
  message("${_output}")
  message(FATAL_ERROR "lockfile.hpp does not compile as C++20 (${_rc})")
endif()
message(STATUS "C++17: one error, '${_expected}'; C++20: compiles")
