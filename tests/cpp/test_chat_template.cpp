// Unit tests of the chat-template subset of Jinja (src/tokenizer/chat_template): three real-world
// template shapes written from their formats' documented layouts (Llama-2-chat, ChatML, Mistral-instruct),
// a template laid out on lines (trim_blocks / lstrip_blocks as Hugging Face sets them), the expressions
// of the subset, raise_exception, the refusal of constructs outside the subset (naming the file and the
// line), tokenizer_config.json loading, and encode_with_specials. The expected strings are what Jinja2
// 3.1 renders with Hugging Face's settings (ImmutableSandboxedEnvironment(trim_blocks=True,
// lstrip_blocks=True)); tests/python/test_serve.py renders a template through the server.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "test_util.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_fixtures.h"

namespace moepp {
namespace {

using namespace test;

const std::vector<ChatMessage> kConv = {
    {"system", "Be brief."}, {"user", " Hi there "}, {"assistant", "Hello."}, {"user", "Bye"}};
const std::vector<ChatMessage> kConvNoSystem(kConv.begin() + 1, kConv.end());

std::string render(const std::string& tmpl, const std::vector<ChatMessage>& m, bool gen) {
  return ChatTemplate(tmpl, "test").render(m, gen, "<s>", "</s>");
}

const char* kLlama2 = R"J({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})J";
const char* kChatMl = R"J({%- for message in messages %}
    {{- '<|im_start|>' + message.role + '\n' + message.content | trim + '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)J";
const char* kMistral = R"J({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})J";
const char* kLines = R"J({# A template laid out on lines, as people write them #}
{% for message in messages %}
  {% if message.role == 'system' %}
System: {{ message.content }}
  {% elif message.role == 'user' %}
User: {{ message['content'] }} ({{ loop.index }}/{{ loop.length }}{% if loop.last %}, last{% endif %})
  {% else %}
Assistant: {{ message.content }}{{ eos_token }}
  {% endif %}
{% endfor %}
{% if add_generation_prompt %}
Assistant:
{%- endif %})J";

TEST(ChatTemplate, Llama2Chat) {
  EXPECT_EQ(render(kLlama2, kConv, true),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi there [/INST] Hello. </s><s>[INST] Bye [/INST]");
  EXPECT_EQ(render(kLlama2, kConvNoSystem, false), "<s>[INST] Hi there [/INST] Hello. </s><s>[INST] Bye [/INST]");
}

TEST(ChatTemplate, ChatMl) {
  EXPECT_EQ(render(kChatMl, kConv, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render(kChatMl, kConvNoSystem, false),
            "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
            "<|im_start|>user\nBye<|im_end|>\n");
}

TEST(ChatTemplate, MistralInstructAndRaiseException) {
  EXPECT_EQ(render(kMistral, kConvNoSystem, false), "<s>[INST]  Hi there  [/INST]Hello.</s>[INST] Bye [/INST]");
  try {
    render(kMistral, kConv, true);  // a system message breaks the alternation
    ADD_FAILURE() << "no error";
  } catch (const ChatTemplateError& e) {
    EXPECT_STREQ(e.what(), "Conversation roles must alternate user/assistant/user/assistant/...");
  }
}

TEST(ChatTemplate, LinesWithTrimBlocksAndLstripBlocks) {
  EXPECT_EQ(render(kLines, kConv, true),
            "System: Be brief.\nUser:  Hi there  (2/4)\nAssistant: Hello.</s>\nUser: Bye (4/4, last)\nAssistant:");
  EXPECT_EQ(render(kLines, kConvNoSystem, false),
            "User:  Hi there  (1/3)\nAssistant: Hello.</s>\nUser: Bye (3/3, last)\n");
}

TEST(ChatTemplate, Expressions) {
  const std::string t = R"J({{ 'a' ~ 3 ~ none }}|{{ messages | length }}|{{ messages[-1]['content'] | upper }}|{{ 7 // 2 }},{{ -7 % 3 }}|{{ 'x' if messages[0].role is defined else 'y' }}|{{ foo is defined }}|{{ foo | default('dflt') }}|{{ 'ell' in 'hello' }}|{{ 'b' not in ['a', 'b'] }}|{{ messages[0].get('name', 'anon') }}|{{ ['p', 'q'] | join(', ') }}|{{ (messages[1:] | first).content }}|{{ '  pad  '.rstrip() }}.|{{ 'abc'.startswith('ab') and not 'abc'.endswith('x') }}|{{ [1, 2] + [3] }}|{{ 'x' * 3 if false }})J";
  EXPECT_EQ(render(t, kConv, true), "a3None|4|BYE|3,2|x|False|dflt|True|False|anon|p, q| Hi there |  pad.|True|[1, 2, 3]|");
  EXPECT_EQ(render(t, kConvNoSystem, false), "a3None|3|BYE|3,2|x|False|dflt|True|False|anon|p, q|Hello.|  pad.|True|[1, 2, 3]|");
  // Sets inside a loop body do not leak out of it (Jinja's scoping); undefined prints as nothing.
  EXPECT_EQ(render("{% set x = 'out' %}{% for m in messages %}{% set x = m.role %}{% endfor %}{{ x }}{{ nothing }}", kConv, true),
            "out");
  EXPECT_EQ(render("{{ messages[::-1][0].content }}{{ 'abc'[1:] }}{{ messages[-2:] | length }}", kConv, true), "Byebc2");
}

TEST(ChatTemplate, RuntimeTypeErrorsAreTemplateErrors) {
  EXPECT_THROW(render("{{ messages + 'x' }}", kConv, true), ChatTemplateError);
  // Growth beyond the limits (16 MiB of text, 2^20 list items) is refused, not allocated.
  std::string doubling = "{% set s = 'abcdefgh' %}";
  for (int i = 0; i < 22; ++i) doubling += "{% set s = s + s %}";
  EXPECT_THROW(render(doubling + "{{ s }}", kConv, true), ChatTemplateError);
  std::string lists = "{% set l = [1, 2] %}";
  for (int i = 0; i < 21; ++i) lists += "{% set l = l + l %}";
  EXPECT_THROW(render(lists, kConv, true), ChatTemplateError);
  EXPECT_THROW(render("{{ 1 // 0 }}", kConv, true), ChatTemplateError);
  EXPECT_THROW(render("{% for c in 5 %}{% endfor %}", kConv, true), ChatTemplateError);
}

TEST(ChatTemplate, RefusesWhatIsOutsideTheSubsetNamingFileAndLine) {
  const struct {
    std::string tmpl, message;
  } cases[] = {
      {"{% macro f() %}{% endmacro %}", "f.json: chat_template line 1: the statement '{% macro %}' is outside the supported subset"},
      {"a\nb\n{{ x | tojson }}", "f.json: chat_template line 3: the filter 'tojson' is outside the supported subset"},
      {"{% set ns = namespace(a=1) %}", "line 1: the function 'namespace()' is outside the supported subset"},
      {"{{ x.split(',') }}", "the method 'split()' is outside the supported subset"},
      {"{% for a, b in x %}{% endfor %}", "unpacking"},
      {"{% if x %}", "missing '{% endif %}'"},
      {"{% for x in y %}", "missing '{% endfor %}'"},
      {"{% endfor %}", "'{% endfor %}' without its opening tag"},
      {"{{ x ", "'{{' is never closed"},
      {"{{ 'abc }}", "unterminated string literal"},
      {"{{ 1.5 }}", "floating-point literals"},
      {"{{ x is odd }}", "the test 'is odd'"},
      {"{{ a b }}", "unexpected 'b'"},
      {"{% if a %}{% else %}{% else %}{% endif %}", "a second '{% else %}'"},
      {"{{ " + std::string(300, '(') + "1" + std::string(300, ')') + " }}", "nested more than 200 levels deep"},
      {"{{ " + std::string(300, '-') + "1 }}", "nested more than 200 levels deep"},
      {[] {
         std::string t;
         for (int i = 0; i < 300; ++i) t += "{% if a %}";
         return t;
       }(),
       "nested more than 200 levels deep"},
  };
  for (const auto& c : cases) {
    try {
      ChatTemplate(c.tmpl, "f.json");
      ADD_FAILURE() << "accepted: " << c.tmpl;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what() << "\nwanted: " << c.message;
      EXPECT_EQ(std::string(e.what()).rfind("f.json: chat_template line ", 0), 0u) << e.what();
    }
  }
}

class ChatTemplateFiles : public ScratchDirTest {
 protected:
  ChatTemplateFiles() : ScratchDirTest("moepp_chat_template") {}
};

TEST_F(ChatTemplateFiles, LoadsTokenizerConfig) {
  EXPECT_FALSE(load_chat_template(dir().string()).has_value());  // no file
  write_bytes(path("tokenizer_config.json"), R"({"bos_token": "<s>"})");
  EXPECT_FALSE(load_chat_template(dir().string()).has_value());  // no template
  write_bytes(path("tokenizer_config.json"),
              R"({"chat_template": "{{ bos_token }}[{{ messages[0].content }}]{{ eos_token }}",
                  "bos_token": {"content": "<B>", "lstrip": false}, "eos_token": "<E>"})");
  auto c = load_chat_template(dir().string());
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->path, path("tokenizer_config.json"));
  EXPECT_EQ(c->bos_token, "<B>");
  EXPECT_EQ(c->eos_token, "<E>");
  EXPECT_EQ(c->tmpl.render({{"user", "u"}}, true, c->bos_token, c->eos_token), "<B>[u]<E>");
  write_bytes(path("tokenizer_config.json"),
              R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  EXPECT_EQ(load_chat_template(dir().string())->tmpl.render({}, true, "", ""), "D");
  for (const std::string bad : {R"({"chat_template": 5})", R"({"chat_template": [{"name": "x", "template": "T"}]})",
                                R"({"chat_template": "{% macro m() %}{% endmacro %}"})", R"({"chat_template": "x", "eos_token": 2})",
                                "{oops"}) {
    write_bytes(path("tokenizer_config.json"), bad);
    try {
      load_chat_template(dir().string());
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tokenizer_config.json"), std::string::npos) << e.what();
    }
  }
}

class EncodeWithSpecials : public TrainedTokenizerTest {};

TEST_F(EncodeWithSpecials, SpecialStringsBecomeTheirIds) {
  const Tokenizer& tok = *tok_;
  const std::vector<int32_t> a = tok.encode("[INST] the sea [/INST]");
  const std::vector<int32_t> b = tok.encode("calm");
  std::vector<int32_t> want = {1};
  want.insert(want.end(), a.begin(), a.end());
  want.push_back(2);
  want.insert(want.end(), b.begin(), b.end());
  EXPECT_EQ(encode_with_specials(tok, "<s>[INST] the sea [/INST]</s>calm", {{"<s>", 1}, {"</s>", 2}}), want);
  EXPECT_EQ(encode_with_specials(tok, "calm", {{"", 1}}), b);
  EXPECT_EQ(encode_with_specials(tok, "<s><s>", {{"<s>", 1}}), (std::vector<int32_t>{1, 1}));
  // The longer of two specials found at the same place wins.
  EXPECT_EQ(encode_with_specials(tok, "<|e|>x", {{"<|e", 7}, {"<|e|>", 9}}).front(), 9);
}

}  // namespace
}  // namespace moepp
