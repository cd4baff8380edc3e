// read_file and the atomic writer (see file.h).
#include "io/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/fault_point.h"

namespace moepp::io {

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open " + what + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error(path + ": cannot read " + what);
  return ss.str();
}

void write_file_atomic(const std::string& path, const std::vector<ByteRange>& parts) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int e = errno;
    throw Error("cannot write " + path + ": cannot create " + tmp + ": " + std::strerror(e));
  }
  auto abort_with = [&](const std::string& what, int e, bool fd_open) {
    if (fd_open) ::close(fd);
    ::unlink(tmp.c_str());
    throw Error("cannot write " + path + ": " + what + ": " + std::strerror(e));
  };
  for (const auto& [ptr, size] : parts) {
    const char* p = static_cast<const char*>(ptr);
    size_t left = size;
    while (left > 0) {
      const size_t chunk = std::min<size_t>(left, size_t{1} << 30);
      const ssize_t w = ::write(fd, p, chunk);
      if (w < 0) {
        if (errno == EINTR) continue;
        abort_with("write failed", errno, true);
      }
      if (w == 0) abort_with("write failed", EIO, true);
      p += w;
      left -= static_cast<size_t>(w);
    }
  }
  if (::fsync(fd) != 0) abort_with("fsync failed", errno, true);
  if (::close(fd) != 0) abort_with("close failed", errno, false);
  fault_point("atomic_write:" + std::filesystem::path(path).filename().string());
  if (::rename(tmp.c_str(), path.c_str()) != 0) abort_with("rename failed", errno, false);
  sync_directory(std::filesystem::path(path).parent_path().string());  // make the rename durable
}

bool is_atomic_write_temporary(const std::string& filename) {
  const size_t at = filename.rfind(".tmp.");
  if (at == std::string::npos || at == 0 || at + 5 == filename.size()) return false;
  return std::all_of(filename.begin() + static_cast<std::ptrdiff_t>(at) + 5, filename.end(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

void sync_directory(const std::string& dir) {
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  write_file_atomic(path, std::vector<ByteRange>{{data, size}});
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace moepp::io
