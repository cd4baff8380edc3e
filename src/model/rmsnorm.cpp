// RMSNorm forward/backward (see rmsnorm.h).
#include "model/rmsnorm.h"

#include <omp.h>

#include <cmath>
#include <vector>

namespace moepp {

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * D;
    float* o = out + n * D;
    double ss = 0.0;
    for (int64_t j = 0; j < D; ++j) ss += static_cast<double>(xr[j]) * xr[j];
    const float var = static_cast<float>(ss / static_cast<double>(D));
    const float r = 1.0f / std::sqrt(var + eps);
    rstd[n] = r;
    for (int64_t j = 0; j < D; ++j) o[j] = (xr[j] * r) * w[j];
  }
}

// y = w * x * r, r = (mean(x^2) + eps)^(-1/2):
//   dx = r * (w*dy) - r^3 / D * x * sum(w*dy*x),   dw = sum over rows of dy * x * r.
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t D) {
  const int nt = omp_get_max_threads();
  std::vector<float> dw_part(static_cast<size_t>(nt) * D, 0.0f);
#pragma omp parallel
  {
    float* my = dw_part.data() + static_cast<size_t>(omp_get_thread_num()) * D;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * D;
      const float* dy = dout + n * D;
      const float r = rstd[n];
      float dot = 0.0f;
      for (int64_t j = 0; j < D; ++j) dot += w[j] * dy[j] * xr[j];
      const float c = r * r * r * dot / static_cast<float>(D);
      float* d = dx + n * D;
      for (int64_t j = 0; j < D; ++j) {
        d[j] += r * w[j] * dy[j] - c * xr[j];
        my[j] += dy[j] * xr[j] * r;
      }
    }
  }
  for (int t = 0; t < nt; ++t)
    for (int64_t j = 0; j < D; ++j) dw[j] += dw_part[static_cast<size_t>(t) * D + j];
}

}  // namespace moepp
