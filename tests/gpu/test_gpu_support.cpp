// Tests of src/gpu/gpu_support (host only): which configs, precisions and token counts the GPU layer takes.
#include "gpu/gpu_support.h"

#include <gtest/gtest.h>

#include <climits>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace moepp::gpu {
namespace {

MoeConfig config(const std::string& router, int64_t n_zero = 0) {
  nlohmann::json j = {{"hidden_size", 16}, {"intermediate_size", 8}, {"num_experts", 8}, {"moe_router", router}};
  if (router != "moepp") j["n_zero_experts"] = n_zero;
  return MoeConfig::from_json(j, "test");
}

TEST(GpuSupport, RunsEveryRouterButRelu) {
  EXPECT_EQ(gpu_unsupported_reason(config("moepp")), "");
  EXPECT_EQ(gpu_unsupported_reason(config("topk")), "");
  EXPECT_EQ(gpu_unsupported_reason(config("adamoe", 2)), "");
  try {
    check_gpu_supported(config("relu"), "c.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("c.json: the GPU layer does not implement the relu router"), std::string::npos);
  }
}

TEST(GpuSupport, ParsesPrecisionsAndRejectsOthers) {
  EXPECT_EQ(parse_precision("f32", "--precision"), Precision::kF32);
  EXPECT_EQ(parse_precision("bf16", "--precision"), Precision::kBF16);
  EXPECT_STREQ(precision_name(Precision::kBF16), "bf16");
  try {
    parse_precision("fp16", "--precision");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--precision: unknown precision 'fp16'"), std::string::npos);
  }
}

TEST(GpuSupport, LimitsTokensToInt32Slots) {
  const MoeConfig c = config("moepp");  // K = 2
  EXPECT_EQ(gpu_max_tokens(c), INT_MAX / 2);
  EXPECT_NO_THROW(check_gpu_tokens(c, 0, "t"));
  EXPECT_NO_THROW(check_gpu_tokens(c, INT_MAX / 2, "t"));
  EXPECT_THROW(check_gpu_tokens(c, INT_MAX / 2 + 1, "t"), Error);
  EXPECT_THROW(check_gpu_tokens(c, -1, "t"), Error);
}

}  // namespace
}  // namespace moepp::gpu
