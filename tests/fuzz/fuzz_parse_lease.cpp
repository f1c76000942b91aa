// libFuzzer target for the lease record: parse_lease() on arbitrary bytes,
// and format_lease() -> parse_lease() round trips (DESIGN.md "The lease
// record"). Any crash, sanitizer report, leak or broken property aborts.
//
// Every input is used twice:
//   1. as a record: whatever parse_lease() accepts must be a valid lease,
//      must format to one line of JSON, and must read back as the same lease
//      (and format to the same bytes again);
//   2. as a Lease built from the bytes (FuzzedDataProvider): a valid lease
//      must survive format -> parse (strings that are not UTF-8 come back
//      with U+FFFD per bad byte, as format_lease() documents); an invalid one
//      must format to a record that parse_lease() rejects.
// Also, the classification of lock file bytes (valid, invalid, foreign) must
// agree with parse_lease(), and every prefix of a written record (what a
// crashed writer leaves) must be valid or invalid, never foreign.
//
// Build: cmake --preset fuzz && cmake --build --preset fuzz
// Run:   tests/fuzz/run.sh SECONDS
#include <lockfile/lockfile.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <climits>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

namespace {

using lockfile::format_lease;
using lockfile::Lease;
using lockfile::parse_lease;

constexpr std::size_t max_record_bytes = lockfile::detail::max_record_bytes;
static_assert(max_record_bytes == std::size_t{64} * 1024, "DESIGN.md: a record is at most 64 KiB");

[[noreturn]] void fail(const char* what, std::string_view detail) {
  (void)std::fprintf(stderr, "fuzz_parse_lease: %s\n  %.*s\n", what,
                     static_cast<int>(detail.size() < 400 ? detail.size() : 400), detail.data());
  std::abort();
}

void require(bool ok, const char* what, std::string_view detail) {
  if (!ok) fail(what, detail);
}

// The length of the well-formed UTF-8 sequence starting at text[i], or 0 —
// written from the Unicode standard's table 3-7, independently of the
// library's own decoder, so that the two can disagree.
std::size_t utf8_length(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) -> unsigned {
    return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0x100U;
  };
  const auto in = [](unsigned value, unsigned low, unsigned high) { return value >= low && value <= high; };
  const unsigned b0 = byte(0);
  if (b0 < 0x80) return 1;
  if (in(b0, 0xC2, 0xDF)) return in(byte(1), 0x80, 0xBF) ? 2 : 0;
  if (in(b0, 0xE0, 0xEF)) {
    const unsigned low = b0 == 0xE0 ? 0xA0 : 0x80;
    const unsigned high = b0 == 0xED ? 0x9F : 0xBF;
    return in(byte(1), low, high) && in(byte(2), 0x80, 0xBF) ? 3 : 0;
  }
  if (in(b0, 0xF0, 0xF4)) {
    const unsigned low = b0 == 0xF0 ? 0x90 : 0x80;
    const unsigned high = b0 == 0xF4 ? 0x8F : 0xBF;
    return in(byte(1), low, high) && in(byte(2), 0x80, 0xBF) && in(byte(3), 0x80, 0xBF) ? 4 : 0;
  }
  return 0;
}

bool valid_utf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t length = utf8_length(text, i);
    if (length == 0) return false;
    i += length;
  }
  return true;
}

// What format_lease() writes for a string: every byte that does not start a
// well-formed sequence becomes U+FFFD (like Go's encoding/json).
std::string with_replacement_characters(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t length = utf8_length(text, i);
    if (length == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  return out;
}

bool blank(std::string_view text) { return text.find_first_not_of(" \t\n\r\v\f") == std::string_view::npos; }

std::int64_t unix_nanos(const Lease& lease) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(lease.heartbeat.time_since_epoch()).count();
}

// DESIGN.md: version 1, non-blank ownerID, pid > 0, heartbeat > 0; and a
// staleThresholdNano, when present, is not negative.
bool valid(const Lease& lease) {
  return lease.version == 1 && !blank(lease.owner_id) && lease.pid > 0 && unix_nanos(lease) > 0 &&
         lease.stale_threshold.count() >= 0;
}

// One compact line: '{' ... "}\n", no other line break.
void check_one_line(const std::string& record) {
  require(record.size() >= 3 && record.front() == '{' && record.back() == '\n' &&
              record[record.size() - 2] == '}',
          "format_lease: not a '{...}\\n' line", record);
  require(record.find_first_of("\n\r") == record.size() - 1, "format_lease: a line break inside the record",
          record);
}

