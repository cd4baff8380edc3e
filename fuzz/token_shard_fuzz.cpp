// libFuzzer target for token-shard headers: moepp::data::parse_shard_header on arbitrary bytes (the
// whole input is the shard file). A moepp::Error is the expected outcome for bad input; any other
// exception, crash, sanitizer report, or an accepted header whose tokens do not fill the file exactly
// is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "data/token_shards.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moepp::data;
  try {
    const ShardInfo s = parse_shard_header(data, size, size, "fuzz-input");
    if (s.vocab_size == 0 || s.token_bytes != shard_token_bytes(s.vocab_size)) std::abort();
    if (s.n_tokens * s.token_bytes != size - kShardHeaderBytes) std::abort();
  } catch (const moepp::Error&) {
    // Rejected input: fine.
  }
  return 0;
}
