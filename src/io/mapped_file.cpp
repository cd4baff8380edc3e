// map_file_readonly / unmap_file: open + fstat + mmap with every failure reported (see mapped_file.h).
#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace moepp::io {

FileMapping map_file_readonly(const std::string& path, const std::string& kind) {
  const std::string named = (kind.empty() ? "" : kind + " ") + path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    throw Error("cannot open " + named + ": " + std::strerror(e));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error("cannot stat " + path + ": " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  FileMapping m;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > 0) {
    if (size > std::numeric_limits<size_t>::max()) {
      ::close(fd);
      throw Error(path + ": file too large to map");
    }
    void* p = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      throw Error("cannot mmap " + path + ": " + std::strerror(e));
    }
    m.data = static_cast<const uint8_t*>(p);
    m.size = static_cast<size_t>(size);
  }
  ::close(fd);
  return m;
}

void unmap_file(FileMapping& m) {
  if (m.data) ::munmap(const_cast<uint8_t*>(m.data), m.size);
  m = FileMapping{};
}

}  // namespace moepp::io
