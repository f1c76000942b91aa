# Consumer test driver: builds and runs the project in this directory
# against lockfile the way a user would, in a fresh directory.
#
#   cmake -DMODE=<mode> -DWORK_DIR=<dir> -DLOCKFILE_SOURCE_DIR=<dir>
#         -DLOCKFILE_BINARY_DIR=<dir> -DCXX_COMPILER=<path>
#         [-DGENERATOR=<name>] [-DGENERATOR_PLATFORM=..] [-DGENERATOR_TOOLSET=..]
#         [-DMAKE_PROGRAM=<path>] [-DPKG_CONFIG=<path>] [-DEXPECT_LOCKRUN=ON|OFF]
#         -P run.cmake
#
# MODE
#   add_subdirectory  configure, build, run with add_subdirectory(<source tree>)
#   fetchcontent      the same with README.md's FetchContent snippet (between
#                     <!-- fetchcontent-snippet --> and <!-- /fetchcontent-snippet -->)
#                     as it stands, but for GIT_REPOSITORY, pointed at the source
#                     tree, and GIT_TAG, pointed at its HEAD commit: so the
#                     committed state is tested, not uncommitted changes. The
#                     README's own GIT_TAG must name a branch, tag or commit
#                     of the checkout (unless it is shallow). Skipped (as
#                     below) without git or when the source tree is not a
#                     git checkout of its own.
#   find_package      cmake --install <LOCKFILE_BINARY_DIR> into WORK_DIR/staged,
#                     move that to WORK_DIR/prefix (the package must be
#                     relocatable), then find_package(lockfile) from there.
#                     With EXPECT_LOCKRUN (LOCKFILE_BUILD_LOCKRUN), the prefix
#                     must hold bin/lockrun, and `PREFIX/bin/lockrun --version`
#                     and, with PREFIX/bin first in PATH, `lockrun --help` must
#                     run; without it, bin/lockrun must not be installed.
#   pkg_config        install and move as for find_package, then check
#                     pkg-config --cflags lockfile (its -I), --cflags --libs
#                     (every flag once) and compile main.cpp by hand
#                     with CXX_COMPILER and pkg-config's flags. Skipped (exit
#                     code 77 on CMake >= 3.29, else output matching
#                     "lockfile consumer test SKIPPED") without pkg-config,
#                     unless the environment sets
#                     LOCKFILE_CONSUMER_REQUIRE_PKG_CONFIG=1 (CI does).
#
# WORK_DIR is deleted first; WORK_DIR.lock (file(LOCK)) keeps two runs with
# the same WORK_DIR apart. Installing writes install_manifest.txt into
# LOCKFILE_BINARY_DIR, so installs take turns too (a lock file under its
# CMakeFiles/; CTest's RESOURCE_LOCK keeps them from queueing there).
cmake_minimum_required(VERSION 3.22)

set(CONSUMER_DIR "${CMAKE_CURRENT_LIST_DIR}")
set(STEP_TIMEOUT 200)  # seconds, per configure/build/run step

foreach(_var IN ITEMS MODE WORK_DIR LOCKFILE_SOURCE_DIR LOCKFILE_BINARY_DIR CXX_COMPILER)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "run.cmake: -D${_var}=... is required")
  endif()
endforeach()
if(NOT MODE MATCHES "^(add_subdirectory|fetchcontent|find_package|pkg_config)$")
  message(FATAL_ERROR "run.cmake: unknown MODE '${MODE}'")
endif()

string(TIMESTAMP _started "%s")

# run(<what> COMMAND <command...> [WORKING_DIRECTORY <dir>] [OUTPUT <var>])
# Runs a step, echoing it; fails the test when it fails. With OUTPUT, stdout
# is captured into <var> (and still shown).
function(run what)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "WORKING_DIRECTORY;OUTPUT" "COMMAND")
  if(NOT ARG_WORKING_DIRECTORY)
    set(ARG_WORKING_DIRECTORY "${WORK_DIR}")
  endif()
  list(JOIN ARG_COMMAND " " _shown)
  message(STATUS "[${MODE}] ${what}: ${_shown}")
  string(TIMESTAMP _t0 "%s")
  if(ARG_OUTPUT)
    execute_process(COMMAND ${ARG_COMMAND}
      WORKING_DIRECTORY "${ARG_WORKING_DIRECTORY}"
      TIMEOUT ${STEP_TIMEOUT}
      RESULT_VARIABLE _rc
      OUTPUT_VARIABLE _out
      OUTPUT_STRIP_TRAILING_WHITESPACE)
    message("${_out}")
    set(${ARG_OUTPUT} "${_out}" PARENT_SCOPE)
  else()
    execute_process(COMMAND ${ARG_COMMAND}
      WORKING_DIRECTORY "${ARG_WORKING_DIRECTORY}"
      TIMEOUT ${STEP_TIMEOUT}
      RESULT_VARIABLE _rc)
  endif()
  string(TIMESTAMP _t1 "%s")
  math(EXPR _secs "${_t1} - ${_t0}")
  if(NOT _rc STREQUAL "0")
    message(FATAL_ERROR "[${MODE}] ${what} FAILED (${_rc}) after ${_secs} s: ${_shown}")
  endif()
  message(STATUS "[${MODE}] ${what}: ok (${_secs} s)")
