// libFuzzer target for the tokenizer model load: the input is the bytes of a SentencePiece .model
// file, written to a temporary file and loaded with moepp::Tokenizer::load (the path the engine
// takes); an accepted model then encodes and decodes a short text. A moepp::Error is the expected
// outcome for bad input; any other exception, crash or sanitizer report is a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace {

// One temporary file per process, rewritten for every input.
const std::string& model_path() {
  static const std::string p =
      (std::filesystem::temp_directory_path() / ("moepp_tokenizer_fuzz_" + std::to_string(::getpid()) + ".model"))
          .string();
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = model_path();
  {
    // Plainly written (write_file_atomic's fsync per input would dominate the run).
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(data, 1, size, f) != size || std::fclose(f) != 0) std::abort();
  }
  try {
    moepp::Tokenizer t(path);
    const int32_t n = t.vocab_size();
    if (n <= 0) std::abort();
    const std::vector<int32_t> ids = t.encode("Hello, world! 123");
    for (int32_t id : ids)
      if (id < 0 || id >= n) std::abort();
    (void)t.decode(ids);
  } catch (const moepp::Error&) {
    // Rejected input: fine.
  }
  std::remove(path.c_str());
  return 0;
}
