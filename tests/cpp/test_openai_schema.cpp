// Unit tests of the OpenAI request and response schema of `moepp serve` (src/serve/openai_schema): the
// defaults of completion and chat requests, every prompt and message form, every parameter read (n,
// logprobs, the penalties included), the values that mean "off" for the unsupported ones, and one case per refused body (malformed JSON,
// unknown parameter, wrong type, out-of-range value) as a 400 ApiError whose param names the field;
// the error object, the chat template, the response and stream-chunk JSON, and the "moepp_routing"
// extension. The same rules over
// HTTP are tests/python/test_serve.py.
#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "serve/openai_schema.h"

namespace moepp::serve {
namespace {

using nlohmann::json;

CompletionRequest completion(const json& body) { return parse_completion_request(body.dump(), false); }
CompletionRequest chat(const json& body) { return parse_completion_request(body.dump(), true); }

const json kUserHello = json::array({{{"role", "user"}, {"content", "Hello"}}});

void expect_sampling(const SamplingParams& s, float temperature, float top_p, int64_t top_k, float min_p,
                     float repetition_penalty) {
  EXPECT_FLOAT_EQ(s.temperature, temperature);
  EXPECT_FLOAT_EQ(s.top_p, top_p);
  EXPECT_EQ(s.top_k, top_k);
  EXPECT_FLOAT_EQ(s.min_p, min_p);
  EXPECT_FLOAT_EQ(s.repetition_penalty, repetition_penalty);
}

// The ApiError that parsing `body` throws (a failure, and an error without a status, when none).
ApiError parse_error(const std::string& body, bool is_chat) {
  try {
    parse_completion_request(body, is_chat);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << body;
  return ApiError(0, "");
}

TEST(ParseCompletionRequest, CompletionDefaults) {
  const CompletionRequest r = completion({{"prompt", "The ship"}});
  EXPECT_FALSE(r.chat);
  EXPECT_EQ(r.model, "");
  EXPECT_EQ(r.prompt, "The ship");
  EXPECT_TRUE(r.prompt_ids.empty());
  EXPECT_TRUE(r.messages.empty());
  EXPECT_FALSE(r.max_tokens.has_value());
  expect_sampling(r.sampling, 1.0f, 1.0f, 0, 0.0f, 1.0f);
  EXPECT_FALSE(r.seed_given);
  EXPECT_TRUE(r.stop.empty());
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.include_usage);
  EXPECT_FALSE(r.ignore_eos);
}

TEST(ParseCompletionRequest, ChatDefaults) {
  const CompletionRequest r = chat({{"messages", kUserHello}});
  EXPECT_TRUE(r.chat);
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].role, "user");
  EXPECT_EQ(r.messages[0].content, "Hello");
  EXPECT_EQ(r.prompt, "");
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_FALSE(r.seed_given);
  EXPECT_FALSE(r.stream);
}

TEST(ParseCompletionRequest, NullMeansTheDefault) {
  const CompletionRequest r =
      completion({{"prompt", "a"},   {"model", nullptr}, {"max_tokens", nullptr}, {"temperature", nullptr},
                  {"top_k", nullptr}, {"seed", nullptr},  {"stop", nullptr},       {"stream", nullptr},
                  {"n", nullptr},     {"echo", nullptr},  {"logit_bias", nullptr}});
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_FALSE(r.seed_given);
  EXPECT_TRUE(r.stop.empty());
  EXPECT_FALSE(r.stream);
}

TEST(ParseCompletionRequest, PromptForms) {
  EXPECT_EQ(completion({{"prompt", json::array({"one string"})}}).prompt, "one string");
  const std::vector<int32_t> ids = {1, 0, 2147483647};
  EXPECT_EQ(completion({{"prompt", ids}}).prompt_ids, ids);
  const CompletionRequest nested = completion({{"prompt", json::array({ids})}});
  EXPECT_EQ(nested.prompt_ids, ids);
  EXPECT_EQ(nested.prompt, "");
  EXPECT_EQ(completion({{"prompt", ""}}).prompt, "");  // an empty text is the engine's to refuse
}

