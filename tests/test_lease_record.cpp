// Unit tests of the lease record: format_lease() and the strict, bounded
// parse_lease() (DESIGN.md "The lease record" and "Clarifications").
#include "lockfile_catch.hpp"

#include <lockfile/lockfile.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using lockfile::format_lease;
using lockfile::Lease;
using lockfile::parse_lease;

constexpr std::size_t k64KiB = 64 * 1024;

std::chrono::system_clock::time_point at_unix_nanos(std::int64_t nanos) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(nanos)));
}

// A lease with every field set. The heartbeat is a whole number of
// microseconds so that it survives a system_clock coarser than nanoseconds.
Lease full_lease() {
  Lease lease;
  lease.version = 1;
  lease.owner_id = "4242-1764230000123456000-1-9f3a";
  lease.pid = 4242;
  lease.heartbeat = at_unix_nanos(1764230000123456000);
  lease.host = "build-7";
  lease.boot_id = "8e6d6db7-0000-4000-8000-000000000000";
  lease.pid_namespace = 4026531836u;
  lease.start_time = 123456;
  lease.stale_threshold = 3s;
  return lease;
}

// The fields of a minimal valid record, as raw JSON, in the Go package's order.
using field_list = std::vector<std::pair<std::string, std::string>>;

field_list go_fields() {
  return {{"version", "1"},
          {"ownerID", "\"abc\""},
          {"pid", "42"},
          {"lastHeartbeatUnixNano", "1700000000000000000"}};
}

std::string object_of(const field_list& fields) {
  std::string out = "{";
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i != 0) out += ",";
    out += "\"" + fields[i].first + "\":" + fields[i].second;
  }
  return out + "}";
}

// A Go-style record with one field's raw value replaced (or appended when the
// key is not among the four).
std::string record_with(const std::string& key, const std::string& raw_value) {
  auto fields = go_fields();
  bool replaced = false;
  for (auto& field : fields)
    if (field.first == key) {
      field.second = raw_value;
      replaced = true;
    }
  if (!replaced) fields.emplace_back(key, raw_value);
  return object_of(fields);
}

std::string record_without(const std::string& key) {
  auto fields = go_fields();
  field_list kept;
  for (auto& field : fields)
    if (field.first != key) kept.push_back(field);
  return object_of(kept);
}

// A record with an extra unknown key placed first, in the middle and last.
std::vector<std::string> with_unknown(const std::string& raw_value) {
  std::vector<std::string> out;
  const auto base = go_fields();
  for (std::size_t position : {std::size_t{0}, std::size_t{2}, base.size()}) {
    auto fields = base;
    fields.insert(fields.begin() + static_cast<std::ptrdiff_t>(position), {"unknownKey", raw_value});
    out.push_back(object_of(fields));
  }
  return out;
}

const std::string& valid_go_record() {
  static const std::string record = object_of(go_fields());
  return record;
}

void check_invalid(std::string_view bytes) {
  INFO("input (" << bytes.size() << " bytes): " << std::string(bytes.substr(0, 200)));
  CHECK_FALSE(parse_lease(bytes).has_value());
}

void check_invalid_all(std::initializer_list<std::string> inputs) {
  for (const auto& input : inputs) check_invalid(input);
}

}  // namespace

// ---------------------------------------------------------------------------
// format_lease
// ---------------------------------------------------------------------------

TEST_CASE("format_lease: output matches the golden record of DESIGN.md, byte for byte") {
  const std::string golden =
      "{\"version\":1,\"ownerID\":\"4242-1764230000123456000-1-9f3a\",\"pid\":4242,"
      "\"lastHeartbeatUnixNano\":1764230000123456000,\"host\":\"build-7\","
      "\"bootID\":\"8e6d6db7-0000-4000-8000-000000000000\",\"pidNamespace\":4026531836,"
      "\"startTime\":123456,\"staleThresholdNano\":3000000000}\n";
  CHECK(format_lease(full_lease()) == golden);
}

TEST_CASE("format_lease: one compact line, newline-terminated, keys in DESIGN.md's order") {
  const std::string text = format_lease(full_lease());
  REQUIRE_FALSE(text.empty());
  CHECK(text.back() == '\n');
  CHECK(text.find('\n') == text.size() - 1);
  CHECK(text.front() == '{');
  CHECK(text[text.size() - 2] == '}');
  CHECK(text.find(' ') == std::string::npos);
  CHECK(text.find('\t') == std::string::npos);
  CHECK(text.find('\r') == std::string::npos);

  const char* keys[] = {"\"version\":",     "\"ownerID\":", "\"pid\":",
                        "\"lastHeartbeatUnixNano\":", "\"host\":", "\"bootID\":",
                        "\"pidNamespace\":", "\"startTime\":", "\"staleThresholdNano\":"};
  std::size_t previous = 0;
  for (const char* key : keys) {
    INFO("key " << key);
    const auto at = text.find(key);
    REQUIRE(at != std::string::npos);
    CHECK(at >= previous);
    previous = at;
  }
}

