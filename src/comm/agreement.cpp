// check_same_on_all_ranks, all_ranks_ok (see agreement.h).
#include "comm/agreement.h"

#include <vector>

#include "core/error.h"

namespace moepp {

void check_same_on_all_ranks(Comm& comm, uint64_t hash, const std::string& what) {
  if (comm.size() == 1) return;
  std::vector<int64_t> all(comm.size());
  const int64_t mine = static_cast<int64_t>(hash);
  comm.allgather(all.data(), &mine, 1);
  std::string differ;
  for (int r = 1; r < comm.size(); ++r)
    if (all[r] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (!differ.empty())
    throw JobWideError(what + " differs between ranks: rank(s) " + differ +
                       " do not see rank 0's (every rank must read the same files and arguments)");
}

bool all_ranks_ok(Comm& comm, bool ok) {
  double bad = ok ? 0.0 : 1.0;
  comm.allreduce_sum(&bad, 1);
  return bad == 0.0;
}

}  // namespace moepp