TEST(ParseCompletionRequest, ChatMessageForms) {
  const json messages = json::array({
      {{"role", "developer"}, {"content", "Be brief."}},
      {{"role", "system"}, {"content", "S"}, {"name", "ops"}},
      {{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "Hel"}}, {{"type", "text"}, {"text", "lo"}}})}},
      {{"role", "assistant"}, {"content", json::array()}},
  });
  const CompletionRequest r = chat({{"messages", messages}});
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0].role, "system");  // developer is read as system
  EXPECT_EQ(r.messages[0].content, "Be brief.");
  EXPECT_EQ(r.messages[1].role, "system");
  EXPECT_EQ(r.messages[2].role, "user");
  EXPECT_EQ(r.messages[2].content, "Hello");  // text parts joined
  EXPECT_EQ(r.messages[3].role, "assistant");
  EXPECT_EQ(r.messages[3].content, "");
}

TEST(ParseCompletionRequest, ReadsEveryParameter) {
  const CompletionRequest r = completion({{"prompt", "a"},
                                          {"model", "slice"},
                                          {"max_tokens", 32},
                                          {"temperature", 0.5},
                                          {"top_p", 0.9},
                                          {"top_k", 40},
                                          {"min_p", 0.05},
                                          {"repetition_penalty", 1.3},
                                          {"seed", 42},
                                          {"stop", json::array({"\n", "END"})},
                                          {"stream", true},
                                          {"stream_options", {{"include_usage", true}}},
                                          {"ignore_eos", true},
                                          {"user", "someone"}});
  EXPECT_EQ(r.model, "slice");
  EXPECT_EQ(r.max_tokens, std::optional<int64_t>(32));
  expect_sampling(r.sampling, 0.5f, 0.9f, 40, 0.05f, 1.3f);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.sampling.seed, 42u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.ignore_eos);

  // The edges of the ranges are accepted; top_k -1 is off like 0; a single stop string is a list of one.
  const CompletionRequest edges = completion({{"prompt", "a"},
                                              {"temperature", 0},
                                              {"top_p", 1},
                                              {"min_p", 1},
                                              {"repetition_penalty", 10},
                                              {"top_k", -1},
                                              {"stop", "x"},
                                              {"seed", 18446744073709551615u}});
  expect_sampling(edges.sampling, 0.0f, 1.0f, 0, 1.0f, 10.0f);
  EXPECT_EQ(edges.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(edges.sampling.seed, 18446744073709551615u);
  EXPECT_EQ(completion({{"prompt", "a"}, {"temperature", 2}}).sampling.temperature, 2.0f);

  // Chat: max_completion_tokens is max_tokens.
  EXPECT_EQ(chat({{"messages", kUserHello}, {"max_completion_tokens", 7}}).max_tokens, std::optional<int64_t>(7));
  EXPECT_EQ(chat({{"messages", kUserHello}, {"max_tokens", 9}}).max_tokens, std::optional<int64_t>(9));
}

TEST(ParseCompletionRequest, AcceptsUnsupportedParametersAtTheirOffValue) {
  EXPECT_NO_THROW(completion({{"prompt", "a"},
                              {"n", 1},
                              {"best_of", 1},
                              {"echo", false},
                              {"suffix", ""},
                              {"logit_bias", json::object()}}));
  const CompletionRequest c = chat({{"messages", kUserHello}, {"logprobs", false}, {"top_logprobs", 0}, {"n", 1}});
  EXPECT_EQ(c.logprobs, -1);
  EXPECT_EQ(completion({{"prompt", "a"}, {"logprobs", false}}).logprobs, -1);
}

