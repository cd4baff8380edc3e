// main() of the MPI tests: one World for the job, GoogleTest on every rank (only rank 0 prints its
// report), and a non-zero exit when any rank failed.
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "comm/world.h"
#include "mpi_test_env.h"

namespace moepp {
namespace {
Comm* g_world = nullptr;
}  // namespace

Comm& world_comm() { return *g_world; }

}  // namespace moepp

int main(int argc, char** argv) {
  moepp::World world(&argc, &argv);
  moepp::g_world = &world.comm();
  ::testing::InitGoogleTest(&argc, argv);
  if (world.comm().rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int rc = RUN_ALL_TESTS();
  int64_t failed = rc != 0, all = 0;
  std::vector<int64_t> each(world.comm().size());
  world.comm().allgather(each.data(), &failed, 1);
  for (int64_t f : each) all += f;
  if (world.comm().rank() == 0 && all > 0) std::fprintf(stderr, "%lld rank(s) failed\n", static_cast<long long>(all));
  return all > 0 ? 1 : 0;
}
