// libFuzzer target for the restricted unpickler of PyTorch checkpoints: moepp::io::unpickle_state_dict
// on arbitrary bytes (the input is data.pkl). A moepp::Error is the expected outcome for bad input; any
// other exception, crash, sanitizer report, or an accepted tensor whose view does not fit its storage
// is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "io/unpickler.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto tensors = moepp::io::unpickle_state_dict(data, size, "fuzz-input");
    // Invariants of an accepted state_dict: every view inside its storage, no more elements than it.
    for (const auto& [name, t] : tensors) {
      if (t.shape.size() != t.stride.size() || t.storage_offset < 0 || t.storage_numel < 0) std::abort();
      uint64_t numel = 1, last = static_cast<uint64_t>(t.storage_offset);
      for (size_t d = 0; d < t.shape.size(); ++d) {
        if (t.shape[d] < 0 || t.stride[d] < 0) std::abort();
        numel *= static_cast<uint64_t>(t.shape[d]);
      }
      for (size_t d = 0; d < t.shape.size() && numel > 0; ++d)
        last += static_cast<uint64_t>(t.shape[d] - 1) * static_cast<uint64_t>(t.stride[d]);
      if (numel > static_cast<uint64_t>(t.storage_numel)) std::abort();
      if (numel > 0 && last >= static_cast<uint64_t>(t.storage_numel)) std::abort();
    }
  } catch (const moepp::Error&) {
    // Rejected input: fine.
  }
  return 0;
}