TEST(ParseCompletionRequest, ChoicesLogprobsAndPenalties) {
  const CompletionRequest d = completion({{"prompt", "a"}});
  EXPECT_EQ(d.n, 1);
  EXPECT_EQ(d.logprobs, -1);
  EXPECT_EQ(d.sampling.presence_penalty, 0.0f);
  EXPECT_EQ(d.sampling.frequency_penalty, 0.0f);
  const CompletionRequest r = completion({{"prompt", "a"}, {"n", 16}, {"best_of", 16}, {"logprobs", 5},
                                          {"presence_penalty", -2}, {"frequency_penalty", 1.5}});
  EXPECT_EQ(r.n, 16);
  EXPECT_EQ(r.logprobs, 5);
  EXPECT_FLOAT_EQ(r.sampling.presence_penalty, -2.0f);
  EXPECT_FLOAT_EQ(r.sampling.frequency_penalty, 1.5f);
  EXPECT_EQ(completion({{"prompt", "a"}, {"logprobs", 0}}).logprobs, 0);
  EXPECT_EQ(chat({{"messages", kUserHello}, {"logprobs", true}}).logprobs, 0);
  EXPECT_EQ(chat({{"messages", kUserHello}, {"logprobs", true}, {"top_logprobs", 20}, {"n", 3}}).logprobs, 20);
  const struct {
    bool is_chat;
    json body;
    std::string param;
  } bad[] = {{false, {{"prompt", "a"}, {"n", 0}}, "n"},
             {false, {{"prompt", "a"}, {"n", 17}}, "n"},
             {true, {{"messages", kUserHello}, {"n", 1.5}}, "n"},
             {false, {{"prompt", "a"}, {"n", 2}, {"best_of", 3}}, "best_of"},
             {false, {{"prompt", "a"}, {"logprobs", 6}}, "logprobs"},
             {false, {{"prompt", "a"}, {"logprobs", -1}}, "logprobs"},
             {false, {{"prompt", "a"}, {"logprobs", true}}, "logprobs"},
             {true, {{"messages", kUserHello}, {"logprobs", 1}}, "logprobs"},
             {true, {{"messages", kUserHello}, {"logprobs", true}, {"top_logprobs", 21}}, "top_logprobs"},
             {true, {{"messages", kUserHello}, {"logprobs", true}, {"top_logprobs", -1}}, "top_logprobs"},
             {true, {{"messages", kUserHello}, {"top_logprobs", 2}}, "top_logprobs"},
             {false, {{"prompt", "a"}, {"presence_penalty", 2.5}}, "presence_penalty"},
             {true, {{"messages", kUserHello}, {"frequency_penalty", -2.01}}, "frequency_penalty"},
             {true, {{"messages", kUserHello}, {"frequency_penalty", "1"}}, "frequency_penalty"}};
  for (const auto& b : bad) {
    const ApiError e = parse_error(b.body.dump(), b.is_chat);
    EXPECT_EQ(e.status, 400) << b.body;
    EXPECT_EQ(e.param, b.param) << b.body;
  }
}

TEST(ParseCompletionRequest, MalformedBodiesAndUnknownParameters) {
  for (const std::string body : {"{not json", "", "[1, 2]", "\"text\""}) {
    const ApiError e = parse_error(body, false);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.code, "invalid_json") << body;
    EXPECT_EQ(e.param, "") << body;
    EXPECT_EQ(e.type, "invalid_request_error") << body;
  }
  // Unknown here: a misspelt key, and each endpoint's own keys on the other one.
  const struct {
    bool is_chat;
    json body;
    std::string param;
  } unknown[] = {{false, {{"prompt", "a"}, {"temprature", 1}}, "temprature"},
                 {false, {{"prompt", "a"}, {"messages", kUserHello}}, "messages"},
                 {false, {{"prompt", "a"}, {"max_completion_tokens", 3}}, "max_completion_tokens"},
                 {true, {{"messages", kUserHello}, {"prompt", "x"}}, "prompt"},
                 {true, {{"messages", kUserHello}, {"echo", false}}, "echo"}};
  for (const auto& u : unknown) {
    const ApiError e = parse_error(u.body.dump(), u.is_chat);
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, u.param);
    EXPECT_EQ(e.code, "unknown_parameter");
    EXPECT_EQ(std::string(e.what()), "Unrecognized request argument supplied: " + u.param);
  }
}

