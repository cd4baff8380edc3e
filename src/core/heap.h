// Process-wide heap policy for the engine's step loops.
#pragma once

namespace moepp {

// Keeps freed large blocks in the heap instead of returning them to the OS: blocks up to 256 MiB are
// served from the heap rather than by mmap, and the heap top is given back only when more than 1 GiB
// of it is free (glibc's mmap and trim thresholds). A buffer freed and allocated again every step
// (oneDNN's GEMM packing buffers, per-call scratch) is then a reused heap block, not a fresh mapping
// with new page faults and zeroing; in exchange, freed memory stays mapped up to those limits. What it
// saves a training step is measured in README.md ("Training throughput").
// Call once at start-up, before the work; idempotent.
void keep_freed_memory_in_heap();

}  // namespace moepp