TEST_CASE("format_lease then parse_lease gives back every field") {
  const Lease lease = full_lease();
  const auto parsed = parse_lease(format_lease(lease));
  REQUIRE(parsed.has_value());
  CHECK(parsed->version == 1);
  CHECK(parsed->owner_id == lease.owner_id);
  CHECK(parsed->pid == lease.pid);
  CHECK(parsed->heartbeat == lease.heartbeat);
  CHECK(parsed->host == lease.host);
  CHECK(parsed->boot_id == lease.boot_id);
  CHECK(parsed->pid_namespace == lease.pid_namespace);
  CHECK(parsed->start_time == lease.start_time);
  CHECK(parsed->stale_threshold == lease.stale_threshold);
  CHECK(*parsed == lease);
}

TEST_CASE("format_lease: large field values round-trip (uint64 maximum, INT_MAX pid, int64 heartbeat)") {
  Lease lease = full_lease();
  lease.pid = 2147483647;
  lease.pid_namespace = UINT64_MAX;
  lease.start_time = UINT64_MAX;
  lease.stale_threshold = std::chrono::nanoseconds(INT64_MAX);
  lease.heartbeat = at_unix_nanos(9'000'000'000'000'000'000);
  const auto parsed = parse_lease(format_lease(lease));
  REQUIRE(parsed.has_value());
  CHECK(*parsed == lease);
}

TEST_CASE("format_lease: empty or zero identity fields are left out, as the Go package writes records") {
  Lease lease;
  lease.owner_id = "owner";
  lease.pid = 7;
  lease.heartbeat = at_unix_nanos(1700000000000000000);
  const std::string text = format_lease(lease);
  CHECK(text ==
        "{\"version\":1,\"ownerID\":\"owner\",\"pid\":7,"
        "\"lastHeartbeatUnixNano\":1700000000000000000}\n");
  for (const char* key : {"host", "bootID", "pidNamespace", "startTime", "staleThresholdNano"}) {
    INFO("key " << key);
    CHECK(text.find(key) == std::string::npos);
  }
  const auto parsed = parse_lease(text);
  REQUIRE(parsed.has_value());
  CHECK(parsed->host.empty());
  CHECK(parsed->boot_id.empty());
  CHECK(parsed->pid_namespace == 0);
  CHECK(parsed->start_time == 0);
  CHECK(parsed->stale_threshold == 0ns);
  CHECK(*parsed == lease);
}

TEST_CASE("format_lease: each identity field alone is written and read back") {
  for (int which = 0; which < 5; ++which) {
    INFO("identity field #" << which);
    Lease lease;
    lease.owner_id = "owner";
    lease.pid = 7;
    lease.heartbeat = at_unix_nanos(1700000000000000000);
    if (which == 0) lease.host = "h";
    if (which == 1) lease.boot_id = "b";
    if (which == 2) lease.pid_namespace = 1;
    if (which == 3) lease.start_time = 1;
    if (which == 4) lease.stale_threshold = 1ns;
    const auto parsed = parse_lease(format_lease(lease));
    REQUIRE(parsed.has_value());
    CHECK(*parsed == lease);
  }
}

TEST_CASE("format_lease: strings needing escapes round-trip and the line stays one line") {
  const std::vector<std::string> samples = {
      "quote\"inside",
      "back\\slash",
      "both \\\" at once",
      "new\nline",
      "carriage\rreturn",
      "tab\there",
      "bell\x07" "and\x01" "and\x1f",
      "backspace\b formfeed\f",
      std::string("nul\0byte", 8),
      "del\x7f",
      "slash/ok",
      "caf\xc3\xa9",                       // é, 2 bytes
      "\xe2\x82\xac" "100",                // €, 3 bytes
      "smile \xf0\x9f\x98\x80",            // U+1F600, 4 bytes
      "\xef\xbf\xbf" "\xf4\x8f\xbf\xbf",   // U+FFFF, U+10FFFF
      "\xed\x9f\xbf",                      // U+D7FF, just below the surrogates
      "{\"version\":2}",                   // JSON inside a string
  };
  for (const auto& text : samples) {
    INFO("string: " << text);
    Lease lease = full_lease();
    lease.owner_id = "id-" + text;
    lease.host = text;
    lease.boot_id = text + "-boot";
    const std::string line = format_lease(lease);
    // No raw control character may appear: the record is one line.
    for (std::size_t i = 0; i + 1 < line.size(); ++i) {
      INFO("byte " << i);
      CHECK(static_cast<unsigned char>(line[i]) >= 0x20);
    }
    CHECK(line.back() == '\n');
    const auto parsed = parse_lease(line);
    REQUIRE(parsed.has_value());
    CHECK(parsed->owner_id == lease.owner_id);
    CHECK(parsed->host == lease.host);
    CHECK(parsed->boot_id == lease.boot_id);
    CHECK(*parsed == lease);
  }
}

// ---------------------------------------------------------------------------
// parse_lease: what is accepted
// ---------------------------------------------------------------------------

