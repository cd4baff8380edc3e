// The communication layer under mpirun (tests/CMakeLists.txt runs this binary at np 1, 2 and 4, one
// OpenMP thread per rank): every collective with zero counts, a rank that sends and receives nothing,
// every row to one peer, sums sent equal to sums received, sub-communicators, the INT_MAX check, and
// broadcast_waiting (delivered; a long wait costs little CPU).
#include <gtest/gtest.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <sys/resource.h>
#include <numeric>
#include <thread>
#include <vector>

#include "comm/comm.h"
#include "core/error.h"
#include "mpi_test_env.h"

namespace moepp {
namespace {


// A row's value: where it comes from and where it goes, so a misplaced row is seen.
float row_value(int from, int to, int64_t row, int64_t j) {
  return static_cast<float>(from * 1000 + to * 100 + row * 10 + j);
}

// Rows `from` sends to `to` in the pattern under test.
using Pattern = int64_t (*)(int from, int to, int size);

void exchange_and_check(Pattern rows_of, int64_t width) {
  Comm& c = world_comm();
  const int P = c.size(), me = c.rank();
  std::vector<int64_t> send_counts(P), all(static_cast<size_t>(P) * P), recv_counts(P);
  for (int p = 0; p < P; ++p) send_counts[p] = rows_of(me, p, P);
  // Counts travel first (as in the MoE layer): recv_counts[p] = what p sends me.
  c.allgather(all.data(), send_counts.data(), P);
  for (int p = 0; p < P; ++p) recv_counts[p] = all[static_cast<size_t>(p) * P + me];
  std::vector<float> send, recv(static_cast<size_t>(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0})) * width);
  for (int p = 0; p < P; ++p)
    for (int64_t r = 0; r < send_counts[p]; ++r)
      for (int64_t j = 0; j < width; ++j) send.push_back(row_value(me, p, r, j));
  c.alltoallv_rows(recv.data(), recv_counts.data(), send.data(), send_counts.data(), width);
  size_t i = 0;
  for (int p = 0; p < P; ++p) {
    ASSERT_EQ(recv_counts[p], rows_of(p, me, P));
    for (int64_t r = 0; r < recv_counts[p]; ++r)
      for (int64_t j = 0; j < width; ++j) ASSERT_EQ(recv[i++], row_value(p, me, r, j)) << "from " << p;
  }
  // Sums sent equal sums received, over the job.
  double sums[2] = {0.0, 0.0};
  for (float v : send) sums[0] += v;
  for (float v : recv) sums[1] += v;
  c.allreduce_sum(sums, 2);
  EXPECT_EQ(sums[0], sums[1]);
}

TEST(Comm, AllgatherInRankOrder) {
  Comm& c = world_comm();
  const int64_t mine[3] = {c.rank(), 10 * c.rank(), -1};
  std::vector<int64_t> out(3 * c.size());
  c.allgather(out.data(), mine, 3);
  for (int r = 0; r < c.size(); ++r) {
    EXPECT_EQ(out[3 * r], r);
    EXPECT_EQ(out[3 * r + 1], 10 * r);
    EXPECT_EQ(out[3 * r + 2], -1);
  }
  c.allgather(out.data(), mine, 0);  // zero values: still a collective every rank makes
}

TEST(Comm, AllToAllEveryPairDifferentCounts) {
  exchange_and_check([](int from, int to, int) -> int64_t { return 1 + from + 2 * to; }, 3);
}

TEST(Comm, AllToAllWithZeroCounts) {
  exchange_and_check([](int from, int to, int) -> int64_t { return (from + to) % 2 == 0 ? 0 : 2; }, 5);
}

TEST(Comm, AllToAllRankOneSendsAndReceivesNothing) {
  exchange_and_check([](int from, int to, int) -> int64_t { return from == 1 || to == 1 ? 0 : 3; }, 4);
}

TEST(Comm, AllToAllEveryRowToOnePeer) {
  exchange_and_check([](int, int to, int size) -> int64_t { return to == size - 1 ? 7 : 0; }, 2);
}

TEST(Comm, AllToAllNothingAtAll) {
  exchange_and_check([](int, int, int) -> int64_t { return 0; }, 8);
}