TEST(ParseCompletionRequest, RejectsWrongTypesAndOutOfRangeValuesNamingTheField) {
  struct Case {
    bool is_chat;
    json body;
    std::string param, message;  // message: a part of the error message
  };
  const json p = "a";  // a valid prompt
  const std::vector<Case> cases = {
      // Required fields and their forms.
      {false, {{"max_tokens", 3}}, "prompt", "'prompt' is a required property"},
      {false, {{"prompt", 7}}, "prompt", "'prompt' must be a string, a list of one string, or a non-empty list"},
      {false, {{"prompt", json::array()}}, "prompt", "'prompt' must be a string"},
      {false, {{"prompt", {"a", "b"}}}, "prompt", "only one prompt per request"},
      {false, {{"prompt", {{1}, {2}}}}, "prompt", "only one prompt per request"},
      {false, {{"prompt", {json::array()}}}, "prompt", "the list of token ids is empty"},
      // Ids are only converted here; their range is checked once, by Engine::submit (engine.h).
      {false, {{"prompt", {1, 2.5}}}, "prompt", "token ids must be integers (32-bit)"},
      {false, {{"prompt", {1, 2147483648}}}, "prompt", "token ids must be integers (32-bit)"},
      {true, {{"max_tokens", 3}}, "messages", "'messages' is a required property"},
      {true, {{"messages", json::array()}}, "messages", "'messages' must be a non-empty list"},
      {true, {{"messages", "Hello"}}, "messages", "'messages' must be a non-empty list"},
      {true, {{"messages", {5}}}, "messages", "'messages[0]' must be an object"},
      {true, {{"messages", {{{"role", "user"}, {"content", "a"}, {"tool", 1}}}}}, "messages",
       "'messages[0]': unsupported field 'tool'"},
      {true, {{"messages", {{{"content", "a"}}}}}, "messages", "'messages[0].role' is required"},
      {true, {{"messages", {{{"role", 1}, {"content", "a"}}}}}, "messages", "'messages[0].role' is required"},
      {true, {{"messages", {{{"role", "user"}, {"content", "a"}}, {{"role", "robot"}, {"content", "b"}}}}}, "messages",
       "'messages[1].role' must be system, user or assistant (got 'robot')"},
      {true, {{"messages", {{{"role", "user"}}}}}, "messages", "'messages[0].content' is required"},
      {true, {{"messages", {{{"role", "user"}, {"content", nullptr}}}}}, "messages", "'messages[0].content' is required"},
      {true, {{"messages", {{{"role", "user"}, {"content", 3}}}}}, "messages",
       "'messages[0].content' must be a string or a list of text parts"},
      {true, {{"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}, {"image_url", "x"}}}}}}}},
       "messages", "'messages[0].content': only parts {\"type\": \"text\", \"text\": ...} are supported"},
      {true, {{"messages", {{{"role", "user"}, {"content", "a"}, {"name", 5}}}}}, "messages",
       "'messages[0].name' must be a string"},
      // Types.
      {false, {{"prompt", p}, {"model", 5}}, "model", "'model' must be a string, not number"},
      {false, {{"prompt", p}, {"temperature", "hot"}}, "temperature", "'temperature' must be a number, not string"},
      {false, {{"prompt", p}, {"max_tokens", "ten"}}, "max_tokens", "'max_tokens' must be an integer, not string"},
      {false, {{"prompt", p}, {"max_tokens", 1.5}}, "max_tokens", "'max_tokens' must be an integer, not a fraction"},
      {false, {{"prompt", p}, {"top_k", 1.5}}, "top_k", "'top_k' must be an integer, not a fraction"},
      {false, {{"prompt", p}, {"seed", "x"}}, "seed", "'seed' must be an integer"},
      {false, {{"prompt", p}, {"seed", 1.5}}, "seed", "'seed' must be an integer"},
      {false, {{"prompt", p}, {"stop", 5}}, "stop", "'stop' must be a string or a list of strings"},
      {false, {{"prompt", p}, {"stop", {"a", 1}}}, "stop", "'stop' must be a string or a list of strings"},
      {false, {{"prompt", p}, {"stream", "yes"}}, "stream", "'stream' must be a boolean, not string"},
      {false, {{"prompt", p}, {"ignore_eos", 1}}, "ignore_eos", "'ignore_eos' must be a boolean, not number"},
      {false, {{"prompt", p}, {"user", 5}}, "user", "'user' must be a string"},
      {false, {{"prompt", p}, {"stream", true}, {"stream_options", json::array()}}, "stream_options",
       "'stream_options' must be an object"},
      {false, {{"prompt", p}, {"stream", true}, {"stream_options", {{"include_usage", 1}}}},
       "stream_options.include_usage", "'stream_options.include_usage' must be a boolean"},
      // Ranges.
      {false, {{"prompt", p}, {"max_tokens", 0}}, "max_tokens", "'max_tokens' must be at least 1 (got 0)"},
      {false, {{"prompt", p}, {"max_tokens", 18446744073709551615u}}, "max_tokens", "'max_tokens' is too large"},
      {true, {{"messages", kUserHello}, {"max_completion_tokens", -2}}, "max_completion_tokens",
       "'max_completion_tokens' must be at least 1 (got -2)"},
      {false, {{"prompt", p}, {"temperature", -0.5}}, "temperature", "'temperature' is -0.5, outside [0.0, 2.0]"},
      {false, {{"prompt", p}, {"temperature", 2.5}}, "temperature", "'temperature' is 2.5, outside [0.0, 2.0]"},
      {false, {{"prompt", p}, {"top_p", 0}}, "top_p", "'top_p' is 0.0, outside (0.0, 1.0]"},
      {false, {{"prompt", p}, {"top_p", 1.5}}, "top_p", "'top_p' is 1.5, outside (0.0, 1.0]"},
      {false, {{"prompt", p}, {"min_p", -0.1}}, "min_p", "'min_p' is -0.1, outside [0.0, 1.0]"},
      {false, {{"prompt", p}, {"min_p", 1.5}}, "min_p", "'min_p' is 1.5, outside [0.0, 1.0]"},
      {false, {{"prompt", p}, {"repetition_penalty", 0}}, "repetition_penalty",
       "'repetition_penalty' is 0.0, outside (0.0, 10.0]"},
      {false, {{"prompt", p}, {"repetition_penalty", 10.5}}, "repetition_penalty",
       "'repetition_penalty' is 10.5, outside (0.0, 10.0]"},
      {false, {{"prompt", p}, {"top_k", -3}}, "top_k", "'top_k' must be -1 or 0 (off) or a positive integer (got -3)"},
      {false, {{"prompt", p}, {"stop", {"a", "b", "c", "d", "e"}}}, "stop", "'stop' holds at most 4 strings"},
      {false, {{"prompt", p}, {"stop", ""}}, "stop", "'stop' strings must not be empty"},
      {false, {{"prompt", p}, {"stop", {"a", ""}}}, "stop", "'stop' strings must not be empty"},
      {false, {{"prompt", p}, {"stream_options", {{"include_usage", true}}}}, "stream_options",
       "only allowed when 'stream' is enabled"},
      {false, {{"prompt", p}, {"stream", true}, {"stream_options", {{"continuous_usage_stats", true}}}},
       "stream_options", "'stream_options': unsupported field 'continuous_usage_stats'"},
      // Unsupported parameters at a value other than "off".
      {false, {{"prompt", p}, {"n", 17}}, "n", "'n' must be in [1, 16] (got 17)"},
      {false, {{"prompt", p}, {"n", "1"}}, "n", "'n' must be an integer"},
      {false, {{"prompt", p}, {"best_of", 3}}, "best_of", "'best_of' must equal 'n'"},
      {false, {{"prompt", p}, {"echo", true}}, "echo", "'echo' is not supported"},
      {false, {{"prompt", p}, {"suffix", "end"}}, "suffix", "'suffix' is not supported"},
      {false, {{"prompt", p}, {"presence_penalty", 2.5}}, "presence_penalty",
       "'presence_penalty' is 2.5, outside [-2.0, 2.0]"},
      {false, {{"prompt", p}, {"logprobs", 6}}, "logprobs", "'logprobs' must be in [0, 5] (got 6)"},
      {true, {{"messages", kUserHello}, {"logprobs", 1}}, "logprobs", "'logprobs' must be a boolean"},
      {true, {{"messages", kUserHello}, {"top_logprobs", 2}}, "top_logprobs", "'top_logprobs' needs 'logprobs': true"},
      {false, {{"prompt", p}, {"logit_bias", {{"50256", -100}}}}, "logit_bias", "'logit_bias' is not supported"},
  };
  for (const Case& c : cases) {
    const ApiError e = parse_error(c.body.dump(), c.is_chat);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << ": " << e.what();
    EXPECT_EQ(e.type, "invalid_request_error") << c.body;
    EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos)
        << c.body << ": " << e.what() << "\nmissing: " << c.message;
  }
}

TEST(ApiError, ObjectAndDefaultTypes) {
  EXPECT_EQ(ApiError(400, "bad value", "temperature").to_json(),
            json::parse(R"({"error": {"message": "bad value", "type": "invalid_request_error",
                                      "param": "temperature", "code": null}})"));
  const ApiError busy(429, "busy", "", "queue_full");
  EXPECT_EQ(busy.to_json(), json::parse(R"({"error": {"message": "busy", "type": "rate_limit_error",
                                                      "param": null, "code": "queue_full"}})"));
  EXPECT_EQ(ApiError(500, "x").type, "server_error");
  EXPECT_EQ(ApiError(404, "x").type, "invalid_request_error");
  EXPECT_EQ(ApiError(400, "x", "", "", "custom").type, "custom");
}

