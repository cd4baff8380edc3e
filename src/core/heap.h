// Process-wide heap policy for the engine's step loops.
#pragma once

namespace moepp {

// Keeps freed large blocks in the heap instead of returning them to the OS. glibc serves blocks above
// its mmap threshold with mmap and frees them with munmap, so a buffer freed and allocated again every
// step (oneDNN's GEMM packing buffers, per-call scratch) costs fresh page faults and zeroing each time:
// 10 % of a training step in the kernel and in memset (perf, `moepp bench train`). Raising the mmap
// threshold and the trim threshold makes those blocks heap blocks that are reused. Measured on the
// slice preset: the lm_head logits GEMM 20 -> 13 ms/step, the expert forward 50 -> 37 ms/step.
// Call once at start-up, before the work; idempotent.
void keep_freed_memory_in_heap();

}  // namespace moepp
