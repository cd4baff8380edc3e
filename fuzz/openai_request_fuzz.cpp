// libFuzzer target for the OpenAI request schema of `moepp serve`: parse_completion_request on an
// arbitrary body, as /v1/completions (first input byte even) or /v1/chat/completions (odd), then the
// chat template of an accepted chat request. An ApiError (a moepp::Error) is the expected outcome for a
// bad body; any other exception, crash or sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "serve/openai_schema.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool chat = data[0] & 1u;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const moepp::serve::CompletionRequest r = moepp::serve::parse_completion_request(body, chat);
    if (r.chat != chat) std::abort();
    if (chat) (void)moepp::serve::chat_prompt(r.messages);
  } catch (const moepp::serve::ApiError& e) {
    if (e.status != 400) std::abort();  // a bad body is always the client's fault
  }
  return 0;
}
