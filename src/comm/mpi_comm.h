// MpiComm: Comm over MPI (OpenMPI on Debian 12). Rows travel as a contiguous MPI datatype of one row,
// so counts are in rows and must stay below INT_MAX rows (and displacements too); larger exchanges
// throw moepp::Error on the rank that finds them, before any message is sent.
// Lifetime: MPI must be initialised (mpi_init) before the first MpiComm and finalised (mpi_finalize)
// after the last one is destroyed.
#pragma once

#include <mpi.h>

#include "comm/comm.h"

namespace moepp {

class MpiComm : public Comm {
 public:
  // Takes ownership of `comm` (freed in the destructor) unless it is MPI_COMM_WORLD.
  explicit MpiComm(MPI_Comm comm);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allgather(int64_t* out, const int64_t* mine, int64_t n) override;
  void alltoallv_rows(float* recv, const int64_t* recv_counts, const float* send, const int64_t* send_counts,
                      int64_t row_floats) override;
  void allreduce_sum(float* data, int64_t n) override;
  void allreduce_sum(double* data, int64_t n) override;
  void broadcast(void* bytes, int64_t n, int root) override;
  void broadcast_waiting(void* bytes, int64_t n, int root) override;
  std::unique_ptr<Comm> split(int color, int key) override;
  [[noreturn]] void abort(int code) override;

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace moepp
