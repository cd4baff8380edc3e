// API-key checks of `moepp serve` (docs/serve.md, "Exposing the server"): a comparison whose time does
// not depend on where two strings differ, and the test of an "Authorization: Bearer <key>" header.
// No I/O here.
#pragma once

#include <string_view>

namespace moepp::serve {

// Whether given == secret. Every byte of secret is compared whatever given holds (a length difference
// counts as a mismatch, bytes past the end of given compare against 0), so the time depends on the
// secret's length only, not on how much of given matches.
bool constant_time_equal(std::string_view given, std::string_view secret);

// Whether an Authorization header value is "Bearer <key>" (scheme case-insensitive, spaces around the
// token allowed), the token compared with constant_time_equal.
bool bearer_matches(std::string_view authorization, std::string_view key);

}  // namespace moepp::serve
