// libFuzzer target for the zip reader of PyTorch .bin checkpoints: moepp::io::ZipArchive on arbitrary
// bytes (the whole input is the archive). A moepp::Error is the expected outcome for bad input; any
// other exception, crash, sanitizer report, or an accepted entry whose data lies outside the input is
// a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "io/zip_archive.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const moepp::io::ZipArchive zip(data, size, "fuzz-input");
    for (const moepp::io::ZipEntry& e : zip.entries()) {
      if (zip.find(e.name) != &e) std::abort();
      if (e.data_offset > size || e.compressed_size > size - e.data_offset) std::abort();
      try {
        const uint8_t* d = zip.data(e, /*verify_crc=*/true);  // reads every byte of a stored entry
        if (d != data + e.data_offset || e.size != e.compressed_size) std::abort();
      } catch (const moepp::Error&) {
        // Compressed entry or CRC mismatch: fine.
      }
    }
  } catch (const moepp::Error&) {
    // Rejected input: fine.
  }
  return 0;
}
