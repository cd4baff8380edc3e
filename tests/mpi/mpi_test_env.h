// The job's communicator for the MPI tests (set up by mpi_main.cpp before the tests run).
#pragma once

#include "comm/comm.h"

namespace moepp {

Comm& world_comm();

}  // namespace moepp