static_assert(noexcept(parse_lease(std::string_view{})), "parse_lease must be noexcept");

TEST_CASE("parse_lease: a Go-written record without identity fields is valid") {
  const auto parsed = parse_lease(valid_go_record());
  REQUIRE(parsed.has_value());
  CHECK(parsed->version == 1);
  CHECK(parsed->owner_id == "abc");
  CHECK(parsed->pid == 42);
  CHECK(parsed->heartbeat == at_unix_nanos(1700000000000000000));
  CHECK(parsed->host.empty());
  CHECK(parsed->boot_id.empty());
  CHECK(parsed->pid_namespace == 0);
  CHECK(parsed->start_time == 0);
  CHECK(parsed->stale_threshold == 0ns);
  // With the Go writer's trailing newline too.
  CHECK(parse_lease(valid_go_record() + "\n") == parsed);
}

TEST_CASE("parse_lease: the heartbeat keeps nanosecond precision where the clock has it") {
  const auto parsed = parse_lease(record_with("lastHeartbeatUnixNano", "1764230000123456789"));
  REQUIRE(parsed.has_value());
  CHECK(parsed->heartbeat == at_unix_nanos(1764230000123456789));
  if constexpr (std::ratio_less_equal_v<std::chrono::system_clock::period, std::nano>) {
    CHECK(std::chrono::duration_cast<std::chrono::nanoseconds>(parsed->heartbeat.time_since_epoch())
              .count() == 1764230000123456789);
  }
}

TEST_CASE("parse_lease: keys in any order are accepted") {
  auto fields = go_fields();
  fields.emplace_back("host", "\"h\"");
  fields.emplace_back("staleThresholdNano", "5");
  const auto forward = parse_lease(object_of(fields));
  REQUIRE(forward.has_value());
  field_list reversed(fields.rbegin(), fields.rend());
  const auto backward = parse_lease(object_of(reversed));
  REQUIRE(backward.has_value());
  CHECK(*forward == *backward);
  CHECK(backward->host == "h");
  CHECK(backward->stale_threshold == 5ns);
}

TEST_CASE("parse_lease: a record written by an older or newer writer with extra keys of every JSON type is valid") {
  const std::vector<std::string> values = {
      "\"text\"", "\"\"", "\"esc \\\" \\\\ \\n \\u00e9 \\ud83d\\ude00\"",
      "0", "-0", "7", "-1", "123456789012345678901234567890", "0.5", "-0.25", "1e10", "1E-3",
      "2.5e+7", "-1.5E-7",
      "true", "false", "null",
      "{}", "[]", "{ }", "[ ]",
      "{\"a\":1,\"b\":[1,2,{\"c\":null}],\"d\":{\"e\":\"f\"}}",
      "[1,\"a\",null,true,false,[],{},[[]],{\"x\":[]}]",
      // Known key names inside an unknown value are not fields of the record.
      "{\"version\":2,\"pid\":-1,\"ownerID\":\"\"}",
      "[\"version\",0]",
  };
  for (const auto& value : values)
    for (const auto& record : with_unknown(value)) {
      INFO("record: " << record);
      const auto parsed = parse_lease(record);
      REQUIRE(parsed.has_value());
      CHECK(parsed->owner_id == "abc");
      CHECK(parsed->pid == 42);
    }
}

TEST_CASE("parse_lease: several unknown keys, and an empty key, are skipped") {
  const std::string record =
      "{\"a\":1,\"\":\"empty key\",\"version\":1,\"b\":[],\"ownerID\":\"abc\",\"c\":{},"
      "\"pid\":42,\"d\":null,\"lastHeartbeatUnixNano\":1700000000000000000,\"e\":false}";
  const auto parsed = parse_lease(record);
  REQUIRE(parsed.has_value());
  CHECK(parsed->pid == 42);
}

TEST_CASE("parse_lease: JSON whitespace around every token is allowed") {
  const std::string record =
      " \t\r\n{ \"version\" : 1 ,\n\t\"ownerID\"\r\n:\t\"abc\" , \"pid\":\n42,"
      "\"unknown\" : [ 1 , { \"k\" : \"v\" } , [ ] ] ,"
      " \"lastHeartbeatUnixNano\" : 1700000000000000000 \n} \n\r\t ";
  const auto parsed = parse_lease(record);
  REQUIRE(parsed.has_value());
  CHECK(parsed->owner_id == "abc");
  CHECK(parse_lease(valid_go_record() + "\n\n   \t\r\n").has_value());
}

