// RoPE forward/backward (see rope.h).
#include "model/rope.h"

#include <cmath>

namespace moepp {

void RopeTable::build(int64_t T_, int64_t head_dim, float theta_) {
  if (T_ == T && head_dim / 2 == half && theta_ == theta) return;
  T = T_;
  half = head_dim / 2;
  theta = theta_;
  cos.resize(T * half);
  sin.resize(T * half);
  for (int64_t i = 0; i < half; ++i) {
    // inv_freq = 1 / theta^(2i / hd) in fp32, as torch computes it.
    const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float inv_freq = 1.0f / static_cast<float>(std::pow(static_cast<double>(theta), static_cast<double>(expo)));
    for (int64_t t = 0; t < T; ++t) {
      const float ang = static_cast<float>(t) * inv_freq;  // fp32 product
      cos[t * half + i] = static_cast<float>(std::cos(static_cast<double>(ang)));
      sin[t * half + i] = static_cast<float>(std::sin(static_cast<double>(ang)));
    }
  }
}

namespace {

// One row of n_heads heads at position pos. sign = +1: forward rotation; -1: its transpose (backward).
inline void rotate_row(float* row, const RopeTable& rt, int64_t pos, int64_t n_heads, int64_t hd, float sign) {
  const int64_t half = hd / 2;
  const float* c = rt.cos.data() + pos * half;
  const float* s = rt.sin.data() + pos * half;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = row + h * hd;
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half], sn = sign * s[i];
      v[i] = a * c[i] - b * sn;         // out_i        = x_i cos - x_{i+h} sin
      v[i + half] = b * c[i] + a * sn;  // out_{i+half} = x_{i+h} cos + x_i sin
    }
  }
}

void rope_apply(float* x, const RopeTable& rt, int64_t B, int64_t T, int64_t n_heads, int64_t hd, float sign) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < B * T; ++n) rotate_row(x + n * n_heads * hd, rt, n % T, n_heads, hd, sign);
}

}  // namespace

void rope_forward(float* x, const RopeTable& rt, int64_t B, int64_t T, int64_t n_heads, int64_t hd) {
  rope_apply(x, rt, B, T, n_heads, hd, 1.0f);
}

void rope_backward(float* dx, const RopeTable& rt, int64_t B, int64_t T, int64_t n_heads, int64_t hd) {
  rope_apply(dx, rt, B, T, n_heads, hd, -1.0f);
}

void rope_rows(float* x, const RopeTable& rt, const int64_t* pos, int64_t R, int64_t n_heads, int64_t hd) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r) rotate_row(x + r * n_heads * hd, rt, pos[r], n_heads, hd, 1.0f);
}

}  // namespace moepp
