// Whole files: read_file (all the bytes of a file) and write_file_atomic, the one way moepp writes a
// file that a crash must never leave half-written (checkpoints, configs, tokenizer models, indexes,
// run state). Errors are moepp::Error naming the file, with strerror's text for a failed system call.
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

// Writes the concatenation of `parts` to `path` atomically: the bytes go to the temporary file
// "<path>.tmp.<pid>" in the same directory, which is fsynced, closed and renamed over `path`; then the
// directory is fsynced (best effort: some file systems refuse fsync on a directory) so that the rename
// survives a crash. Readers see the old file or the new one, never a mix. The directory must exist.
// On any failure the temporary file is removed and moepp::Error is thrown:
// "cannot write PATH: <step>: <strerror>" (step: cannot create TMP, write failed, fsync failed,
// close failed, rename failed). The bytes are not copied: they must stay valid during the call.
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
