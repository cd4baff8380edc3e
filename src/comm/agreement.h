// Agreement among the ranks of a multi-process job: every rank computes a value (a hash of its config
// or of the weights it loaded) and the ranks compare them, so that a job whose ranks read different
// files fails at once, on every rank, instead of computing garbage; and a step every rank takes (a
// checkpoint write) is known to have succeeded everywhere. Both are collectives: every rank of the
// Comm calls them at the same point. In one process they return at once.
#pragma once

#include <cstdint>
#include <string>

#include "comm/comm.h"

namespace moepp {

// Throws JobWideError on every rank when the ranks' values differ: "<what> differs between ranks:
// ranks 1, 3 differ from rank 0".
void check_same_on_every_rank(Comm& comm, uint64_t value, const std::string& what);

// True on every rank when ok is true on every rank; waits for all of them (a barrier).
bool all_ranks_ok(Comm& comm, bool ok);

}  // namespace moepp
