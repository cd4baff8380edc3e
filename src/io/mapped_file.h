// FileMapping: a whole file mapped read-only into memory, shared by the readers that memory-map
// their input (safetensors, token shards). Failures throw moepp::Error naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace moepp::io {

struct FileMapping {
  const uint8_t* data = nullptr;  // null for an empty file
  size_t size = 0;
};

// Maps `path` read-only. `kind` (e.g. "token shard", may be empty) names the file in messages.
// Errors: cannot open / stat / map, not a regular file, too large.
FileMapping map_file_readonly(const std::string& path, const std::string& kind = "");

// Unmaps (no-op for an empty mapping) and resets m.
void unmap_file(FileMapping& m);

}  // namespace moepp::io