TEST(ChatPrompt, OneLinePerMessageThenTheAssistantTurn) {
  EXPECT_EQ(chat_prompt({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}}),
            "System: Be brief.\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:");
  EXPECT_EQ(chat_prompt({}), "Assistant:");
  EXPECT_EQ(std::string(kChatStop), "\nUser:");
}

TEST(OpenaiSchema, ResponseBodies) {
  const Usage u{3, 2};
  EXPECT_EQ(usage_json(u), json::parse(R"({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})"));
  EXPECT_EQ(completion_json("cmpl-1", 7, "m", false, {Choice{0, " sailed", "length", nullptr}}, u),
            json::parse(R"({"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m",
                            "choices": [{"index": 0, "text": " sailed", "logprobs": null, "finish_reason": "length"}],
                            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})"));
  const json c = completion_json("chatcmpl-2", 7, "m", true, {Choice{0, "Hi", "", nullptr}, Choice{1, "Yo", "stop", nullptr}}, u);
  EXPECT_EQ(c["object"], "chat.completion");
  EXPECT_EQ(c["choices"][0]["message"], json::parse(R"({"role": "assistant", "content": "Hi"})"));
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());  // "" is null
  EXPECT_FALSE(c["choices"][0].contains("text"));
  EXPECT_EQ(c["choices"][1]["index"], 1);
  EXPECT_EQ(c["choices"][1]["message"]["content"], "Yo");
}

