// libFuzzer target for the safetensors header parser: moepp::io::parse_header on arbitrary bytes (the
// whole input is the "file"). A moepp::Error is the expected outcome for bad input; any other exception,
// crash, sanitizer report, or an accepted header whose tensors lie outside the input is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const moepp::io::Header h = moepp::io::parse_header(data, size, size, "fuzz-input");
    // Invariants of an accepted header: data start inside the input, every tensor inside the data
    // buffer with size = numel * dtype size.
    if (h.data_start < 8 || h.data_start > size) std::abort();
    const uint64_t data_size = size - h.data_start;
    for (const auto& [name, info] : h.tensors) {
      if (info.begin > info.end || info.end > data_size) std::abort();
      uint64_t n = moepp::io::dtype_size(info.dtype);
      for (int64_t d : info.shape) {
        if (d < 0) std::abort();
        n *= static_cast<uint64_t>(d);
      }
      if (info.end - info.begin != n) std::abort();
      // Touch the bytes: ASan reports any read outside the input.
      volatile uint8_t sink = 0;
      for (uint64_t i = info.begin; i < info.end; ++i) sink = sink ^ data[h.data_start + i];
      (void)sink;
    }
  } catch (const moepp::Error&) {
    // Rejected input: fine.
  }
  return 0;
}
