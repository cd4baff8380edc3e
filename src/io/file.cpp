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

AtomicFileWriter::AtomicFileWriter(const std::string& path)
    : path_(path), tmp_(path + ".tmp." + std::to_string(::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int e = errno;
    throw Error("cannot write " + path_ + ": cannot create " + tmp_ + ": " + std::strerror(e));
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (done_) return;
  if (fd_ >= 0) ::close(fd_);
  ::unlink(tmp_.c_str());
}

void AtomicFileWriter::fail(const std::string& step, int err) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  done_ = true;  // nothing left for the destructor
  throw Error("cannot write " + path_ + ": " + step + ": " + std::strerror(err));
}

void AtomicFileWriter::write(const void* data, size_t size) {
  if (done_) throw Error("cannot write " + path_ + ": the file is already committed or failed");
  const char* p = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    const size_t chunk = std::min<size_t>(left, size_t{1} << 30);
    const ssize_t w = ::write(fd_, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("write failed", errno);
    }
    if (w == 0) fail("write failed", EIO);
    p += w;
    left -= static_cast<size_t>(w);
  }
}

void AtomicFileWriter::commit() {
  if (done_) throw Error("cannot write " + path_ + ": the file is already committed or failed");
  if (::fsync(fd_) != 0) fail("fsync failed", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("close failed", errno);
  fault_point("atomic_write:" + std::filesystem::path(path_).filename().string());
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("rename failed", errno);
  done_ = true;
  sync_directory(std::filesystem::path(path_).parent_path().string());  // make the rename durable
}

void write_file_atomic(const std::string& path, const std::vector<ByteRange>& parts) {
  AtomicFileWriter f(path);
  for (const auto& [ptr, size] : parts) f.write(ptr, size);
  f.commit();
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