TEST_CASE("parse_lease: u-escapes decode to UTF-8, and an escaped slash decodes to a slash") {
  struct sample {
    const char* escaped;
    std::string decoded;
  };
  const sample samples[] = {
      {"\\u0041", "A"},
      {"\\u00e9", "\xc3\xa9"},
      {"\\u00E9", "\xc3\xa9"},
      {"\\u07ff", "\xdf\xbf"},
      {"\\u0800", "\xe0\xa0\x80"},
      {"\\u20ac", "\xe2\x82\xac"},
      {"\\uFFFF", "\xef\xbf\xbf"},
      {"\\ud83d\\ude00", "\xf0\x9f\x98\x80"},
      {"\\uD800\\uDC00", "\xf0\x90\x80\x80"},
      {"\\udbff\\udfff", "\xf4\x8f\xbf\xbf"},
      {"\\u0000", std::string(1, '\0')},
      {"a\\/b", "a/b"},
      {"\\\"\\\\\\b\\f\\n\\r\\t", "\"\\\b\f\n\r\t"},
  };
  for (const auto& s : samples) {
    INFO("escaped: " << s.escaped);
    const auto parsed = parse_lease(record_with("ownerID", std::string("\"x") + s.escaped + "\""));
    REQUIRE(parsed.has_value());
    CHECK(parsed->owner_id == "x" + s.decoded);
  }
}

TEST_CASE("parse_lease: escapes in key names are decoded before matching") {
  // "\u0070id" is "pid": a JSON reader must see it as the pid key.
  const auto parsed = parse_lease(object_of({{"version", "1"},
                                             {"ownerID", "\"abc\""},
                                             {"\\u0070id", "42"},
                                             {"lastHeartbeatUnixNano", "1"}}));
  REQUIRE(parsed.has_value());
  CHECK(parsed->pid == 42);
  // And so a duplicate spelled differently is still a duplicate.
  check_invalid(object_of({{"version", "1"},
                           {"ownerID", "\"abc\""},
                           {"pid", "42"},
                           {"\\u0070id", "43"},
                           {"lastHeartbeatUnixNano", "1"}}));
}

TEST_CASE("parse_lease: well-formed non-ASCII UTF-8 in strings is kept as is") {
  const std::vector<std::string> texts = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                          "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf",
                                          "\xee\x80\x80", "\xc2\x80"};
  for (const auto& text : texts) {
    INFO("text bytes: " << text.size());
    const auto parsed = parse_lease(record_with("host", "\"" + text + "\""));
    REQUIRE(parsed.has_value());
    CHECK(parsed->host == text);
    // Also inside an unknown value and in an unknown key.
    CHECK(parse_lease(record_with("x", "[\"" + text + "\"]")).has_value());
    CHECK(parse_lease(record_with(text, "1")).has_value());
  }
}

TEST_CASE("parse_lease: boundary values of the numeric fields are valid") {
  {
    const auto parsed = parse_lease(record_with("pid", "2147483647"));
    REQUIRE(parsed.has_value());
    CHECK(parsed->pid == 2147483647);
  }
  {
    const auto parsed = parse_lease(record_with("pid", "1"));
    REQUIRE(parsed.has_value());
    CHECK(parsed->pid == 1);
  }
  {
    const auto parsed = parse_lease(record_with("lastHeartbeatUnixNano", "1"));
    REQUIRE(parsed.has_value());
    CHECK(parsed->heartbeat == at_unix_nanos(1));
  }
  {
    const auto parsed = parse_lease(record_with("lastHeartbeatUnixNano", "9223372036854775807"));
    REQUIRE(parsed.has_value());
    CHECK(parsed->heartbeat == at_unix_nanos(INT64_MAX));
  }
  {
    const auto parsed = parse_lease(record_with("pidNamespace", "18446744073709551615"));
    REQUIRE(parsed.has_value());
    CHECK(parsed->pid_namespace == UINT64_MAX);
  }
  {
    const auto parsed = parse_lease(record_with("startTime", "0"));
    REQUIRE(parsed.has_value());
    CHECK(parsed->start_time == 0);
  }
  {
    const auto parsed = parse_lease(record_with("staleThresholdNano", "0"));
    REQUIRE(parsed.has_value());
    CHECK(parsed->stale_threshold == 0ns);
  }
  {
    const auto parsed = parse_lease(record_with("ownerID", "\" padded \""));
    REQUIRE(parsed.has_value());
    CHECK(parsed->owner_id == " padded ");  // non-blank: kept exactly
  }
}

TEST_CASE("parse_lease: nesting within the bound inside an unknown key is valid") {
  for (int depth : {1, 2, 8, 16}) {
    INFO("depth " << depth);
    const std::string arrays = std::string(static_cast<std::size_t>(depth), '[') +
                               std::string(static_cast<std::size_t>(depth), ']');
    CHECK(parse_lease(record_with("deep", arrays)).has_value());
    std::string objects;
    for (int i = 0; i < depth; ++i) objects += "{\"k\":";
    objects += "1";
    for (int i = 0; i < depth; ++i) objects += "}";
    CHECK(parse_lease(record_with("deep", objects)).has_value());
  }
}

// ---------------------------------------------------------------------------
// parse_lease: what is rejected
// ---------------------------------------------------------------------------

