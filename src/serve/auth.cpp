// API-key checks of `moepp serve` (see auth.h).
#include "serve/auth.h"

#include <cstddef>
#include <cstdint>

namespace moepp::serve {

bool constant_time_equal(std::string_view given, std::string_view secret) {
  // volatile: the compiler may not turn the loop into an early exit.
  volatile uint8_t diff = given.size() == secret.size() ? 0 : 1;
  for (size_t i = 0; i < secret.size(); ++i) {
    const uint8_t g = i < given.size() ? static_cast<uint8_t>(given[i]) : 0;
    diff = static_cast<uint8_t>(diff | (g ^ static_cast<uint8_t>(secret[i])));
  }
  return diff == 0;
}

bool bearer_matches(std::string_view authorization, std::string_view key) {
  auto is_space = [](char c) { return c == ' ' || c == '\t'; };
  std::string_view s = authorization;
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  constexpr std::string_view scheme = "bearer";
  if (s.size() <= scheme.size() || !is_space(s[scheme.size()])) return false;
  for (size_t i = 0; i < scheme.size(); ++i)
    if ((s[i] | 0x20) != scheme[i]) return false;
  s.remove_prefix(scheme.size());
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  return constant_time_equal(s, key);
}

}  // namespace moepp::serve
