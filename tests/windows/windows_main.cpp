// The Windows suite's main(): the Catch2 session, or, with --helper, one of
// the helper roles the multi-process tests start this same program in.
#include "windows_support.hpp"

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

namespace {

// hold PATH READY [STALE_MS]: acquire PATH, create READY, then hold until
// PATH.release appears (or the process is killed).
int hold(const std::filesystem::path& path, const std::filesystem::path& ready, int stale_ms) {
  lockfile::Options options;
  options.lease_stale_threshold = std::chrono::milliseconds(stale_ms);
  options.lease_heartbeat_interval = std::chrono::milliseconds(std::max(stale_ms / 6, 10));
  lockfile::PIDLock lock(path, options);
  if (!lock.try_lock_for(std::chrono::seconds(30))) return 3;
  lockfile_windows::touch(ready);
  auto release = path;
  release += ".release";
  while (!std::filesystem::exists(release)) ::Sleep(5);
  lock.release();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "--helper") {
    try {
      const std::string role = argc >= 3 ? argv[2] : "";
      if (role == "hold" && argc >= 5)
        return hold(std::filesystem::u8path(argv[3]), std::filesystem::u8path(argv[4]),
                    argc >= 6 ? std::stoi(argv[5]) : 60000);
      std::fprintf(stderr, "unknown helper role\n");
      return 64;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "helper: %s\n", e.what());
      return 70;
    }
  }
  return Catch::Session().run(argc, argv);
}