TEST_CASE("parse_lease: empty, blank and non-object inputs are invalid") {
  check_invalid_all({"", " ", "\n", " \t\r\n ", "{}", "{ }", "[]", "null", "true", "false", "42",
                     "-1", "\"text\"", "[" + valid_go_record() + "]",
                     "\"" + valid_go_record() + "\"", "{", "}", "{{}}",
                     // Not JSON whitespace, and no byte-order mark.
                     "\v" + valid_go_record(), "\f" + valid_go_record(),
                     "\xef\xbb\xbf" + valid_go_record(), std::string(1, '\0') + valid_go_record()});
}

TEST_CASE("parse_lease: a record truncated at any length (a torn write) is invalid") {
  // Strings with escapes and multi-byte UTF-8 give the cut many kinds of places.
  Lease lease = full_lease();
  lease.owner_id = "own\"er\\ \xc3\xa9 \xf0\x9f\x98\x80 \x01";
  lease.host = "h\xe2\x82\xac";
  const std::string full = format_lease(lease);
  REQUIRE(parse_lease(full).has_value());
  const std::string record = full.substr(0, full.size() - 1);  // without the newline
  REQUIRE(parse_lease(record).has_value());
  REQUIRE(record.back() == '}');
  for (std::size_t length = 0; length < record.size(); ++length) {
    INFO("prefix length " << length << " of " << record.size() << ": " << record.substr(0, length));
    CHECK_FALSE(parse_lease(std::string_view(record).substr(0, length)).has_value());
  }
  // The same for a Go-written record.
  const std::string& go = valid_go_record();
  for (std::size_t length = 0; length < go.size(); ++length) {
    INFO("prefix length " << length << ": " << go.substr(0, length));
    CHECK_FALSE(parse_lease(std::string_view(go).substr(0, length)).has_value());
  }
}

TEST_CASE("parse_lease: bytes after the object are invalid (strict JSON)") {
  const std::string& r = valid_go_record();
  check_invalid_all({r + "x", r + "}", r + "{}", r + r, r + "\n" + r, r + ",", r + "\n0",
                     r + std::string(1, '\0'), r + "\n" + std::string(1, '\0'), r + " null",
                     r + "\v", r + "\xc3\xa9"});
}

TEST_CASE("parse_lease: structural JSON errors are invalid") {
  check_invalid_all({
      // trailing, leading and doubled commas
      "{\"version\":1,\"ownerID\":\"abc\",\"pid\":42,\"lastHeartbeatUnixNano\":1,}",
      "{,\"version\":1,\"ownerID\":\"abc\",\"pid\":42,\"lastHeartbeatUnixNano\":1}",
      "{\"version\":1,,\"ownerID\":\"abc\",\"pid\":42,\"lastHeartbeatUnixNano\":1}",
      // missing comma, missing colon, doubled colon, missing value
      "{\"version\":1 \"ownerID\":\"abc\",\"pid\":42,\"lastHeartbeatUnixNano\":1}",
      "{\"version\" 1,\"ownerID\":\"abc\",\"pid\":42,\"lastHeartbeatUnixNano\":1}",
      "{\"version\"::1,\"ownerID\":\"abc\",\"pid\":42,\"lastHeartbeatUnixNano\":1}",
      "{\"version\":,\"ownerID\":\"abc\",\"pid\":42,\"lastHeartbeatUnixNano\":1}",
      "{\"x\",\"version\":1,\"ownerID\":\"abc\",\"pid\":42,\"lastHeartbeatUnixNano\":1}",
      // single quotes, unquoted keys, unquoted string values
      "{'version':1,'ownerID':'abc','pid':42,'lastHeartbeatUnixNano':1}",
      "{\"version\":1,\"ownerID\":'abc',\"pid\":42,\"lastHeartbeatUnixNano\":1}",
      "{version:1,ownerID:\"abc\",pid:42,lastHeartbeatUnixNano:1}",
      "{\"version\":1,\"ownerID\":abc,\"pid\":42,\"lastHeartbeatUnixNano\":1}",
      // a non-string key
      "{1:2,\"version\":1,\"ownerID\":\"abc\",\"pid\":42,\"lastHeartbeatUnixNano\":1}",
      // a comment
      "{/*c*/\"version\":1,\"ownerID\":\"abc\",\"pid\":42,\"lastHeartbeatUnixNano\":1}",
      // an unterminated key string
      "{\"version:1,\"ownerID\":\"abc\",\"pid\":42,\"lastHeartbeatUnixNano\":1}",
  });
  REQUIRE(parse_lease("{\"version\":1,\"ownerID\":\"abc\",\"pid\":42,\"lastHeartbeatUnixNano\":1}")
              .has_value());
}

