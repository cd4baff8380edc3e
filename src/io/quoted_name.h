// quoted_name: a name from an untrusted file (zip entry, pickle string, tensor key) quoted for an error
// message, shared by the PyTorch checkpoint readers (zip archive, unpickler, checkpoint).
#pragma once

#include <string>

namespace moepp::io {

// `s` in single quotes with control bytes written as \xNN; a name longer than 200 bytes is cut there
// and followed by "... (N bytes)". Never throws (beyond std::bad_alloc).
std::string quoted_name(const std::string& s);

}  // namespace moepp::io
