// LocalComm: the one-process Comm (rank 0 of 1). Collectives are copies or no-ops with the same
// argument checks as MpiComm, so single-process runs exercise the same code paths.
#pragma once

#include "comm/comm.h"

namespace moepp {

class LocalComm : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allgather(int64_t* out, const int64_t* mine, int64_t n) override;
  void alltoallv_rows(float* recv, const int64_t* recv_counts, const float* send, const int64_t* send_counts,
                      int64_t row_floats) override;
  void allreduce_sum(float*, int64_t) override {}
  void allreduce_sum(double*, int64_t) override {}
  void broadcast(void*, int64_t, int) override {}
  void broadcast_waiting(void*, int64_t, int) override {}
  std::unique_ptr<Comm> split(int color, int key) override;
  [[noreturn]] void abort(int code) override;
};

}  // namespace moepp
