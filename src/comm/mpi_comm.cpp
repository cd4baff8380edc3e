// MpiComm (see mpi_comm.h). Every call checks the MPI return code; MPI's default handler
// (MPI_ERRORS_ARE_FATAL) already ends the job on a communication failure.
#include "comm/mpi_comm.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"

namespace moepp {
namespace {

void mpi_check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(std::string("MPI ") + what + " failed: " + std::string(msg, len));
}

// A count or displacement as MPI's int, or an error naming what overflowed.
int as_int(int64_t v, const std::string& what) {
  check(v >= 0 && v < INT_MAX, "alltoallv_rows: " + what + " = " + std::to_string(v) +
                                   " is outside [0, INT_MAX): split the exchange");
  return static_cast<int>(v);
}

}  // namespace

MpiComm::MpiComm(MPI_Comm comm) : comm_(comm) {
  mpi_check(MPI_Comm_rank(comm_, &rank_), "Comm_rank");
  mpi_check(MPI_Comm_size(comm_, &size_), "Comm_size");
}

MpiComm::~MpiComm() {
  if (comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
}

void MpiComm::allgather(int64_t* out, const int64_t* mine, int64_t n) {
  const int count = as_int(n, "allgather count");
  mpi_check(MPI_Allgather(mine, count, MPI_INT64_T, out, count, MPI_INT64_T, comm_), "Allgather");
}

void MpiComm::alltoallv_rows(float* recv, const int64_t* recv_counts, const float* send, const int64_t* send_counts,
                             int64_t row_floats) {
  const int row = as_int(row_floats, "row size");
  check(row > 0, "alltoallv_rows: row size must be > 0");
  std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
  int64_t s_off = 0, r_off = 0;
  for (int p = 0; p < size_; ++p) {
    sc[p] = as_int(send_counts[p], "rows sent to rank " + std::to_string(p));
    rc[p] = as_int(recv_counts[p], "rows received from rank " + std::to_string(p));
    sd[p] = as_int(s_off, "send displacement");
    rd[p] = as_int(r_off, "receive displacement");
    s_off += send_counts[p];
    r_off += recv_counts[p];
  }
  MPI_Datatype row_type;
  mpi_check(MPI_Type_contiguous(row, MPI_FLOAT, &row_type), "Type_contiguous");
  mpi_check(MPI_Type_commit(&row_type), "Type_commit");
  const int rc_all = MPI_Alltoallv(send, sc.data(), sd.data(), row_type, recv, rc.data(), rd.data(), row_type, comm_);
  MPI_Type_free(&row_type);
  mpi_check(rc_all, "Alltoallv");
}

void MpiComm::allreduce_sum(float* data, int64_t n) {
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, data, as_int(n, "allreduce count"), MPI_FLOAT, MPI_SUM, comm_), "Allreduce");
}

void MpiComm::allreduce_sum(double* data, int64_t n) {
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, data, as_int(n, "allreduce count"), MPI_DOUBLE, MPI_SUM, comm_), "Allreduce");
}

void MpiComm::broadcast(void* bytes, int64_t n, int root) {
  mpi_check(MPI_Bcast(bytes, as_int(n, "broadcast size"), MPI_BYTE, root, comm_), "Bcast");
}

void MpiComm::broadcast_waiting(void* bytes, int64_t n, int root) {
  MPI_Request req;
  mpi_check(MPI_Ibcast(bytes, as_int(n, "broadcast size"), MPI_BYTE, root, comm_, &req), "Ibcast");
  if (rank_ == root) {
    mpi_check(MPI_Wait(&req, MPI_STATUS_IGNORE), "Wait");
    return;
  }
  using Clock = std::chrono::steady_clock;
  const auto tight_until = Clock::now() + std::chrono::microseconds(kTightWaitMicros);
  int sleep_us = 50;
  for (;;) {
    int done = 0;
    mpi_check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "Test");
    if (done) return;
    if (Clock::now() < tight_until) continue;
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    sleep_us = std::min(2 * sleep_us, static_cast<int>(kMaxIdleSleepMicros));
  }
}

std::unique_ptr<Comm> MpiComm::split(int color, int key) {
  MPI_Comm sub;
  mpi_check(MPI_Comm_split(comm_, color, key, &sub), "Comm_split");
  return std::make_unique<MpiComm>(sub);
}

void MpiComm::abort(int code) {
  MPI_Abort(comm_, code);
  std::abort();  // not reached
}

}  // namespace moepp
