// World (see world.h).
#include "comm/world.h"

#include <cstdlib>
#include <string>

#include "comm/local_comm.h"
#include "core/error.h"
#ifdef MOEPP_HAVE_MPI
#include "comm/mpi_comm.h"
#endif

namespace moepp {

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

World::World([[maybe_unused]] int* argc, [[maybe_unused]] char*** argv) {
  if (launched_by_mpi()) {
#ifdef MOEPP_HAVE_MPI
    // SERIALIZED: MPI calls come from one thread at a time, not always the main one (serve's engine
    // thread runs the expert group's collectives).
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
    mpi_ = true;
    comm_ = std::make_unique<MpiComm>(MPI_COMM_WORLD);
    return;
#else
    const char* n = std::getenv("OMPI_COMM_WORLD_SIZE");
    if (n != nullptr && std::string(n) != "1")
      throw Error("started by mpirun with " + std::string(n) +
                  " processes, but this moepp was built without MPI (install libopenmpi-dev and rebuild)");
#endif
  }
  comm_ = std::make_unique<LocalComm>();
}

World::~World() {
  comm_.reset();
#ifdef MOEPP_HAVE_MPI
  if (mpi_) MPI_Finalize();
#endif
}

}  // namespace moepp