TEST(OpenaiSchema, LogprobsShapes) {
  TokenLogprobsJson a;
  a.chosen = {" sea", {' ', 's', 'e', 'a'}, -0.5f};
  a.top = {{" sea", {' ', 's', 'e', 'a'}, -0.5f}, {" ship", {' ', 's', 'h', 'i', 'p'}, -1.25f}};
  TokenLogprobsJson b;
  b.chosen = {"bytes:\\xe2", {0xE2}, -2.0f};
  EXPECT_EQ(chat_logprobs_json({a, b}), json::parse(R"({"content": [
      {"token": " sea", "logprob": -0.5, "bytes": [32, 115, 101, 97],
       "top_logprobs": [{"token": " sea", "logprob": -0.5, "bytes": [32, 115, 101, 97]},
                        {"token": " ship", "logprob": -1.25, "bytes": [32, 115, 104, 105, 112]}]},
      {"token": "bytes:\\xe2", "logprob": -2.0, "bytes": [226], "top_logprobs": []}]})"));
  EXPECT_EQ(completion_logprobs_json({a, b}, 10), json::parse(R"({"tokens": [" sea", "bytes:\\xe2"],
      "token_logprobs": [-0.5, -2.0], "top_logprobs": [{" sea": -0.5, " ship": -1.25}, {}],
      "text_offset": [10, 14]})"));
}

