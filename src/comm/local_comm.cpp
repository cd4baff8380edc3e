// LocalComm (see local_comm.h).
#include "comm/local_comm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"

namespace moepp {

void LocalComm::allgather(int64_t* out, const int64_t* mine, int64_t n) {
  check(n >= 0, "allgather: negative count " + std::to_string(n));
  std::copy(mine, mine + n, out);
}

void LocalComm::alltoallv_rows(float* recv, const int64_t* recv_counts, const float* send,
                               const int64_t* send_counts, int64_t row_floats) {
  check(row_floats > 0, "alltoallv_rows: row size must be > 0");
  check(recv_counts[0] == send_counts[0] && send_counts[0] >= 0,
        "alltoallv_rows: rank 0 sends " + std::to_string(send_counts[0]) + " rows to itself but expects " +
            std::to_string(recv_counts[0]));
  if (send_counts[0] > 0) std::memmove(recv, send, sizeof(float) * send_counts[0] * row_floats);
}

std::unique_ptr<Comm> LocalComm::split(int, int) { return std::make_unique<LocalComm>(); }

void LocalComm::abort(int code) { std::exit(code); }

}  // namespace moepp