endfunction()

function(skip why)
  message(STATUS "lockfile consumer test SKIPPED: ${why}")
  if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.29)
    cmake_language(EXIT 77)
  endif()
endfunction()

# realpath of <path>, so "a/share/pkgconfig/../../include" compares equal to "a/include".
function(real_path out path)
  get_filename_component(_p "${path}" REALPATH)
  set(${out} "${_p}" PARENT_SCOPE)
endfunction()

# The installed lockrun, as its users run it: by its path, and by its name
# with the prefix's bin/ in PATH (the README's install recipe says so).
function(check_lockrun prefix)
  set(_lockrun "${prefix}/bin/lockrun")
  if(NOT EXPECT_LOCKRUN)
    if(EXISTS "${_lockrun}")
      message(FATAL_ERROR "[${MODE}] bin/lockrun was installed with LOCKFILE_BUILD_LOCKRUN off")
    endif()
    return()
  endif()
  if(NOT EXISTS "${_lockrun}")
    message(FATAL_ERROR "[${MODE}] the install did not provide bin/lockrun "
                        "(LOCKFILE_BUILD_LOCKRUN is on)")
  endif()
  run("lockrun --version" COMMAND "${_lockrun}" --version OUTPUT _version)
  if(NOT _version MATCHES "^lockrun.* [0-9]+\\.[0-9]+\\.[0-9]+")
    message(FATAL_ERROR "[${MODE}] ${_lockrun} --version printed '${_version}'")
  endif()
  set(_path "$ENV{PATH}")
  set(ENV{PATH} "${prefix}/bin:${_path}")
  run("which lockrun" COMMAND sh -c "command -v lockrun" OUTPUT _found)
  run("lockrun --help" COMMAND lockrun --help OUTPUT _help)
  set(ENV{PATH} "${_path}")
  real_path(_found_real "${_found}")
  real_path(_want "${_lockrun}")
  if(NOT _found_real STREQUAL _want)
    message(FATAL_ERROR "[${MODE}] with ${prefix}/bin first in PATH, lockrun is '${_found}'")
  endif()
  if(NOT _help MATCHES "Usage: lockrun ")
    message(FATAL_ERROR "[${MODE}] lockrun --help printed no usage: '${_help}'")
  endif()
endfunction()

