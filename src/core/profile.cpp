// Section profiler registry (see profile.h).
#include "core/profile.h"

#include <atomic>
#include <mutex>

namespace moepp {
namespace {

std::atomic<bool> g_on{false};
std::mutex g_mu;
std::vector<ProfileEntry> g_entries;
std::vector<const char*> g_keys;

}  // namespace

void set_profiling(bool on) { g_on.store(on, std::memory_order_relaxed); }
bool profiling() { return g_on.load(std::memory_order_relaxed); }

void profile_reset() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_entries.clear();
  g_keys.clear();
}

void profile_add(const char* name, double ms) {
  std::lock_guard<std::mutex> lock(g_mu);
  for (size_t i = 0; i < g_keys.size(); ++i)
    if (g_keys[i] == name) {
      g_entries[i].ms += ms;
      ++g_entries[i].calls;
      return;
    }
  g_keys.push_back(name);
  g_entries.push_back({name, ms, 1});
}

std::vector<ProfileEntry> profile_entries() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_entries;
}

}  // namespace moepp
