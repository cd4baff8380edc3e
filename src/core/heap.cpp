// Heap policy (see heap.h): glibc mallopt thresholds.
#include "core/heap.h"

#include <malloc.h>

namespace moepp {

void keep_freed_memory_in_heap() {
  mallopt(M_MMAP_THRESHOLD, 256 << 20);  // blocks up to 256 MiB come from the heap
  mallopt(M_TRIM_THRESHOLD, 1 << 30);    // and the heap top is returned to the OS only above 1 GiB free
}

}  // namespace moepp
