// lockfile: exclusive locks between processes, and between hosts that share a
// file system, held as lease files.
//
// The owner keeps a one-line JSON lease record fresh from a background thread;
// anyone else takes the lock over once the lease is stale, or at once when the
// owner is provably dead. See the repository's README.md for the guarantees,
// the lease record and how the protocol works, and its docs/design.md for how
// this header's parts fit together.
// SPDX-License-Identifier: MIT
#ifndef LOCKFILE_LOCKFILE_HPP
#define LOCKFILE_LOCKFILE_HPP

#define LOCKFILE_VERSION_MAJOR 0
#define LOCKFILE_VERSION_MINOR 1
#define LOCKFILE_VERSION_PATCH 0
#define LOCKFILE_VERSION "0.1.0"

// One clear error instead of dozens from the parts below. MSVC keeps
// __cplusplus at 199711L unless /Zc:__cplusplus is given; _MSVC_LANG tells the
// real standard. "Newer than C++17" rather than ">= 202002L": GCC 10 reports
// 201709L for -std=c++20.
#if (defined(_MSVC_LANG) && _MSVC_LANG <= 201703L) || (!defined(_MSVC_LANG) && __cplusplus <= 201703L)
#error "lockfile requires C++20 (-std=c++20, or /std:c++20 with MSVC; with CMake, link lockfile::lockfile, which sets it)"
#else

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>


#include "detail/errors.hpp"
#include "detail/options.hpp"
#include "detail/record.hpp"
#include "detail/platform.hpp"
#include "detail/judgement.hpp"
#include "detail/waiting.hpp"
#include "detail/lease_state.hpp"
#include "detail/renewal_service.hpp"
#include "detail/network_claims.hpp"
#include "detail/fencing.hpp"
#include "detail/pid_lock.hpp"
#include "detail/lock_waiter.hpp"
#include "detail/inspection.hpp"

#endif  // C++20
#endif  // LOCKFILE_LOCKFILE_HPP
