// Agreement among the ranks of a job: checks that every rank sees the same thing (a config, weights)
// and that a step every rank takes (a checkpoint write) succeeded everywhere. Both are collectives:
// every rank of the Comm calls them at the same point. In one process they return at once.
#pragma once

#include <cstdint>
#include <string>

#include "comm/comm.h"

namespace moepp {

// Throws JobWideError on every rank when some rank's hash differs from rank 0's, naming `what` and
// those ranks.
void check_same_on_all_ranks(Comm& comm, uint64_t hash, const std::string& what);

// True on every rank when ok is true on every rank; waits for all of them (a barrier).
bool all_ranks_ok(Comm& comm, bool ok);

}  // namespace moepp