TEST_CASE("parse_lease: malformed unknown values are invalid, not skipped") {
  const std::vector<std::string> values = {
      "", "01", "-", "-01", "1.", ".5", "+1", "1e", "1e+", "1.e5", "0x10", "--1", "1.5.5",
      "NaN", "Infinity", "-Infinity", "tru", "nul", "fals", "True", "NULL", "undefined",
      "[1,]", "[,1]", "[1 2]", "[", "]", "{\"a\":1,}", "{\"a\"}", "{\"a\":}", "{1:2}", "{'a':1}",
      "{\"a\" 1}", "[1}", "{\"a\":1]", "'x'", "\"unterminated", "\"bad \\x escape\"",
      "\"\\ud800\"", std::string("\"raw \x01 control\""), "\"\xff\"",
  };
  for (const auto& value : values)
    for (const auto& record : with_unknown(value)) check_invalid(record);
}

TEST_CASE("parse_lease: version must be the integer 1") {
  check_invalid(record_without("version"));
  for (const char* raw : {"0", "2", "-1", "\"1\"", "1.0", "1e0", "01", "true", "null", "[1]",
                          "{}", "10", "4294967297"}) {
    INFO("version: " << raw);
    check_invalid(record_with("version", raw));
  }
}

TEST_CASE("parse_lease: ownerID must be a non-blank string") {
  check_invalid(record_without("ownerID"));
  for (const char* raw : {"\"\"", "\"   \"", "\" \\t \\n \"", "\"\\u0020\"", "\"\\r\"", "42",
                          "null", "true", "[\"abc\"]", "{}"}) {
    INFO("ownerID: " << raw);
    check_invalid(record_with("ownerID", raw));
  }
}

TEST_CASE("parse_lease: pid must be a positive integer that fits in int") {
  check_invalid(record_without("pid"));
  for (const char* raw : {"0", "-0", "-1", "-2147483648", "2147483648", "4294967338",
                          "9223372036854775808", "\"42\"", "1.5", "42.0", "1e3", "012", "00",
                          "true", "null", "[42]"}) {
    INFO("pid: " << raw);
    check_invalid(record_with("pid", raw));
  }
}

TEST_CASE("parse_lease: lastHeartbeatUnixNano must be a positive int64") {
  check_invalid(record_without("lastHeartbeatUnixNano"));
  for (const char* raw : {"0", "-0", "-1", "-1700000000000000000", "9223372036854775808",
                          "18446744073709551616", "99999999999999999999999", "1.7e18",
                          "1700000000000000000.0", "\"1700000000000000000\"", "0123", "null",
                          "false"}) {
    INFO("lastHeartbeatUnixNano: " << raw);
    check_invalid(record_with("lastHeartbeatUnixNano", raw));
  }
}

TEST_CASE("parse_lease: an identity field of the wrong type or out of range is invalid") {
  const std::pair<const char*, const char*> cases[] = {
      {"host", "1"},
      {"host", "null"},
      {"host", "true"},
      {"host", "[\"h\"]"},
      {"bootID", "null"},
      {"bootID", "{}"},
      {"bootID", "7"},
      {"pidNamespace", "\"x\""},
      {"pidNamespace", "-1"},
      {"pidNamespace", "1.5"},
      {"pidNamespace", "1e3"},
      {"pidNamespace", "18446744073709551616"},
      {"pidNamespace", "null"},
      {"pidNamespace", "01"},
      {"startTime", "true"},
      {"startTime", "-1"},
      {"startTime", "\"123\""},
      {"startTime", "2.0"},
      {"staleThresholdNano", "-5"},
      {"staleThresholdNano", "\"5\""},
      {"staleThresholdNano", "1.5"},
      {"staleThresholdNano", "9223372036854775808"},
      {"staleThresholdNano", "null"},
  };
  for (const auto& [key, raw] : cases) {
    INFO(key << ": " << raw);
    check_invalid(record_with(key, raw));
  }
  // Sanity: the same keys with values of the right type are valid.
  for (const auto& [key, raw] :
       {std::pair<const char*, const char*>{"host", "\"h\""}, {"bootID", "\"b\""},
        {"pidNamespace", "1"}, {"startTime", "1"}, {"staleThresholdNano", "5"}}) {
    INFO(key << ": " << raw);
    CHECK(parse_lease(record_with(key, raw)).has_value());
  }
}

TEST_CASE("parse_lease: a known key given twice is invalid, even with the same value") {
  const std::pair<std::string, std::string> known[] = {
      {"version", "1"}, {"ownerID", "\"abc\""}, {"pid", "42"},
      {"lastHeartbeatUnixNano", "1700000000000000000"}, {"host", "\"h\""}, {"bootID", "\"b\""},
      {"pidNamespace", "1"}, {"startTime", "1"}, {"staleThresholdNano", "1"}};
  for (const auto& [key, raw] : known) {
    INFO("key " << key);
    // A record holding the key exactly once is valid...
    auto fields = go_fields();
    bool present = false;
    for (const auto& field : fields) present = present || field.first == key;
    if (!present) fields.emplace_back(key, raw);
    REQUIRE(parse_lease(object_of(fields)).has_value());
    // ...and the same record with it a second time, last or first, is not.
    auto twice_last = fields;
    twice_last.emplace_back(key, raw);
    check_invalid(object_of(twice_last));
    auto twice_first = fields;
    twice_first.insert(twice_first.begin(), {key, raw});
    check_invalid(object_of(twice_first));
  }
}

