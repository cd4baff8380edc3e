// fault_point (see fault_point.h).
#include "core/fault_point.h"

#include <csignal>
#include <cstdlib>
#include <mutex>

namespace moepp {
namespace {

struct Target {
  std::string name;
  long visit = 1;  // the visit that kills
  long seen = 0;
};

Target* target() {
  static Target* t = [] {
    const char* v = std::getenv("MOEPP_FAULT_POINT");
    if (v == nullptr || *v == '\0') return static_cast<Target*>(nullptr);
    auto* r = new Target;
    r->name = v;
    const size_t at = r->name.find('@');
    if (at != std::string::npos) {
      r->visit = std::strtol(r->name.c_str() + at + 1, nullptr, 10);
      r->name.resize(at);
    }
    return r;
  }();
  return t;
}

}  // namespace

void fault_point(const std::string& name) {
  Target* t = target();
  if (t == nullptr || t->name != name) return;
  static std::mutex m;
  std::lock_guard<std::mutex> lock(m);
  if (++t->seen == t->visit) std::raise(SIGKILL);
}

}  // namespace moepp