// Property 1: the input as a record.
void check_record(std::string_view input) {
  const std::optional<Lease> lease = parse_lease(input);
  if (!lease) return;
  require(input.size() <= max_record_bytes, "parse_lease accepted more than 64 KiB", input);
  require(valid(*lease), "parse_lease accepted an invalid lease", input);
  require(valid_utf8(lease->owner_id) && valid_utf8(lease->host) && valid_utf8(lease->boot_id),
          "parse_lease produced a string that is not UTF-8", input);

  const std::string record = format_lease(*lease);
  check_one_line(record);
  // A record of (nearly) 64 KiB can format to more than 64 KiB (format_lease
  // adds the newline, writes \b and \f as \u0008 and \u000c), which
  // parse_lease rejects by design; only the bound itself is checked then.
  if (record.size() > max_record_bytes) {
    require(!parse_lease(record), "parse_lease accepted more than 64 KiB", record);
    return;
  }
  const std::optional<Lease> again = parse_lease(record);
  require(again.has_value(), "format_lease wrote a record parse_lease rejects", record);
  require(*again == *lease, "parse(format(parse(x))) != parse(x)", record);
  require(format_lease(*again) == record, "format(parse(format(x))) != format(x)", record);
}

// Property 2: a Lease built from the input.
void check_lease(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  Lease lease;
  // Mostly the valid value, sometimes any: both paths get exercised.
  lease.version = in.ConsumeBool() ? in.ConsumeIntegral<int>() : 1;
  lease.pid = in.ConsumeBool() ? in.ConsumeIntegral<int>() : in.ConsumeIntegralInRange<int>(1, INT_MAX);
  const auto nanos = in.ConsumeBool() ? in.ConsumeIntegral<std::int64_t>()
                                      : in.ConsumeIntegralInRange<std::int64_t>(1, INT64_MAX);
  lease.heartbeat = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(nanos)));
  lease.pid_namespace = in.ConsumeIntegral<std::uint64_t>();
  lease.start_time = in.ConsumeIntegral<std::uint64_t>();
  lease.stale_threshold = std::chrono::nanoseconds(
      in.ConsumeBool() ? in.ConsumeIntegral<std::int64_t>() : in.ConsumeIntegralInRange<std::int64_t>(0, INT64_MAX));
  lease.owner_id = in.ConsumeRandomLengthString(size);
  lease.host = in.ConsumeRandomLengthString(size);
  lease.boot_id = in.ConsumeRemainingBytesAsString();

  const std::string record = format_lease(lease);
  check_one_line(record);
  const std::optional<Lease> parsed = parse_lease(record);
  if (!valid(lease) || record.size() > max_record_bytes) {
    require(!parsed, "parse_lease accepted the record of an invalid or oversized lease", record);
    return;
  }
  require(parsed.has_value(), "parse_lease rejected the record of a valid lease", record);
  Lease expected = lease;
  expected.owner_id = with_replacement_characters(lease.owner_id);
  expected.host = with_replacement_characters(lease.host);
  expected.boot_id = with_replacement_characters(lease.boot_id);
  require(*parsed == expected, "parse(format(lease)) != lease (after U+FFFD replacement)", record);
  // A byte that is not UTF-8 is written as the escape \ufffd and read back as
  // U+FFFD itself, which is then written raw: the bytes are the same from the
  // second round on, and from the first when every string was UTF-8.
  const std::string again = format_lease(*parsed);
  if (expected == lease) require(again == record, "format(parse(format(lease))) != format(lease)", record);
  require(parse_lease(again) == parsed, "parse(format(parse(format(lease)))) != parse(format(lease))", again);
  require(format_lease(*parse_lease(again)) == again, "format(parse(y)) != y for y = format(parse(format(lease)))",
          again);
}

}  // namespace

void check_classification(std::string_view bytes) {
  using lockfile::detail::classify_lock_bytes;
  using lockfile::detail::lock_bytes;
  const auto kind = classify_lock_bytes(bytes);
  if ((kind == lock_bytes::valid) != parse_lease(bytes).has_value()) fail("classification disagrees with parse_lease", bytes);
  if (kind != lock_bytes::valid) return;
  // What our writer (and the Go package's, which also starts with
  // "version") makes of it, cut anywhere by a crash.
  const auto written = lockfile::format_lease(*parse_lease(bytes));
  for (std::size_t cut = 0; cut < written.size(); ++cut)
    if (classify_lock_bytes(std::string_view(written).substr(0, cut)) == lock_bytes::foreign)
      fail("a prefix of a written record is called foreign", std::string_view(written).substr(0, cut));
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): libFuzzer hands out bytes
  check_record(std::string_view(reinterpret_cast<const char*>(data), size));
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): as above
  check_classification(std::string_view(reinterpret_cast<const char*>(data), size));
  check_lease(data, size);
  return 0;
}
