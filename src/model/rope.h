// Rotary position embedding, Hugging Face "rotate_half" layout: element i of a head is paired with
// i + hd/2 and rotated by angle pos * theta^(-2i/hd), positions 0..T-1 in every sequence.
#pragma once

#include <cstdint>
#include <vector>

namespace moepp {

// cos / sin of every (position, frequency): [T, hd/2] each. Angles as Hugging Face computes them
// (fp32 inverse frequencies, fp32 pos * inv_freq), cos/sin rounded to fp32.
struct RopeTable {
  int64_t T = 0, half = 0;
  float theta = 0.0f;
  std::vector<float> cos, sin;
  void build(int64_t T, int64_t head_dim, float theta);  // no-op when already built for these values
};

// In place: x [B*T, n_heads * hd] (rows b*T + t), rotated by position t.
void rope_forward(float* x, const RopeTable& rt, int64_t B, int64_t T, int64_t n_heads, int64_t hd);

// In place: x [R, n_heads * hd], row r rotated by position pos[r] (< rt.T): rows of many sequences at
// arbitrary positions (the KV-cache decoder's new tokens).
void rope_rows(float* x, const RopeTable& rt, const int64_t* pos, int64_t R, int64_t n_heads, int64_t hd);

// In place: dx [B*T, n_heads * hd], the gradient of rope_forward's output becomes that of its input
// (the transposed rotation).
void rope_backward(float* dx, const RopeTable& rt, int64_t B, int64_t T, int64_t n_heads, int64_t hd);

}  // namespace moepp