# cmake --install, then move the prefix: nothing installed may remember where
# it was put first.
function(install_and_relocate prefix_out)
  set(_staged "${WORK_DIR}/staged")
  set(_prefix "${WORK_DIR}/prefix")
  # Also across ctest processes (CTest's RESOURCE_LOCK is per process).
  set(_lock "${LOCKFILE_BINARY_DIR}/CMakeFiles/lockfile_consumer_install.lock")
  file(LOCK "${_lock}" GUARD FUNCTION TIMEOUT ${STEP_TIMEOUT} RESULT_VARIABLE _locked)
  if(NOT _locked STREQUAL "0")
    message(FATAL_ERROR "[${MODE}] cannot lock ${_lock}: ${_locked}")
  endif()
  run("install" COMMAND "${CMAKE_COMMAND}" --install "${LOCKFILE_BINARY_DIR}" --prefix "${_staged}")
  file(LOCK "${_lock}" RELEASE)
  file(RENAME "${_staged}" "${_prefix}")
  foreach(_file IN ITEMS
      include/lockfile/lockfile.hpp
      include/lockfile/detail/pid_lock.hpp
      include/lockfile/detail/platform.hpp
      include/lockfile/detail/platform_posix.hpp
      include/lockfile/detail/platform_windows.hpp
      share/cmake/lockfile/lockfileConfig.cmake
      share/cmake/lockfile/lockfileConfigVersion.cmake
      share/cmake/lockfile/lockfileTargets.cmake
      share/pkgconfig/lockfile.pc)
    if(NOT EXISTS "${_prefix}/${_file}")
      message(FATAL_ERROR "[${MODE}] the install did not provide ${_file}")
    endif()
  endforeach()
  check_lockrun("${_prefix}")
  file(GLOB_RECURSE _installed LIST_DIRECTORIES false RELATIVE "${_prefix}" "${_prefix}/*")
  list(JOIN _installed " " _shown)
  message(STATUS "[${MODE}] installed: ${_shown}")
  # The files that tell consumers where things are must not name the build.
  # (Not programs: their debug information names the sources, harmlessly.)
  list(FILTER _installed INCLUDE REGEX "\\.(cmake|pc)$")
  foreach(_file IN LISTS _installed)
    file(READ "${_prefix}/${_file}" _text)
    foreach(_path IN ITEMS "${_staged}" "${LOCKFILE_BINARY_DIR}" "${LOCKFILE_SOURCE_DIR}")
      string(FIND "${_text}" "${_path}" _at)
      if(NOT _at EQUAL -1)
        message(FATAL_ERROR "[${MODE}] installed ${_file} names ${_path}: not relocatable")
      endif()
    endforeach()
  endforeach()
  set(${prefix_out} "${_prefix}" PARENT_SCOPE)
endfunction()

# --- a fresh work directory ------------------------------------------------------
if(MODE STREQUAL "pkg_config")
  if(NOT PKG_CONFIG)
    find_program(PKG_CONFIG NAMES pkg-config pkgconf)
  endif()
  if(NOT PKG_CONFIG)
    if("$ENV{LOCKFILE_CONSUMER_REQUIRE_PKG_CONFIG}")
      message(FATAL_ERROR "[${MODE}] pkg-config not found, and "
                          "LOCKFILE_CONSUMER_REQUIRE_PKG_CONFIG is set")
    endif()
    skip("pkg-config not found")
    return()
  endif()
endif()

# README.md's FetchContent snippet into <out_file>, GIT_REPOSITORY and GIT_TAG
# replaced by <repository> and <commit>; <tag_out> gets the README's GIT_TAG.
function(readme_fetchcontent_snippet out_file repository commit tag_out)
  set(_readme "${LOCKFILE_SOURCE_DIR}/README.md")
  file(READ "${_readme}" _text)
  set(_open "<!-- fetchcontent-snippet")
  set(_close "<!-- /fetchcontent-snippet -->")
  string(FIND "${_text}" "${_open}" _begin)
  string(FIND "${_text}" "${_close}" _end)
  if(_begin EQUAL -1 OR _end LESS _begin)
    message(FATAL_ERROR "[${MODE}] ${_readme} has no '${_open} ... -->' ... '${_close}' block")
  endif()
  math(EXPR _length "${_end} - ${_begin}")
  string(SUBSTRING "${_text}" ${_begin} ${_length} _block)
  string(REGEX MATCHALL "```" _fences "${_block}")
  list(LENGTH _fences _fences)
  if(NOT _fences EQUAL 2 OR NOT _block MATCHES "```cmake\n(.*)```")
    message(FATAL_ERROR "[${MODE}] the fetchcontent-snippet block of ${_readme} must hold "
                        "exactly one ```cmake code block")
  endif()
  set(_snippet "${CMAKE_MATCH_1}")
  foreach(_key IN ITEMS GIT_REPOSITORY GIT_TAG)
    string(REGEX MATCHALL "${_key}" _found "${_snippet}")
    list(LENGTH _found _found)
    if(NOT _found EQUAL 1)
      message(FATAL_ERROR "[${MODE}] the README's FetchContent snippet must name ${_key} "
                          "exactly once (found ${_found}):\n${_snippet}")
    endif()
  endforeach()
  string(REGEX MATCH "GIT_TAG[ \t]+([^ \t\n)]+)" _ "${_snippet}")
  set(${tag_out} "${CMAKE_MATCH_1}" PARENT_SCOPE)
  string(REGEX REPLACE "GIT_REPOSITORY[ \t]+[^ \t\n)]+" "GIT_REPOSITORY \"${repository}\""
         _snippet "${_snippet}")
  string(REGEX REPLACE "GIT_TAG([ \t]+)[^ \t\n)]+" "GIT_TAG\\1${commit}" _snippet "${_snippet}")
  file(WRITE "${out_file}" "${_snippet}")
  message(STATUS "[${MODE}] README.md's snippet, pointed at ${repository} ${commit}:\n${_snippet}")
