// exp for fp32 loops that the compiler can vectorise without -ffast-math (std::exp is a scalar libm
// call, and float compares/selects are not if-converted under the default -ftrapping-math):
// exp(x) = 2^k * exp(r), k = round(x / ln 2), |r| <= ln(2)/2, exp(r) by its degree-7 Taylor polynomial.
// Relative error below 2e-7 (1-2 ulp) on [-87.3, 88.0]; below that it returns 0 (k is clamped as an
// integer, so 2^k underflows to exactly 0). Domain: finite x with |x| < 1e6, x <= 88 (softmax
// arguments x - max(x) <= 0 in practice).
#pragma once

#include <cstdint>
#include <cstring>

namespace moepp {

inline float exp_vec(float x) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.42860682030941723e-6f;
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float k = (x * kLog2e + kRound) - kRound;
  const float r = (x - k * kLn2Hi) - k * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t ki = static_cast<int32_t>(k);
  ki = ki < -127 ? -127 : ki;  // 2^-127 -> bits 0 -> scale 0
  ki = ki > 127 ? 127 : ki;
  const int32_t bits = (ki + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

}  // namespace moepp