TEST(OpenaiSchema, StreamChunks) {
  // Chat: the role chunk, text chunks, the last chunk's empty delta.
  const json role = chunk_json("c", 1, "m", true, Choice{}, /*role_chunk=*/true);
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"], json::parse(R"({"role": "assistant", "content": ""})"));
  EXPECT_TRUE(role["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(chunk_json("c", 1, "m", true, Choice{0, "Hel", "", nullptr})["choices"][0]["delta"],
            json::parse(R"({"content": "Hel"})"));
  const json last = chunk_json("c", 1, "m", true, Choice{2, "", "stop", nullptr});
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(last["choices"][0]["index"], 2);
  EXPECT_FALSE(last.contains("usage"));
  // Completions: text.
  EXPECT_EQ(chunk_json("t", 1, "m", false, Choice{0, " x", "", nullptr}),
            json::parse(R"({"id": "t", "object": "text_completion", "created": 1, "model": "m",
                            "choices": [{"index": 0, "text": " x", "logprobs": null, "finish_reason": null}]})"));
  // The usage chunk: no choices.
  const json uc = usage_chunk_json("c", 1, "m", true, Usage{4, 6});
  EXPECT_EQ(uc["object"], "chat.completion.chunk");
  EXPECT_EQ(uc["choices"], json::array());
  EXPECT_EQ(uc["usage"]["total_tokens"], 10);
}

// The "moepp_routing" extension: off by default (and at false or null), on at true, refused when not
// a boolean; its JSON, and a choice without it has no such key at all.
TEST(ParseCompletionRequest, MoeppRoutingOptIn) {
  EXPECT_FALSE(completion({{"prompt", "a"}}).routing);
  EXPECT_FALSE(completion({{"prompt", "a"}, {"moepp_routing", false}}).routing);
  EXPECT_FALSE(completion({{"prompt", "a"}, {"moepp_routing", nullptr}}).routing);
  EXPECT_TRUE(completion({{"prompt", "a"}, {"moepp_routing", true}}).routing);
  EXPECT_TRUE(chat({{"messages", kUserHello}, {"moepp_routing", true}, {"stream", true}}).routing);
  for (const json& bad : {json(1), json("true"), json::array({true}), json::object()}) {
    const ApiError e = parse_error(json{{"messages", kUserHello}, {"moepp_routing", bad}}.dump(), true);
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, "moepp_routing");
    EXPECT_NE(std::string(e.what()).find("'moepp_routing' must be a boolean"), std::string::npos) << e.what();
  }
}

TEST(OpenaiSchema, RoutingJson) {
  const json r = routing_json({{" the", {2, 0}}, {"", {1, 1}}}, {2, 2});
  EXPECT_EQ(r, json::parse(R"({"max_ffn_experts": [2, 2], "tokens": [
      {"text": " the", "ffn_experts": [2, 0], "ffn_total": 2}, {"text": "", "ffn_experts": [1, 1], "ffn_total": 2}]})"));
  Choice c{0, " the", "", nullptr};
  EXPECT_FALSE(chunk_json("t", 1, "m", true, c)["choices"][0].contains("moepp_routing"));
  EXPECT_FALSE(completion_json("t", 1, "m", false, {c}, Usage{})["choices"][0].contains("moepp_routing"));
  c.routing = r;
  EXPECT_EQ(chunk_json("t", 1, "m", true, c)["choices"][0]["moepp_routing"], r);
  EXPECT_EQ(completion_json("t", 1, "m", false, {c}, Usage{})["choices"][0]["moepp_routing"], r);
}

TEST(OpenaiSchema, DumpKeepsUtf8AndReplacesInvalidBytes) {
  EXPECT_EQ(dump(json{{"t", "caf\xC3\xA9"}}), "{\"t\":\"caf\xC3\xA9\"}");
  EXPECT_EQ(dump(json{{"t", "a\xFF"}}), "{\"t\":\"a\xEF\xBF\xBD\"}");
}

}  // namespace
}  // namespace moepp::serve