endfunction()

# git -C <source tree> <args...>: <out> gets stdout, <rc_out> the exit code.
function(git_in_source out rc_out)
  execute_process(COMMAND "${GIT}" -C "${LOCKFILE_SOURCE_DIR}" ${ARGN}
    RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  set(${out} "${_out}" PARENT_SCOPE)
  set(${rc_out} "${_rc}" PARENT_SCOPE)
endfunction()

if(MODE STREQUAL "fetchcontent")
  find_program(GIT NAMES git)
  if(NOT GIT)
    skip("git not found")
    return()
  endif()
  git_in_source(_top _rc rev-parse --show-toplevel)
  real_path(_top "${_top}")
  real_path(_source "${LOCKFILE_SOURCE_DIR}")
  if(NOT _rc STREQUAL "0" OR NOT _top STREQUAL _source)
    skip("${LOCKFILE_SOURCE_DIR} is not a git checkout of its own")
    return()
  endif()
  git_in_source(_commit _rc rev-parse --verify HEAD)
  if(NOT _rc STREQUAL "0")
    message(FATAL_ERROR "[${MODE}] git cannot read HEAD in ${LOCKFILE_SOURCE_DIR}")
  endif()
  git_in_source(_dirty _rc status --porcelain --untracked-files=no)
  if(_dirty)
    message(STATUS "[${MODE}] note: ${LOCKFILE_SOURCE_DIR} has uncommitted changes; "
                   "this test fetches the commit ${_commit} without them")
  endif()
endif()

# Two ctest runs in one build tree would share WORK_DIR: take turns.
file(LOCK "${WORK_DIR}.lock" GUARD PROCESS TIMEOUT ${STEP_TIMEOUT} RESULT_VARIABLE _locked)
if(NOT _locked STREQUAL "0")
  message(FATAL_ERROR "[${MODE}] cannot lock ${WORK_DIR}.lock: ${_locked}")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

# --- CMake consumers ---------------------------------------------------------------
if(NOT MODE STREQUAL "pkg_config")
  set(_configure
    "${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${WORK_DIR}/build"
    "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
  if(GENERATOR)
    list(APPEND _configure -G "${GENERATOR}")
    if(GENERATOR_PLATFORM)
      list(APPEND _configure -A "${GENERATOR_PLATFORM}")
    endif()
    if(GENERATOR_TOOLSET)
      list(APPEND _configure -T "${GENERATOR_TOOLSET}")
    endif()
    if(MAKE_PROGRAM)
      list(APPEND _configure "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
    endif()
  endif()

  if(MODE STREQUAL "add_subdirectory")
    list(APPEND _configure -DLOCKFILE_CONSUME_MODE=subdirectory
                           "-DLOCKFILE_SOURCE_DIR=${LOCKFILE_SOURCE_DIR}")
  elseif(MODE STREQUAL "fetchcontent")
    set(_snippet "${WORK_DIR}/fetchcontent_snippet.cmake")
    readme_fetchcontent_snippet("${_snippet}" "${LOCKFILE_SOURCE_DIR}" "${_commit}" _readme_tag)
    # What the README pins must exist: it once pinned v0.1.0, a tag that
    # never was. A shallow checkout may lack it; then only say so.
    git_in_source(_ignored _rc rev-parse --verify --quiet "${_readme_tag}^{commit}")
    if(NOT _rc STREQUAL "0")
      git_in_source(_ignored _rc rev-parse --verify --quiet "refs/remotes/origin/${_readme_tag}^{commit}")
    endif()
    if(NOT _rc STREQUAL "0")
      git_in_source(_shallow _ignored rev-parse --is-shallow-repository)
      if(_shallow STREQUAL "true")
        message(STATUS "[${MODE}] note: this shallow checkout cannot tell whether the "
                       "README's GIT_TAG ${_readme_tag} exists")
      else()
        message(FATAL_ERROR "[${MODE}] README.md's FetchContent snippet pins GIT_TAG "
                            "${_readme_tag}, which is no branch, tag or commit of ${LOCKFILE_SOURCE_DIR}")
      endif()
    endif()
    list(APPEND _configure -DLOCKFILE_CONSUME_MODE=fetchcontent
                           "-DLOCKFILE_SOURCE_DIR=${LOCKFILE_SOURCE_DIR}"
                           "-DLOCKFILE_FETCHCONTENT_SNIPPET=${_snippet}"
                           "-DLOCKFILE_EXPECT_COMMIT=${_commit}")
  else()
    install_and_relocate(_prefix)
    list(APPEND _configure -DLOCKFILE_CONSUME_MODE=find_package
                           "-DCMAKE_PREFIX_PATH=${_prefix}"
                           "-DLOCKFILE_EXPECT_PREFIX=${_prefix}"
                           -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
  endif()

  run("configure" COMMAND ${_configure})
  run("build" COMMAND "${CMAKE_COMMAND}" --build "${WORK_DIR}/build" --config Debug)
  set(_program "${WORK_DIR}/build/bin/lockfile_consumer")

# --- pkg-config ------------------------------------------------------------------------
else()
  install_and_relocate(_prefix)
  # Only the prefix under test: nothing from the system's search path.
  set(ENV{PKG_CONFIG_PATH} "${_prefix}/share/pkgconfig")
  set(ENV{PKG_CONFIG_LIBDIR} "${_prefix}/share/pkgconfig")
  unset(ENV{PKG_CONFIG_SYSROOT_DIR})
  unset(ENV{PKG_CONFIG_ALLOW_SYSTEM_CFLAGS})

  run("pkg-config --cflags" COMMAND "${PKG_CONFIG}" --cflags lockfile OUTPUT _cflags)
  run("pkg-config --libs" COMMAND "${PKG_CONFIG}" --libs lockfile OUTPUT _libs)
  run("pkg-config --modversion" COMMAND "${PKG_CONFIG}" --modversion lockfile OUTPUT _version)

  run("pkg-config --cflags --libs" COMMAND "${PKG_CONFIG}" --cflags --libs lockfile OUTPUT _both)

  separate_arguments(_cflags UNIX_COMMAND "${_cflags}")
  separate_arguments(_libs UNIX_COMMAND "${_libs}")
  separate_arguments(_both UNIX_COMMAND "${_both}")
  # Asked for both at once, the way a one-line compile-and-link uses them,
  # every flag comes once (-pthread used to come twice: Cflags and Libs).
  set(_pthread ${_both})
  list(FILTER _pthread INCLUDE REGEX "^-pthread$")
  list(LENGTH _pthread _count)
  if(NOT _count EQUAL 1)
    message(FATAL_ERROR "[${MODE}] pkg-config --cflags --libs lockfile has -pthread "
                        "${_count} times, expected once: ${_both}")
  endif()
  set(_unique ${_both})
  list(REMOVE_DUPLICATES _unique)
  if(NOT _unique STREQUAL _both)
    message(FATAL_ERROR "[${MODE}] pkg-config --cflags --libs lockfile repeats a flag: ${_both}")
  endif()
  # A separate link step still gets the threads library.
  if(NOT "-pthread" IN_LIST _libs)
    message(FATAL_ERROR "[${MODE}] pkg-config --libs lockfile has no -pthread: ${_libs}")
  endif()
  real_path(_want_include "${_prefix}/include")
  set(_found_include FALSE)
  foreach(_flag IN LISTS _cflags)
    if(_flag MATCHES "^-I(.+)$")
      real_path(_dir "${CMAKE_MATCH_1}")
      if(_dir STREQUAL _want_include)
        set(_found_include TRUE)
      endif()
    endif()
  endforeach()
  if(NOT _found_include)
    message(FATAL_ERROR "[${MODE}] pkg-config --cflags lockfile has no -I for the "
                        "installed include directory ${_prefix}/include")
  endif()

  set(_program "${WORK_DIR}/lockfile_consumer")
  run("compile" COMMAND "${CXX_COMPILER}" -std=c++20 "${CONSUMER_DIR}/main.cpp"
                        ${_cflags}
                        "-DLOCKFILE_CONSUMER_MODE=\"pkg-config\""
                        "-DLOCKFILE_CONSUMER_EXPECTED_VERSION=\"${_version}\""
                        -o "${_program}" ${_libs})
endif()

# --- run the consumer ------------------------------------------------------------------
run("run" COMMAND "${_program}")

string(TIMESTAMP _finished "%s")
math(EXPR _total "${_finished} - ${_started}")
message(STATUS "[${MODE}] passed in ${_total} s")
