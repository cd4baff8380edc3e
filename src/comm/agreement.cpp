// Agreement among the ranks (see agreement.h).
#include "comm/agreement.h"

#include <cstring>
#include <vector>

#include "core/error.h"

namespace moepp {

void check_same_on_every_rank(Comm& comm, uint64_t value, const std::string& what) {
  const int P = comm.size();
  if (P == 1) return;
  int64_t mine = 0;
  std::memcpy(&mine, &value, sizeof mine);
  std::vector<int64_t> all(P);
  comm.allgather(all.data(), &mine, 1);
  std::string differ;
  for (int r = 1; r < P; ++r)
    if (all[r] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (!differ.empty())
    throw JobWideError(what + " differs between ranks: rank" + (differ.find(',') == std::string::npos ? " " : "s ") +
                       differ + (differ.find(',') == std::string::npos ? " differs" : " differ") + " from rank 0");
}

bool all_ranks_ok(Comm& comm, bool ok) {
  double bad = ok ? 0.0 : 1.0;
  comm.allreduce_sum(&bad, 1);
  return bad == 0.0;
}

}  // namespace moepp
