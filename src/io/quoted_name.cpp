// quoted_name (see quoted_name.h).
#include "io/quoted_name.h"

#include <cstddef>
#include <cstdio>

namespace moepp::io {

std::string quoted_name(const std::string& s) {
  constexpr size_t kMax = 200;
  std::string r = "'";
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      r += buf;
    } else {
      r += static_cast<char>(c);
    }
  }
  r += "'";
  if (s.size() > kMax) r += "... (" + std::to_string(s.size()) + " bytes)";
  return r;
}

}  // namespace moepp::io
