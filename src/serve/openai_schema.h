// The OpenAI-compatible request and response schema of `moepp serve` (docs/serve.md): parsing and
// validation of /v1/completions and /v1/chat/completions bodies, the chat template, and the JSON of
// responses, stream chunks and errors. No I/O here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/sampler.h"

namespace moepp::serve {

// An error answered to the client: HTTP status and the OpenAI error object
// {"error": {"message", "type", "param", "code"}} (param / code null when empty).
class ApiError : public Error {
 public:
  ApiError(int status, const std::string& message, std::string param = "", std::string code = "",
           std::string type = "");
  int status;
  std::string type, param, code;
  nlohmann::json to_json() const;
};

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

// A parsed, validated request of either endpoint.
struct CompletionRequest {
  bool chat = false;
  std::string model;  // as sent (any name is accepted: the server has one model)
  // /v1/completions: the prompt as text, or as token ids (prompt_ids non-empty; any 32-bit integers:
  // Engine::submit checks their range, once, and the server answers 400 naming 'prompt').
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  // /v1/chat/completions
  std::vector<ChatMessage> messages;
  std::optional<int64_t> max_tokens;  // unset: 16 for completions, the rest of the context for chat
  SamplingParams sampling;            // seed set only when seed_given
  bool seed_given = false;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool ignore_eos = false;     // extension (as in vLLM): do not stop at the EOS token
};

// Parses a request body. Throws ApiError (400) for malformed JSON, a body that is not an object, an
// unknown or unsupported parameter, a wrong type, or an out-of-range value; param names the field.
CompletionRequest parse_completion_request(const std::string& body, bool chat);

// The chat template (the model has none of its own): one line per message, "System: ...",
// "User: ...", "Assistant: ...", then "Assistant:" for the reply. The engine stops at kChatStop.
std::string chat_prompt(const std::vector<ChatMessage>& messages);
inline constexpr const char* kChatStop = "\nUser:";

// Response bodies. finish_reason: "stop" | "length" | ... ; an empty finish_reason is JSON null.
struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};
nlohmann::json usage_json(const Usage& u);
nlohmann::json completion_json(const std::string& id, int64_t created, const std::string& model, bool chat,
                               const std::string& text, const std::string& finish_reason, const Usage& usage);
// One stream chunk: chat chunks carry {"delta": {...}}; role_chunk adds "role": "assistant".
nlohmann::json chunk_json(const std::string& id, int64_t created, const std::string& model, bool chat,
                          const std::string& text, const std::string& finish_reason, bool role_chunk = false);
// The last stream chunk when stream_options.include_usage: "choices": [] and "usage".
nlohmann::json usage_chunk_json(const std::string& id, int64_t created, const std::string& model, bool chat,
                                const Usage& usage);

// JSON text (invalid UTF-8, which the tokenizer never produces, would be replaced by U+FFFD).
std::string dump(const nlohmann::json& j);

}  // namespace moepp::serve
