// Whole files: read_file (all the bytes of a file) and the atomic writer, the one way moepp writes a
// file that a crash must never leave half-written (checkpoints, configs, tokenizer models, indexes,
// run state): AtomicFileWriter appends the bytes as they are made, write_file_atomic writes bytes
// already in memory through it. Errors are moepp::Error naming the file, with strerror's text for a
// failed system call.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moepp::io {

// The bytes of the file at `path`. `what` names the file's role in the messages: "PATH: cannot open
// WHAT: <strerror>", "PATH: cannot read WHAT".
std::string read_file(const std::string& path, const std::string& what = "the file");

// One piece of the bytes to write: (first byte, size); a size-0 piece may have a null pointer.
using ByteRange = std::pair<const void*, size_t>;

// Writes `path` atomically, its bytes appended in pieces as they are made (so a file need not fit in
// memory): they go to the temporary file "<path>.tmp.<pid>" in the same directory; commit() fsyncs,
// closes and renames it over `path`, then fsyncs the directory (best effort: some file systems refuse
// fsync on a directory) so that the rename survives a crash. Readers see the old file or the new one,
// never a mix. The directory must exist. A writer destroyed without commit() (an exception on the way)
// removes its temporary file. Every failure removes it too and throws moepp::Error: "cannot write PATH:
// <step>: <strerror>" (step: cannot create TMP, write failed, fsync failed, close failed, rename failed).
// Not copyable; one thread at a time.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  void write(const void* data, size_t size);  // appends; the bytes are not kept
  void commit();                               // at most once; nothing may be written after it

 private:
  [[noreturn]] void fail(const std::string& step, int err);
  std::string path_, tmp_;
  int fd_ = -1;
  bool done_ = false;
};

// Writes the concatenation of `parts` to `path` atomically, through AtomicFileWriter (same temporary
// file, steps and errors). The bytes are not copied: they must stay valid during the call.
void write_file_atomic(const std::string& path, const std::vector<ByteRange>& parts);
void write_file_atomic(const std::string& path, const void* data, size_t size);
void write_file_atomic(const std::string& path, std::string_view bytes);

// True for the name of a temporary file that write_file_atomic leaves behind when the process dies
// before its rename ("<name>.tmp.<pid>"): safe to delete once no writer of that name runs.
bool is_atomic_write_temporary(const std::string& filename);

// fsyncs the directory `dir` ("" = the current one), so that renames into it survive a crash. Best
// effort: some file systems refuse fsync on a directory.
void sync_directory(const std::string& dir);

}  // namespace moepp::io
