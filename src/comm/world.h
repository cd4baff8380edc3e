// World: the job's processes. Under mpirun (moepp built with MPI) it initialises MPI and its comm()
// spans MPI_COMM_WORLD; otherwise it is one process (LocalComm) and MPI is never touched, so a plain
// `moepp ...` behaves exactly as a build without MPI. One World per process, created first in main and
// destroyed last (it finalises MPI).
#pragma once

#include <memory>

#include "comm/comm.h"

namespace moepp {

class World {
 public:
  // Throws moepp::Error when started by a launcher with more than one process but built without MPI.
  World(int* argc, char*** argv);
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  Comm& comm() { return *comm_; }
  bool distributed() const { return comm_->size() > 1; }

 private:
  bool mpi_ = false;
  std::unique_ptr<Comm> comm_;
};

// True when an MPI launcher (OpenMPI's mpirun, or a PMI/PMIx launcher) started this process.
bool launched_by_mpi();

}  // namespace moepp
