// The process-wide streaming prefetch setting (see stream_prefetch.h).
#include "core/stream_prefetch.h"

#include <atomic>

#include "core/error.h"

namespace moepp {
namespace {

// bytes in the high bits, the level in bit 0: one word, so a reader never sees half a change.
std::atomic<int64_t>& setting() {
  static std::atomic<int64_t> s{kDefaultStreamPrefetch.bytes * 2 + (kDefaultStreamPrefetch.level == PrefetchLevel::kL2)};
  return s;
}

void check_distance(int64_t bytes, const std::string& what) {
  check(bytes >= 64 && bytes <= 65536 && bytes % 64 == 0,
        what + ": the distance must be a multiple of 64 in [64, 65536], not " + std::to_string(bytes));
}

}  // namespace

StreamPrefetch stream_prefetch() {
  const int64_t v = setting().load(std::memory_order_relaxed);
  return {v / 2, (v & 1) ? PrefetchLevel::kL2 : PrefetchLevel::kL1};
}

void set_stream_prefetch(StreamPrefetch p) {
  check_distance(p.bytes, "stream prefetch");
  setting().store(p.bytes * 2 + (p.level == PrefetchLevel::kL2), std::memory_order_relaxed);
}

std::string stream_prefetch_name(StreamPrefetch p) {
  return std::string(p.level == PrefetchLevel::kL1 ? "l1_" : "l2_") + std::to_string(p.bytes);
}

StreamPrefetch parse_stream_prefetch(const std::string& s) {
  const std::string bad = "stream prefetch '" + s + "': expected l1_BYTES or l2_BYTES (e.g. l2_8192)";
  check(s.size() > 3 && (s.compare(0, 3, "l1_") == 0 || s.compare(0, 3, "l2_") == 0), bad);
  const std::string digits = s.substr(3);
  check(digits.size() <= 6 && digits.find_first_not_of("0123456789") == std::string::npos, bad);
  const StreamPrefetch p{std::stoll(digits), s[1] == '1' ? PrefetchLevel::kL1 : PrefetchLevel::kL2};
  check_distance(p.bytes, "stream prefetch '" + s + "'");
  return p;
}

}  // namespace moepp
