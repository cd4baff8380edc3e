// libFuzzer target for the chat-template subset of Jinja (tokenizer/chat_template.h): the input is a
// template, parsed as `moepp serve` parses a checkpoint's tokenizer_config.json, then rendered on a
// fixed conversation. A moepp::Error when parsing (outside the subset, a syntax error) and a
// ChatTemplateError when rendering are the expected outcomes for a bad template; any other exception,
// crash, sanitizer report, timeout or out-of-memory is a finding.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  std::optional<moepp::ChatTemplate> t;
  try {
    t.emplace(source, "fuzz");
  } catch (const moepp::Error&) {
    return 0;  // refused when parsed
  }
  static const std::vector<moepp::ChatMessage> conv = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}};
  for (const bool gen : {true, false}) {
    try {
      (void)t->render(conv, gen, "<s>", "</s>");
    } catch (const moepp::ChatTemplateError&) {
    }
  }
  return 0;
}