TEST(Comm, AllreduceAndBroadcast) {
  Comm& c = world_comm();
  std::vector<float> f = {1.0f, static_cast<float>(c.rank())};
  std::vector<double> d = {0.5, static_cast<double>(c.rank() * c.rank())};
  c.allreduce_sum(f.data(), 2);
  c.allreduce_sum(d.data(), 2);
  const int P = c.size();
  EXPECT_EQ(f[0], static_cast<float>(P));
  EXPECT_EQ(f[1], static_cast<float>(P * (P - 1) / 2));
  EXPECT_EQ(d[0], 0.5 * P);
  EXPECT_EQ(d[1], static_cast<double>((P - 1) * P * (2 * P - 1) / 6));
  int64_t v[2] = {c.rank() == P - 1 ? 42 : 0, c.rank()};
  c.broadcast(v, sizeof v, P - 1);
  EXPECT_EQ(v[0], 42);
  EXPECT_EQ(v[1], P - 1);
}

// broadcast_waiting delivers like broadcast, and a rank that waits long for it (rank 0 sleeps 1.5 s
// before sending, as a leader idle between requests) sleeps between tests of the nonblocking broadcast
// instead of spinning in MPI_Bcast: its thread blocks voluntarily hundreds of times (a spinning wait,
// even one that yields, blocks never; counted with getrusage, so a loaded machine cannot hide it) and
// spends little CPU.
TEST(Comm, BroadcastWaitingDeliversWithoutSpinning) {
  Comm& c = world_comm();
  int64_t v[2] = {c.rank() == 0 ? 7 : 0, c.rank() == 0 ? -3 : 0};
  c.broadcast_waiting(v, sizeof v, 0);  // no wait: delivered
  EXPECT_EQ(v[0], 7);
  EXPECT_EQ(v[1], -3);
  if (c.size() == 1) return;
  const auto thread_usage = [] {
    rusage u{};
    getrusage(RUSAGE_THREAD, &u);
    return u;
  };
  const rusage u0 = thread_usage();
  const auto wall0 = std::chrono::steady_clock::now();
  int64_t w = c.rank() == 0 ? 11 : 0;
  if (c.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  c.broadcast_waiting(&w, sizeof w, 0);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  const rusage u1 = thread_usage();
  EXPECT_EQ(w, 11);
  if (c.rank() != 0) {
    const auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
    const double cpu = secs(u1.ru_utime) - secs(u0.ru_utime) + secs(u1.ru_stime) - secs(u0.ru_stime);
    const long blocked = u1.ru_nvcsw - u0.ru_nvcsw;
    EXPECT_GT(wall, 1.0) << "the wait did not wait";
    EXPECT_GE(blocked, 100) << "rank " << c.rank() << " blocked " << blocked << " times in a " << wall << " s wait";
    EXPECT_LT(cpu, 0.3 * wall) << "rank " << c.rank() << " spent " << cpu << " s of CPU in a " << wall << " s wait";
  }
}

TEST(Comm, SplitIntoGroups) {
  Comm& c = world_comm();
  // Groups of two consecutive ranks (expert-parallel groups), and the ranks of equal position in them
  // (data-parallel groups).
  std::unique_ptr<Comm> ep = c.split(c.rank() / 2, c.rank());
  std::unique_ptr<Comm> dp = c.split(c.rank() % 2, c.rank());
  EXPECT_EQ(ep->rank(), c.rank() % 2);
  EXPECT_EQ(ep->size(), std::min(2, c.size() - (c.rank() / 2) * 2));
  EXPECT_EQ(dp->rank(), c.rank() / 2);
  double x = 1.0;
  ep->allreduce_sum(&x, 1);
  EXPECT_EQ(x, static_cast<double>(ep->size()));
}

TEST(Comm, CountsAtIntMaxAreRefusedBeforeSending) {
  Comm& c = world_comm();
  std::vector<int64_t> counts(c.size(), 0), recv(c.size(), 0);
  counts[0] = INT_MAX;
  recv[0] = c.rank() == 0 ? INT_MAX : 0;
  float dummy = 0.0f;
  // Every rank holds an out-of-range count, so every rank throws and none waits in the collective.
  if (c.rank() == 0) {
    EXPECT_THROW(c.alltoallv_rows(&dummy, recv.data(), &dummy, counts.data(), 1), Error);
  } else {
    std::vector<int64_t> bad(c.size(), 0);
    bad[c.rank()] = int64_t{1} << 40;
    EXPECT_THROW(c.alltoallv_rows(&dummy, bad.data(), &dummy, bad.data(), 1), Error);
  }
}

}  // namespace
}  // namespace moepp

