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
#include "tokenizer/chat_template.h"

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

// A parsed, validated request of either endpoint.
struct CompletionRequest {
  bool chat = false;
  std::string model;  // as sent ("" when absent: the server's main name); the server checks it is served
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
  int64_t n = 1;               // choices, 1..kMaxChoices
  // -1: no logprobs; else how many alternatives per token (chat: top_logprobs 0..20 with logprobs
  // true; completions: logprobs 0..5).
  int64_t logprobs = -1;
  // Extension "moepp_routing": true: every choice also carries, per generated token, how many FFN
  // experts each MoE layer ran for it (routing_json). false (the default): responses as without it.
  bool routing = false;
};
inline constexpr int64_t kMaxChoices = 16;

// Parses a request body. Throws ApiError (400) for malformed JSON, a body that is not an object, an
// unknown or unsupported parameter, a wrong type, or an out-of-range value; param names the field.
CompletionRequest parse_completion_request(const std::string& body, bool chat);

// The default chat format, for a model without a chat template of its own (tokenizer/chat_template.h):
// one line per message, "System: ...", "User: ...", "Assistant: ...", then "Assistant:" for the reply.
// The engine stops at kChatStop.
std::string chat_prompt(const std::vector<ChatMessage>& messages);
inline constexpr const char* kChatStop = "\nUser:";

// Response bodies. finish_reason: "stop" | "length" | ... ; an empty finish_reason is JSON null.
struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};
nlohmann::json usage_json(const Usage& u);
// One choice of a response or a stream chunk; logprobs null when not asked for; routing: the
// "moepp_routing" field (routing_json), left out when null.
struct Choice {
  int64_t index = 0;
  std::string text;
  std::string finish_reason;
  nlohmann::json logprobs;
  nlohmann::json routing = nullptr;
};
nlohmann::json completion_json(const std::string& id, int64_t created, const std::string& model, bool chat,
                               const std::vector<Choice>& choices, const Usage& usage);
// One stream chunk of one choice: chat chunks carry {"delta": {...}}; role_chunk adds "role": "assistant".
nlohmann::json chunk_json(const std::string& id, int64_t created, const std::string& model, bool chat,
                          const Choice& choice, bool role_chunk = false);
// The last stream chunk when stream_options.include_usage: "choices": [] and "usage".
nlohmann::json usage_chunk_json(const std::string& id, int64_t created, const std::string& model, bool chat,
                                const Usage& usage);

// A generated token as logprobs show it: its text (UTF-8; a byte that is not a whole character alone
// is written "bytes:\\xNN", as OpenAI does), its bytes, its log-probability and its top alternatives.
struct TokenLogprobJson {
  std::string token;
  std::vector<uint8_t> bytes;
  float logprob = 0.0f;
};
struct TokenLogprobsJson {
  TokenLogprobJson chosen;
  std::vector<TokenLogprobJson> top;
};
// Chat: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.
nlohmann::json chat_logprobs_json(const std::vector<TokenLogprobsJson>& tokens);
// Completions (legacy): {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}; offsets
// are byte offsets into the completion's text, the first token at `offset`.
nlohmann::json completion_logprobs_json(const std::vector<TokenLogprobsJson>& tokens, int64_t offset);

// A generated token as "moepp_routing" shows it: the text it released (its share of the choice's text:
// possibly empty, when held back for a multi-byte character or a possible stop string and released
// with a later token, or for the EOS that ends the reply) and the FFN experts each layer ran for it.
struct TokenRoutingJson {
  std::string text;
  std::vector<int32_t> ffn_experts;  // [n_layers]
};
// {"max_ffn_experts": [per layer], "tokens": [{"text", "ffn_experts": [per layer], "ffn_total"}]}
// (docs/serve.md, "Routing").
nlohmann::json routing_json(const std::vector<TokenRoutingJson>& tokens, const std::vector<int32_t>& max_ffn_experts);

// JSON text (invalid UTF-8, which the tokenizer never produces, would be replaced by U+FFFD).
std::string dump(const nlohmann::json& j);

}  // namespace moepp::serve