TEST_CASE("parse_lease: invalid escapes are invalid") {
  const std::vector<std::string> escapes = {
      "\\x41", "\\a", "\\0", "\\'", "\\ ", "\\U00e9", "\\u12", "\\u12\"", "\\u", "\\u12G4",
      "\\uzzzz", "\\ud800", "\\udbff", "\\ud800x", "\\ud800\\u0041", "\\ud800\\ud800",
      "\\ud800\\n", "\\udc00", "\\udfff", "\\udc00\\ud800", "\\ud83d\\u", "\\ud83d\\ude0",
  };
  for (const auto& escape : escapes) {
    INFO("escape: " << escape);
    check_invalid(record_with("ownerID", "\"x" + escape + "y\""));
    check_invalid(record_with("ownerID", "\"x" + escape + "\""));
    check_invalid(record_with("unknown", "\"" + escape + "\""));
  }
  // A backslash as the very last byte.
  check_invalid("{\"version\":1,\"ownerID\":\"abc\\");
}

TEST_CASE("parse_lease: a raw control character inside a string is invalid") {
  for (int c = 0; c < 0x20; ++c) {
    INFO("control byte " << c);
    const std::string ch(1, static_cast<char>(c));
    check_invalid(record_with("ownerID", "\"a" + ch + "b\""));
    check_invalid(record_with("host", "\"" + ch + "\""));
    check_invalid(record_with("unknown", "\"a" + ch + "\""));
    check_invalid(record_with("un" + ch + "known", "1"));
  }
  // DEL (0x7f) is not a control character in JSON.
  CHECK(parse_lease(record_with("ownerID", "\"a\x7f" "b\"")).has_value());
}

TEST_CASE("parse_lease: invalid UTF-8 in any string is invalid") {
  const std::vector<std::string> bad = {
      "\xc0\x80",              // overlong NUL
      "\xc1\xbf",              // overlong 2-byte
      "\xe0\x80\x80",          // overlong 3-byte
      "\xe0\x9f\xbf",          // overlong 3-byte (U+07FF)
      "\xf0\x80\x80\x80",      // overlong 4-byte
      "\xf0\x8f\xbf\xbf",      // overlong 4-byte (U+FFFF)
      "\xed\xa0\x80",          // UTF-16 surrogate U+D800 encoded in UTF-8
      "\xed\xbf\xbf",          // U+DFFF
      "\xf4\x90\x80\x80",      // above U+10FFFF
      "\xf5\x80\x80\x80",      // lead byte F5
      "\xf8\x88\x80\x80\x80",  // 5-byte form
      "\xff", "\xfe", "\x80", "\xbf",  // never valid / lone continuation bytes
      "\xc3",                  // truncated 2-byte (followed by the closing quote)
      "\xe2\x82",              // truncated 3-byte
      "\xf0\x9f\x98",          // truncated 4-byte
      "\xc3" "A",              // continuation byte missing
      "\xe2\x28\xa1",          // bad second byte
      "\xf0\x9f\x98\x28",      // bad fourth byte
  };
  for (const auto& bytes : bad) {
    INFO("bytes: " << bytes.size());
    check_invalid(record_with("ownerID", "\"x" + bytes + "\""));
    check_invalid(record_with("host", "\"" + bytes + "y\""));
    check_invalid(record_with("unknown", "[\"" + bytes + "\"]"));
    check_invalid(record_with("k" + bytes, "1"));
  }
  // A multi-byte sequence cut by the end of the input.
  check_invalid("{\"version\":1,\"ownerID\":\"\xe2\x82");
}

TEST_CASE("parse_lease: nesting deeper than the bound is invalid and does not overflow the stack") {
  for (std::size_t depth : {std::size_t{64}, std::size_t{1000}, std::size_t{10000}, std::size_t{60000}}) {
    INFO("depth " << depth);
    check_invalid(record_with("deep", std::string(depth, '[')));
    check_invalid(record_with("deep", std::string(depth, '[') + std::string(depth, ']')));
    std::string objects;
    for (std::size_t i = 0; i < depth && objects.size() < 60000; ++i) objects += "{\"k\":";
    check_invalid(record_with("deep", objects));
  }
  // Not even as the whole input.
  check_invalid(std::string(k64KiB, '['));
  check_invalid(std::string(k64KiB / 2, '[') + std::string(k64KiB / 2, ']'));
}

TEST_CASE("parse_lease: random binary garbage never crashes and is never a record") {
  std::mt19937 random(20240521u);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> length(0, 300);
  for (int i = 0; i < 20000; ++i) {
    std::string bytes(static_cast<std::size_t>(length(random)), '\0');
    for (auto& b : bytes) b = static_cast<char>(byte(random));
    if (i % 2 == 0 && !bytes.empty()) bytes[0] = '{';  // get past the first check
    INFO("iteration " << i);
    CHECK_FALSE(parse_lease(bytes).has_value());
  }
}

