// Unit tests of the streaming prefetch setting (src/core/stream_prefetch): its names and their errors,
// and that WeightMatrix's few-row products (every dtype; Q4 with each kernel this CPU runs) give the
// same bits under every setting: the prefetch changes what is in the caches, never a result.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/q4_blocks.h"
#include "core/stream_prefetch.h"
#include "infer/weight_matrix.h"
#include "test_util.h"

namespace moepp {
namespace {

using namespace test;

// Puts the default setting back however a test ends.
struct RestorePrefetch {
  ~RestorePrefetch() { set_stream_prefetch(kDefaultStreamPrefetch); }
};

TEST(StreamPrefetch, NamesRoundTripAndBadOnesAreRefused) {
  RestorePrefetch restore;
  EXPECT_EQ(stream_prefetch_name(stream_prefetch()), "l2_8192");
  const StreamPrefetch p = parse_stream_prefetch("l1_2048");
  EXPECT_EQ(p.bytes, 2048);
  EXPECT_EQ(p.level, PrefetchLevel::kL1);
  EXPECT_EQ(stream_prefetch_name(parse_stream_prefetch("l2_64")), "l2_64");
  EXPECT_EQ(stream_prefetch_name(parse_stream_prefetch("l2_65536")), "l2_65536");
  for (const char* bad : {"", "l1", "l1_", "l3_64", "L1_64", "l1_100", "l1_0", "l1_-64", "l1_64x", "l2_131072",
                          "l2_9999999999", " l1_64"}) {
    try {
      parse_stream_prefetch(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("stream prefetch '" + std::string(bad) + "'"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(set_stream_prefetch({100, PrefetchLevel::kL2}), Error);
  EXPECT_THROW(set_stream_prefetch({0, PrefetchLevel::kL1}), Error);
  set_stream_prefetch(p);
  EXPECT_EQ(stream_prefetch_name(stream_prefetch()), "l1_2048");
}

TEST(StreamPrefetch, ProductsAreTheSameUnderEverySetting) {
  RestorePrefetch restore;
  const std::string chosen = q4_kernel_name();
  std::mt19937 rng(3);
  // I = 2816: rows longer than the distances; I = 109: the loops' tails.
  for (const int64_t I : {int64_t{2816}, int64_t{109}}) {
    const int64_t O = 83;
    const std::vector<float> w = randn(O * I, rng, 0.1f), x = randn(3 * I, rng);
    for (const WeightDType dt : {WeightDType::kF32, WeightDType::kBF16, WeightDType::kInt8, WeightDType::kQ4}) {
      const WeightMatrix wm = WeightMatrix::from_f32(w.data(), O, I, dt);
      std::vector<std::string> kernels = {""};
      if (dt == WeightDType::kQ4) kernels = {"avx512vnni", "avx2", "portable"};
      for (const std::string& k : kernels) {
        if (!k.empty()) {
          try {
            q4_force_kernel(k.c_str());
          } catch (const Error&) {
            continue;  // this CPU cannot run it
          }
        }
        for (const int64_t M : {int64_t{1}, int64_t{3}}) {
          set_stream_prefetch(kDefaultStreamPrefetch);
          std::vector<float> want(M * O);
          wm.matmul(want.data(), x.data(), M);
          for (const char* s : {"l1_2048", "l1_64", "l2_64", "l2_65536"}) {
            set_stream_prefetch(parse_stream_prefetch(s));
            std::vector<float> got(M * O, -1.0f);
            wm.matmul(got.data(), x.data(), M);
            for (int64_t i = 0; i < M * O; ++i)
              ASSERT_EQ(got[i], want[i]) << weight_dtype_name(dt) << " " << k << " I=" << I << " M=" << M << " " << s
                                         << " i=" << i;
          }
        }
      }
      q4_force_kernel(chosen.c_str());
    }
  }
}

}  // namespace
}  // namespace moepp
