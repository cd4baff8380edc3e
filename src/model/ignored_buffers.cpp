// The rotary-buffer rule of ignored_buffers.h and the one unexpected-tensor check built on it.
#include "model/ignored_buffers.h"

#include <cctype>
#include <cstdio>

#include "core/error.h"

namespace moepp {

bool is_ignored_rotary_buffer(const std::string& name) {
  static const std::string prefix = "model.layers.", mid = ".self_attn.rotary_emb.";
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  size_t i = prefix.size();
  const size_t digits = i;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
  if (i == digits || name.compare(i, mid.size(), mid) != 0) return false;
  const std::string leaf = name.substr(i + mid.size());
  return leaf == "inv_freq" || leaf == "cos_cached" || leaf == "sin_cached";
}

void check_no_unexpected_tensors(const std::vector<std::string>& names, const std::set<std::string>& expected,
                                 const std::string& source) {
  size_t skipped = 0;
  for (const std::string& n : names) {
    if (expected.count(n)) continue;
    if (!is_ignored_rotary_buffer(n)) throw Error(source + ": unexpected tensor '" + n + "' for this config");
    ++skipped;
  }
  if (skipped > 0)
    std::fprintf(stderr,
                 "moepp: note: %s: skipped %zu rotary-embedding buffer%s (model.layers.N.self_attn.rotary_emb.*), "
                 "which are not parameters (Hugging Face ignores them too)\n",
                 source.c_str(), skipped, skipped == 1 ? "" : "s");
}

}  // namespace moepp