TEST_CASE("parse_lease: mutated records never crash, and whatever parses re-formats to itself") {
  // Fuzz around the valid record: flip, drop, duplicate or insert bytes. Any
  // record that still parses must survive format_lease -> parse_lease intact.
  Lease lease = full_lease();
  lease.owner_id = "o\"\\\xc3\xa9\x01";
  const std::string seed =
      "{\"x\":[1,-2.5e3,true,null,\"\\u00e9\"]," + format_lease(lease).substr(1);
  REQUIRE(parse_lease(seed).has_value());
  const char interesting[] = "{}[]\":,\\u0123456789-+.eEtfn \x01\x7f\x80\xc3\xed\xf0\xff";
  std::mt19937 random(7u);
  int still_valid = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes = seed;
    const int edits = 1 + static_cast<int>(random() % 4);
    for (int e = 0; e < edits && !bytes.empty(); ++e) {
      const std::size_t at = random() % bytes.size();
      const char pick = interesting[random() % (sizeof interesting - 1)];
      switch (random() % 4) {
        case 0: bytes[at] = pick; break;
        case 1: bytes.erase(at, 1); break;
        case 2: bytes.insert(at, 1, pick); break;
        default: bytes.insert(at, bytes.substr(at, random() % 8)); break;
      }
    }
    const auto parsed = parse_lease(bytes);
    if (!parsed) continue;
    ++still_valid;
    INFO("iteration " << i << ": " << bytes);
    const auto again = parse_lease(format_lease(*parsed));
    REQUIRE(again.has_value());
    CHECK(*again == *parsed);
  }
  INFO("mutations that stayed valid: " << still_valid);
  CHECK(still_valid > 0);  // the fuzzer did reach the accepting paths
}

TEST_CASE("parse_lease: input of exactly 64 KiB is read, 64 KiB + 1 is an oversized file") {
  std::string record = format_lease(full_lease());
  REQUIRE(record.size() < k64KiB);
  std::string exact = record + std::string(k64KiB - record.size(), ' ');
  REQUIRE(exact.size() == k64KiB);
  const auto parsed = parse_lease(exact);
  REQUIRE(parsed.has_value());
  CHECK(*parsed == full_lease());

  const std::string over = exact + " ";
  REQUIRE(over.size() == k64KiB + 1);
  check_invalid(over);
  check_invalid(record + std::string(1 << 20, '\n'));
}

TEST_CASE("parse_lease: a record with a huge unknown string beyond 64 KiB is invalid") {
  // Just inside the bound it is valid...
  const std::string prefix = "{\"version\":1,\"ownerID\":\"abc\",\"pid\":42,"
                             "\"lastHeartbeatUnixNano\":1700000000000000000,\"blob\":\"";
  const std::string suffix = "\"}";
  const std::size_t fits = k64KiB - prefix.size() - suffix.size();
  const std::string inside = prefix + std::string(fits, 'a') + suffix;
  REQUIRE(inside.size() == k64KiB);
  CHECK(parse_lease(inside).has_value());
  // ...one byte more, or far more, is not.
  check_invalid(prefix + std::string(fits + 1, 'a') + suffix);
  check_invalid(prefix + std::string(k64KiB * 4, 'a') + suffix);
  // Nor when the blob comes first and the record's fields after it.
  check_invalid("{\"blob\":\"" + std::string(k64KiB, 'a') +
                "\",\"version\":1,\"ownerID\":\"abc\",\"pid\":42,"
                "\"lastHeartbeatUnixNano\":1700000000000000000}");
}

TEST_CASE("fencingToken: written after the other keys only when set and read back") {
  Lease lease = full_lease();
  CHECK(format_lease(lease).find("fencingToken") == std::string::npos);
  lease.fencing_token = 18446744073709551615ULL;
  const auto bytes = format_lease(lease);
  CHECK(bytes.ends_with(",\"fencingToken\":18446744073709551615}\n"));
  const auto parsed = parse_lease(bytes);
  REQUIRE(parsed.has_value());
  CHECK(parsed->fencing_token == lease.fencing_token);
  CHECK(*parsed == lease);
}

TEST_CASE("fencingToken: of the wrong type or given twice the record is invalid") {
  CHECK_FALSE(parse_lease(record_with("fencingToken", "\"7\"")).has_value());
  CHECK_FALSE(parse_lease(record_with("fencingToken", "-1")).has_value());
  CHECK_FALSE(parse_lease(record_with("fencingToken", "1.5")).has_value());
  CHECK_FALSE(parse_lease(record_with("fencingToken", "18446744073709551616")).has_value());
  const auto twice = format_lease(full_lease());
  CHECK_FALSE(parse_lease(twice.substr(0, twice.size() - 2) + ",\"fencingToken\":1,\"fencingToken\":2}\n").has_value());
  const auto parsed = parse_lease(record_with("fencingToken", "7"));
  REQUIRE(parsed.has_value());
  CHECK(parsed->fencing_token == 7);
}
