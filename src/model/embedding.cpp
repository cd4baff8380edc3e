// Embedding forward/backward (see embedding.h).
#include "model/embedding.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

namespace moepp {

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t D) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) std::memcpy(out + n * D, table + static_cast<int64_t>(tokens[n]) * D, sizeof(float) * D);
}

// Repeated ids collide on a row, so the threads split the columns instead of the tokens.
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t N, int64_t D) {
  const int nt = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), std::max<int64_t>(1, D / 16)));
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), n_t = omp_get_num_threads();
    const int64_t chunk = (D + n_t - 1) / n_t;
    const int64_t j0 = t * chunk, j1 = std::min(D, j0 + chunk);
    for (int64_t n = 0; n < N; ++n) {
      float* row = dtable + static_cast<int64_t>(tokens[n]) * D;
      const float* d = dout + n * D;
      for (int64_t j = j0; j < j1; ++j) row[j] += d[j];
    }
  }
}

}  // namespace moepp
