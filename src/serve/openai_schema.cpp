// OpenAI-compatible request parsing / validation and response JSON (see openai_schema.h).
#include "serve/openai_schema.h"

#include <cmath>
#include <limits>
#include <set>

namespace moepp::serve {

using nlohmann::json;

namespace {

std::string default_type(int status) {
  if (status == 429) return "rate_limit_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

ApiError bad(const std::string& param, const std::string& message, const std::string& code = "") {
  return ApiError(400, message, param, code);
}

// A parameter's value, or null when absent or JSON null (both mean "default").
const json* get(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

double number(const json& v, const char* key) {
  if (!v.is_number()) throw bad(key, std::string("'") + key + "' must be a number, not " + v.type_name());
  return v.get<double>();
}

int64_t integer(const json& v, const char* key) {
  if (!v.is_number_integer())
    throw bad(key, std::string("'") + key + "' must be an integer, not " +
                       (v.is_number() ? std::string("a fraction") : std::string(v.type_name())));
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw bad(key, std::string("'") + key + "' is too large");
  return v.get<int64_t>();
}

bool boolean(const json& v, const char* key) {
  if (!v.is_boolean()) throw bad(key, std::string("'") + key + "' must be a boolean, not " + v.type_name());
  return v.get<bool>();
}

std::string string(const json& v, const char* key) {
  if (!v.is_string()) throw bad(key, std::string("'") + key + "' must be a string, not " + v.type_name());
  return v.get<std::string>();
}

std::string fmt(double x) {
  json j = x;
  return j.dump();
}

double in_range(const json& j, const char* key, double lo, double hi, bool lo_open, double def) {
  const json* v = get(j, key);
  if (!v) return def;
  const double x = number(*v, key);
  if (!std::isfinite(x) || x < lo || x > hi || (lo_open && x == lo))
    throw bad(key, std::string("'") + key + "' is " + fmt(x) + ", outside " + (lo_open ? "(" : "[") + fmt(lo) +
                       ", " + fmt(hi) + "]");
  return x;
}

// Integers as int32 token ids. Their range [0, vocab) is checked once, by the engine's submit().
std::vector<int32_t> token_ids(const json& a, const char* key) {
  constexpr int64_t lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
  std::vector<int32_t> ids;
  for (const json& t : a) {
    const bool fits = t.is_number_unsigned() ? t.get<uint64_t>() <= static_cast<uint64_t>(hi)
                                             : t.is_number_integer() && t.get<int64_t>() >= lo && t.get<int64_t>() <= hi;
    if (!fits) throw bad(key, std::string("'") + key + "': token ids must be integers (32-bit)");
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return ids;
}

void parse_prompt(const json& v, CompletionRequest& r) {
  if (v.is_string()) {
    r.prompt = v.get<std::string>();
    return;
  }
  if (!v.is_array() || v.empty())
    throw bad("prompt", "'prompt' must be a string, a list of one string, or a non-empty list of token ids");
  if (v[0].is_string()) {
    if (v.size() != 1 || !v[0].is_string())
      throw bad("prompt", "'prompt': only one prompt per request is supported (n = 1)");
    r.prompt = v[0].get<std::string>();
  } else if (v[0].is_array()) {
    if (v.size() != 1) throw bad("prompt", "'prompt': only one prompt per request is supported (n = 1)");
    if (v[0].empty()) throw bad("prompt", "'prompt': the list of token ids is empty");
    r.prompt_ids = token_ids(v[0], "prompt");
  } else {
    r.prompt_ids = token_ids(v, "prompt");
  }
}

std::string message_content(const json& c, size_t i) {
  const std::string where = "messages[" + std::to_string(i) + "].content";
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) throw bad("messages", "'" + where + "' must be a string or a list of text parts");
  std::string text;
  for (const json& part : c) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
        !part["text"].is_string())
      throw bad("messages", "'" + where + "': only parts {\"type\": \"text\", \"text\": ...} are supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

void parse_messages(const json& v, CompletionRequest& r) {
  if (!v.is_array() || v.empty()) throw bad("messages", "'messages' must be a non-empty list of messages");
  for (size_t i = 0; i < v.size(); ++i) {
    const json& m = v[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw bad("messages", "'" + where + "' must be an object");
    for (const auto& [k, x] : m.items())
      if (k != "role" && k != "content" && k != "name")
        throw bad("messages", "'" + where + "': unsupported field '" + k + "'");
    if (!m.contains("role") || !m["role"].is_string()) throw bad("messages", "'" + where + ".role' is required");
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant")
      throw bad("messages", "'" + where + ".role' must be system, user or assistant (got '" + role + "')");
    if (!m.contains("content") || m["content"].is_null()) throw bad("messages", "'" + where + ".content' is required");
    if (m.contains("name") && !m["name"].is_string()) throw bad("messages", "'" + where + ".name' must be a string");
    r.messages.push_back({role, message_content(m["content"], i)});
  }
}

void parse_stop(const json& v, CompletionRequest& r) {
  if (v.is_string()) {
    r.stop = {v.get<std::string>()};
  } else if (v.is_array()) {
    if (v.size() > 4) throw bad("stop", "'stop' holds at most 4 strings");
    for (const json& s : v) {
      if (!s.is_string()) throw bad("stop", "'stop' must be a string or a list of strings");
      r.stop.push_back(s.get<std::string>());
    }
  } else {
    throw bad("stop", "'stop' must be a string or a list of strings");
  }
  for (const std::string& s : r.stop)
    if (s.empty()) throw bad("stop", "'stop' strings must not be empty");
}

}  // namespace

ApiError::ApiError(int status_, const std::string& message, std::string param_, std::string code_, std::string type_)
    : Error(message),
      status(status_),
      type(type_.empty() ? default_type(status_) : std::move(type_)),
      param(std::move(param_)),
      code(std::move(code_)) {}

json ApiError::to_json() const {
  json e = {{"message", what()}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return json{{"error", e}};
}

CompletionRequest parse_completion_request(const std::string& body, bool chat) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    throw ApiError(400, std::string("We could not parse the JSON body of your request: ") + e.what(), "",
                   "invalid_json");
  }
  if (!j.is_object()) throw ApiError(400, "The request body must be a JSON object", "", "invalid_json");

  static const std::set<std::string> common = {
      "model",     "max_tokens", "temperature",    "top_p",  "top_k",          "min_p",
      "seed",      "stop",       "stream",         "n",      "stream_options", "repetition_penalty",
      "user",      "ignore_eos", "presence_penalty", "frequency_penalty", "logprobs", "logit_bias",
      "moepp_routing"};
  static const std::set<std::string> completion_only = {"prompt", "echo", "best_of", "suffix"};
  static const std::set<std::string> chat_only = {"messages", "max_completion_tokens", "top_logprobs"};
  for (const auto& [k, v] : j.items()) {
    if (!common.count(k) && !(chat ? chat_only : completion_only).count(k))
      throw ApiError(400, "Unrecognized request argument supplied: " + k, k, "unknown_parameter");
  }

  CompletionRequest r;
  r.chat = chat;
  if (const json* v = get(j, "model")) r.model = string(*v, "model");
  if (chat) {
    const json* v = get(j, "messages");
    if (!v) throw bad("messages", "'messages' is a required property");
    parse_messages(*v, r);
  } else {
    const json* v = get(j, "prompt");
    if (!v) throw bad("prompt", "'prompt' is a required property");
    parse_prompt(*v, r);
  }

  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (const json* v = get(j, key)) {
      const int64_t n = integer(*v, key);
      if (n < 1) throw bad(key, std::string("'") + key + "' must be at least 1 (got " + std::to_string(n) + ")");
      r.max_tokens = n;
    }
  }
  r.sampling.temperature = static_cast<float>(in_range(j, "temperature", 0.0, 2.0, false, 1.0));
  r.sampling.top_p = static_cast<float>(in_range(j, "top_p", 0.0, 1.0, true, 1.0));
  r.sampling.min_p = static_cast<float>(in_range(j, "min_p", 0.0, 1.0, false, 0.0));
  r.sampling.repetition_penalty = static_cast<float>(in_range(j, "repetition_penalty", 0.0, 10.0, true, 1.0));
  if (const json* v = get(j, "top_k")) {
    const int64_t k = integer(*v, "top_k");
    if (k < -1) throw bad("top_k", "'top_k' must be -1 or 0 (off) or a positive integer (got " + std::to_string(k) + ")");
    r.sampling.top_k = k < 0 ? 0 : k;
  }
  if (const json* v = get(j, "seed")) {
    if (!v->is_number_integer()) throw bad("seed", "'seed' must be an integer");
    r.sampling.seed = v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
    r.seed_given = true;
  }
  if (const json* v = get(j, "stop")) parse_stop(*v, r);
  if (const json* v = get(j, "stream")) r.stream = boolean(*v, "stream");
  if (const json* v = get(j, "stream_options")) {
    if (!r.stream)
      throw bad("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled");
    if (!v->is_object()) throw bad("stream_options", "'stream_options' must be an object");
    for (const auto& [k, x] : v->items()) {
      if (k != "include_usage") throw bad("stream_options", "'stream_options': unsupported field '" + k + "'");
      r.include_usage = boolean(x, "stream_options.include_usage");
    }
  }
  if (const json* v = get(j, "ignore_eos")) r.ignore_eos = boolean(*v, "ignore_eos");
  if (const json* v = get(j, "moepp_routing")) r.routing = boolean(*v, "moepp_routing");
  if (const json* v = get(j, "user")) string(*v, "user");

  if (const json* v = get(j, "n")) {
    r.n = integer(*v, "n");
    if (r.n < 1 || r.n > kMaxChoices)
      throw bad("n", "'n' must be in [1, " + std::to_string(kMaxChoices) + "] (got " + std::to_string(r.n) + ")");
  }
  r.sampling.presence_penalty = static_cast<float>(in_range(j, "presence_penalty", -2.0, 2.0, false, 0.0));
  r.sampling.frequency_penalty = static_cast<float>(in_range(j, "frequency_penalty", -2.0, 2.0, false, 0.0));
  if (chat) {
    const json* lp = get(j, "logprobs");
    const bool on = lp && boolean(*lp, "logprobs");
    if (const json* v = get(j, "top_logprobs")) {
      const int64_t k = integer(*v, "top_logprobs");
      if (k < 0 || k > 20) throw bad("top_logprobs", "'top_logprobs' must be in [0, 20] (got " + std::to_string(k) + ")");
      if (!on && k > 0) throw bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
      if (on) r.logprobs = k;
    } else if (on) {
      r.logprobs = 0;
    }
  } else if (const json* v = get(j, "logprobs"); v && !(v->is_boolean() && !v->get<bool>())) {  // false: off
    const int64_t k = integer(*v, "logprobs");
    if (k < 0 || k > 5) throw bad("logprobs", "'logprobs' must be in [0, 5] (got " + std::to_string(k) + ")");
    r.logprobs = k;
  }

  // Accepted only at the value that means "off" (or, best_of, the one that changes nothing).
  if (const json* v = get(j, "best_of"); v && integer(*v, "best_of") != r.n)
    throw bad("best_of", "'best_of' must equal 'n' (the server does not rank choices)");
  if (const json* v = get(j, "echo"); v && boolean(*v, "echo")) throw bad("echo", "'echo' is not supported");
  if (const json* v = get(j, "suffix"); v && !(v->is_string() && v->get<std::string>().empty()))
    throw bad("suffix", "'suffix' is not supported");
  if (const json* v = get(j, "logit_bias"); v && !(v->is_object() && v->empty()))
    throw bad("logit_bias", "'logit_bias' is not supported");
  return r;
}

std::string chat_prompt(const std::vector<ChatMessage>& messages) {
  std::string s;
  for (const ChatMessage& m : messages) {
    const char* role = m.role == "system" ? "System" : m.role == "user" ? "User" : "Assistant";
    s += role;
    s += ": ";
    s += m.content;
    s += "\n";
  }
  return s + "Assistant:";
}

json usage_json(const Usage& u) {
  return json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

static json reason_json(const std::string& r) { return r.empty() ? json(nullptr) : json(r); }

json completion_json(const std::string& id, int64_t created, const std::string& model, bool chat,
                     const std::vector<Choice>& choices, const Usage& usage) {
  json out = json::array();
  for (const Choice& c : choices) {
    json choice = {{"index", c.index}};
    if (chat)
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    else
      choice["text"] = c.text;
    choice["logprobs"] = c.logprobs;
    choice["finish_reason"] = reason_json(c.finish_reason);
    if (!c.routing.is_null()) choice["moepp_routing"] = c.routing;
    out.push_back(std::move(choice));
  }
  return json{{"id", id},
              {"object", chat ? "chat.completion" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", std::move(out)},
              {"usage", usage_json(usage)}};
}

json chunk_json(const std::string& id, int64_t created, const std::string& model, bool chat, const Choice& c,
                bool role_chunk) {
  json choice = {{"index", c.index}};
  if (chat) {
    json delta = json::object();
    if (role_chunk) delta["role"] = "assistant";
    if (role_chunk || !c.text.empty()) delta["content"] = c.text;
    choice["delta"] = delta;
  } else {
    choice["text"] = c.text;
  }
  choice["logprobs"] = c.logprobs;
  choice["finish_reason"] = reason_json(c.finish_reason);
  if (!c.routing.is_null()) choice["moepp_routing"] = c.routing;
  return json{{"id", id},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", json::array({choice})}};
}

json usage_chunk_json(const std::string& id, int64_t created, const std::string& model, bool chat,
                      const Usage& usage) {
  return json{{"id", id},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", json::array()},
              {"usage", usage_json(usage)}};
}

static json token_json(const TokenLogprobJson& t) {
  return json{{"token", t.token}, {"logprob", t.logprob}, {"bytes", t.bytes}};
}

json chat_logprobs_json(const std::vector<TokenLogprobsJson>& tokens) {
  json content = json::array();
  for (const TokenLogprobsJson& t : tokens) {
    json e = token_json(t.chosen);
    e["top_logprobs"] = json::array();
    for (const TokenLogprobJson& a : t.top) e["top_logprobs"].push_back(token_json(a));
    content.push_back(std::move(e));
  }
  return json{{"content", std::move(content)}};
}

json completion_logprobs_json(const std::vector<TokenLogprobsJson>& tokens, int64_t offset) {
  json toks = json::array(), lps = json::array(), tops = json::array(), offs = json::array();
  for (const TokenLogprobsJson& t : tokens) {
    toks.push_back(t.chosen.token);
    lps.push_back(t.chosen.logprob);
    json top = json::object();
    for (const TokenLogprobJson& a : t.top)
      if (!top.contains(a.token)) top[a.token] = a.logprob;  // two tokens of the same text: the likelier
    tops.push_back(std::move(top));
    offs.push_back(offset);
    offset += static_cast<int64_t>(t.chosen.bytes.size());
  }
  return json{{"tokens", std::move(toks)}, {"token_logprobs", std::move(lps)}, {"top_logprobs", std::move(tops)},
              {"text_offset", std::move(offs)}};
}

json routing_json(const std::vector<TokenRoutingJson>& tokens, const std::vector<int32_t>& max_ffn_experts) {
  json toks = json::array();
  for (const TokenRoutingJson& t : tokens) {
    int64_t total = 0;
    for (int32_t n : t.ffn_experts) total += n;
    toks.push_back(json{{"text", t.text}, {"ffn_experts", t.ffn_experts}, {"ffn_total", total}});
  }
  return json{{"max_ffn_experts", max_ffn_experts}, {"tokens", std::move(toks)}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace moepp::serve
