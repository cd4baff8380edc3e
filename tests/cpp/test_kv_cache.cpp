// Unit tests of the KV cache (src/infer/kv_cache): an F32 cache reads back what was written in place; a
// BF16 cache stores each value rounded to nearest even and reads it back widened; copy_slot and the
// lengths work in both dtypes; bad dtype names and slots are clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half_float.h"
#include "infer/kv_cache.h"

namespace moepp {
namespace {

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

float rounded(float x) { return bf16_to_f32(f32_to_bf16(x)); }

TEST(KvCache, StoresInItsDtypeAndReadsEachHeadBackAsFp32) {
  const int64_t L = 2, S = 3, T = 7, H = 3, hd = 4, KV = H * hd;
  for (KvDType dt : {KvDType::kF32, KvDType::kBF16}) {
    KvCache c(L, S, T, H, hd, dt);
    EXPECT_EQ(c.dtype(), dt);
    EXPECT_EQ(c.kv_dim(), KV);
    EXPECT_EQ(c.bytes(), static_cast<size_t>(2 * L * S * T * KV) * (dt == KvDType::kBF16 ? 2 : 4));
    const std::vector<float> k = random_values(4 * KV, 1), v = random_values(4 * KV, 2);
    c.write(1, 2, 0, 3, k.data(), v.data());                   // positions 0..2
    c.write(1, 2, 3, 1, k.data() + 3 * KV, v.data() + 3 * KV);  // position 3
    for (int64_t h = 0; h < H; ++h) {
      std::vector<float> ks(4 * hd, -1.0f), vs(4 * hd, -1.0f);
      const float* kr = c.keys(1, 2, h, 4, ks.data());
      const float* vr = c.values(1, 2, h, 4, vs.data());
      EXPECT_EQ(kr == ks.data(), dt == KvDType::kBF16);  // F32: read in place; BF16: widened into the scratch
      for (int64_t p = 0; p < 4; ++p)
        for (int64_t j = 0; j < hd; ++j) {
          const float x = k[p * KV + h * hd + j], y = v[p * KV + h * hd + j];
          ASSERT_EQ(kr[p * hd + j], dt == KvDType::kBF16 ? rounded(x) : x) << kv_dtype_name(dt) << " h " << h;
          ASSERT_EQ(vr[p * hd + j], dt == KvDType::kBF16 ? rounded(y) : y) << kv_dtype_name(dt) << " h " << h;
          if (dt == KvDType::kBF16) {
            ASSERT_EQ(c.bf16_keys(1, 2, h)[p * hd + j], f32_to_bf16(x));
          }
        }
    }
    EXPECT_EQ(c.bf16_keys(0, 0, 0) == nullptr, dt == KvDType::kF32);
  }
}

TEST(KvCache, Bf16RoundsToNearestEven) {
  KvCache c(1, 1, 1, 1, 4, KvDType::kBF16);
  // 1 + 2^-8 is halfway between two bf16 neighbours (1 and 1 + 2^-7): ties go to the even one, 1.
  // 1 + 3 * 2^-8 is halfway too: it goes up to 1 + 2^-6 (even mantissa).
  const float k[4] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, -2.5f};
  const float v[4] = {0, 0, 0, 0};
  c.write(0, 0, 0, 1, k, v);
  float s[4];
  const float* r = c.keys(0, 0, 0, 1, s);
  EXPECT_EQ(r[0], 1.0f);
  EXPECT_EQ(r[1], 1.0f + 0x1p-6f);
  EXPECT_EQ(r[2], 1.0f + 0x1p-7f);  // above the halfway point: up
  EXPECT_EQ(r[3], -2.5f);           // exact in bf16
}

TEST(KvCache, CopySlotCopiesEveryLayerAndHeadInBothDtypes) {
  const int64_t L = 3, S = 2, T = 5, H = 2, hd = 4, KV = H * hd;
  for (KvDType dt : {KvDType::kF32, KvDType::kBF16}) {
    KvCache c(L, S, T, H, hd, dt);
    const std::vector<float> k = random_values(T * KV, 3), v = random_values(T * KV, 4);
    for (int64_t l = 0; l < L; ++l) c.write(l, 0, 0, 4, k.data(), v.data());
    c.set_length(0, 4);
    c.copy_slot(1, 0);
    EXPECT_EQ(c.length(1), 4);
    std::vector<float> a(T * hd), b(T * hd);
    for (int64_t l = 0; l < L; ++l)
      for (int64_t h = 0; h < H; ++h) {
        const float* x = c.values(l, 0, h, 4, a.data());
        const float* y = c.values(l, 1, h, 5, b.data());
        for (int64_t i = 0; i < 4 * hd; ++i) ASSERT_EQ(x[i], y[i]) << "layer " << l << " head " << h;
        for (int64_t i = 4 * hd; i < 5 * hd; ++i) ASSERT_EQ(y[i], 0.0f);  // beyond the length: not copied
      }
    EXPECT_THROW(c.copy_slot(2, 0), Error);
    EXPECT_THROW(c.set_length(0, T + 1), Error);
  }
  EXPECT_THROW(KvCache(1, 1, 1, 0, 4), Error);
}

TEST(KvCache, DtypeNamesParseAndBadOnesAreClearErrors) {
  EXPECT_EQ(parse_kv_dtype("f32", "t"), KvDType::kF32);
  EXPECT_EQ(parse_kv_dtype("bf16", "t"), KvDType::kBF16);
  EXPECT_STREQ(kv_dtype_name(KvDType::kBF16), "bf16");
  try {
    parse_kv_dtype("fp8", "--kv-dtype");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--kv-dtype"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("fp8"), std::string::npos);
  }
}

}  // namespace
}  // namespace moepp
