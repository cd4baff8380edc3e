// Chat templates: a checkpoint's own prompt format for chat messages, the Jinja `chat_template` of its
// tokenizer_config.json (as Hugging Face's apply_chat_template renders it), for the subset of Jinja
// that chat templates use (docs/serve.md, "Chat templates"):
//   {{ expr }}, {% if %}/{% elif %}/{% else %}/{% endif %}, {% for x in expr %}/{% endfor %} (with
//   loop.index, index0, revindex, revindex0, first, last, length), {% set name = expr %}, {# comments #},
//   whitespace control {%- -%} {{- -}}, and Hugging Face's settings trim_blocks and lstrip_blocks;
//   expressions: string / integer / true / false / none literals, list literals, names, a.b, a['b'],
//   a[i], a[i:j], + - * / // % ~, == != < > <= >=, in / not in, and / or / not, is [not] defined /
//   undefined / none / string / number / mapping / sequence, `x if c else y`, filters trim, length,
//   count, upper, lower, string, first, last, join, default (d); string methods strip, lstrip, rstrip,
//   upper, lower, startswith, endswith; dict method get; the function raise_exception(message).
// Anything else (macros, namespace(), tojson, ...) is refused when the template is parsed, with the
// file, the line and the construct named. Variables: messages (list of {role, content}), bos_token,
// eos_token, add_generation_prompt; anything undefined is empty and false, as in Jinja.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace moepp {

class Tokenizer;

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

// A template's raise_exception(), or a runtime error of the template (e.g. adding a string to a list):
// the request's messages do not fit the template.
class ChatTemplateError : public Error {
 public:
  using Error::Error;
};

class ChatTemplate {
 public:
  // Parses `source`; throws moepp::Error "<origin>: chat_template line N: ..." for a syntax error or a
  // construct outside the subset.
  ChatTemplate(const std::string& source, const std::string& origin);
  // Renders the conversation; throws ChatTemplateError.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt, const std::string& bos_token,
                     const std::string& eos_token) const;
  struct Node;

 private:
  std::shared_ptr<const std::vector<std::shared_ptr<Node>>> body_;
  std::string origin_;
};

// What a checkpoint's tokenizer_config.json says about chat: its template and the text of its bos and
// eos tokens ("" when the file does not name them).
struct ChatTemplateConfig {
  std::string path;  // the tokenizer_config.json read
  ChatTemplate tmpl;
  std::string bos_token, eos_token;
};

// Reads dir/tokenizer_config.json. std::nullopt when there is no such file or it has no chat_template
// (or only null). chat_template may be a string or a list of {"name", "template"} (the one named
// "default" is used). bos_token / eos_token may be strings or {"content": ...}. Throws moepp::Error
// naming the file for malformed JSON, wrong types, or a template outside the subset.
std::optional<ChatTemplateConfig> load_chat_template(const std::string& dir);

// Tokenises text in which the given special strings (e.g. {"<s>", bos}, {"</s>", eos}) stand for their
// ids, as Hugging Face tokenizers read special tokens in a rendered chat: the text between them is
// encoded as usual (no bos added). Empty special strings are ignored.
std::vector<int32_t> encode_with_specials(const Tokenizer& tok, const std::string& text,
                                          const std::vector<std::pair<std::string, int32_t>>& specials);

}  // namespace moepp
