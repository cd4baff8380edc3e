// Tests of src/gpu/gpu_device: the device query never throws; on a GPU the description names the device.
#include "gpu/gpu_device.h"

#include <gtest/gtest.h>

#include "gpu_test_util.h"

namespace moepp::gpu {
namespace {

TEST(GpuDevice, CountNeverThrowsAndExplainsZero) {
  std::string why = "unset";
  const int n = device_count(&why);
  EXPECT_GE(n, 0);
  EXPECT_EQ(n == 0, !why.empty()) << why;
}

TEST(GpuDevice, DescribesDeviceZero) {
  MOEPP_REQUIRE_GPU();
  const std::string d = device_description(0);
  EXPECT_NE(d.find(device_name(0)), std::string::npos);
  EXPECT_NE(d.find("sm_"), std::string::npos);
}

}  // namespace
}  // namespace moepp::gpu
