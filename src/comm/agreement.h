// Start-up agreement checks of a multi-process job: every rank computes a value (a hash of its config
// or of the weights it loaded) and the ranks compare them, so that a job whose ranks read different
// files fails at once, on every rank, instead of computing garbage.
#pragma once

#include <cstdint>
#include <string>

#include "comm/comm.h"

namespace moepp {

// Collective over `comm` (every rank calls it at the same point). Throws JobWideError on every rank
// when the ranks' values differ: "<what> differs between ranks: ranks 1, 3 differ from rank 0".
void check_same_on_every_rank(Comm& comm, uint64_t value, const std::string& what);

}  // namespace moepp
