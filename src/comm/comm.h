// Comm: the narrow communication interface of multi-process runs (expert and data parallelism).
// Implementations: LocalComm (one process; what every run without mpirun gets) and MpiComm (MPI, built
// when CMake finds MPI); an NCCL backend can implement the same interface.
//
// Contract for every collective: every rank of the communicator makes the same calls in the same
// order, also when it sends or receives nothing (zero rows). Counts are int64 here and checked
// against what the backend can express (MPI: below INT_MAX rows, with a contiguous row datatype);
// a violation throws moepp::Error before anything is sent. Not thread-safe: one thread per Comm.
#pragma once

#include <cstdint>
#include <memory>

namespace moepp {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // out [size() * n]: rank r's `n` values at out + r * n, in rank order.
  virtual void allgather(int64_t* out, const int64_t* mine, int64_t n) = 0;

  // All-to-all of rows of `row_floats` floats: send holds send_counts[p] rows for peer p, peers in rank
  // order; recv receives recv_counts[p] rows from peer p, in rank order. recv_counts[p] here must equal
  // send_counts[rank()] on p (exchange counts with allgather first). send and recv must not overlap.
  virtual void alltoallv_rows(float* recv, const int64_t* recv_counts, const float* send, const int64_t* send_counts,
                              int64_t row_floats) = 0;

  // data [n] = the element-wise sum over the ranks, on every rank.
  virtual void allreduce_sum(float* data, int64_t n) = 0;
  virtual void allreduce_sum(double* data, int64_t n) = 0;

  // bytes [n] of `root` copied to every rank.
  virtual void broadcast(void* bytes, int64_t n, int root) = 0;

  // The same, for a message the other ranks may wait long for (a follower waiting for its leader's next
  // call, idle between requests): they wait without keeping a core busy. MPI: a nonblocking broadcast,
  // tested in a tight loop for the first kTightWaitMicros, then between sleeps that double from 50 us
  // to kMaxIdleSleepMicros (so a message after a long idle time is picked up within that). Every rank
  // calls this one, not broadcast(), for the matching message.
  virtual void broadcast_waiting(void* bytes, int64_t n, int root) = 0;
  static constexpr int kTightWaitMicros = 200, kMaxIdleSleepMicros = 5000;

  // The ranks with the same `color` form a new communicator, ordered by `key` (ties by rank).
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;

  // Ends every rank of the job with `code` (the MPI job, or this process). For failures that other
  // ranks cannot learn of by themselves; never returns.
  [[noreturn]] virtual void abort(int code) = 0;
};

}  // namespace moepp
