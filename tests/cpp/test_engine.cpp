// Tests of the generation engine (src/infer/engine) and of incremental detokenisation
// (src/infer/text_stream): continuous batching gives every request the tokens it gets alone (greedy
// and seeded sampling; staggered arrivals, chunked prefill, requests submitted from many threads);
// cancel frees the slot and the queue limit holds; EOS, max_new_tokens, context and shutdown endings;
// submit-time validation; and the text stream's leading-space handling, UTF-8 hold-back, and stop
// strings that span tokens.
#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "infer/decoder.h"
#include "infer/engine.h"
#include "infer/text_stream.h"
#include "model/model_params.h"
#include "tokenizer/tokenizer.h"

namespace moepp {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kVocab = 320;  // = the test tokenizer's size, so text and model fit together
constexpr int64_t kCtx = 128;

ModelConfig test_config() {
  const nlohmann::json j = {{"vocab_size", kVocab},        {"hidden_size", 32},      {"intermediate_size", 24},
                            {"num_hidden_layers", 2},      {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                            {"max_position_embeddings", kCtx}, {"num_experts", {8}},   {"n_zero_experts", 1},
                            {"n_copy_experts", 1},         {"n_constant_experts", 2}, {"bos_token_id", 1},
                            {"eos_token_id", 2},           {"pad_token_id", 0}};
  return ModelConfig::from_json(j, "test");
}

const ModelParams& test_params() {
  static const ModelParams p = [] {
    const ModelConfig cfg = test_config();
    ModelParams q = ModelParams::zeros(cfg);
    q.init_random(cfg, 5, 0.2f);  // router weights large enough that routing varies between tokens
    return q;
  }();
  return p;
}

const Decoder& test_decoder() {
  static const Decoder d(test_config(), InferWeights::from_params(test_config(), test_params(), WeightDType::kF32));
  return d;
}

std::vector<int32_t> random_prompt(int64_t n, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(3 + rng() % (kVocab - 3));
  return t;
}

// What the callbacks of one request saw.
struct Result {
  std::vector<int32_t> tokens;
  std::string text;
  FinishEvent fin;
  int finishes = 0;
};

GenerationCallbacks collect(Result& r) {
  GenerationCallbacks cb;
  cb.on_token = [&r](int32_t t) { r.tokens.push_back(t); };
  cb.on_text = [&r](const std::string& s) { r.text += s; };
  cb.on_finish = [&r](const FinishEvent& ev) {
    r.fin = ev;
    ++r.finishes;
  };
  return cb;
}

EngineOptions opts(int64_t slots, int64_t queue, int64_t chunk = 256, int64_t budget = 512) {
  EngineOptions o;
  o.n_slots = slots;
  o.max_len = kCtx;
  o.max_queue = queue;
  o.prefill_chunk = chunk;
  o.step_prefill_tokens = budget;
  return o;
}

Result run_alone(const Decoder& dec, const GenerationRequest& req, const Tokenizer* tok = nullptr) {
  Engine e(dec, tok, opts(1, 0));
  Result r;
  e.submit(req, collect(r));
  while (e.step()) {
  }
  return r;
}

std::vector<GenerationRequest> mixed_requests() {
  const int64_t lens[] = {1, 5, 23, 40, 3, 64, 17, 9};
  const int64_t news[] = {20, 15, 30, 10, 25, 12, 18, 22};
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 8; ++i) {
    GenerationRequest r;
    r.prompt = random_prompt(lens[i], 100 + i);
    r.max_new_tokens = news[i];
    r.sampling.temperature = 0.0f;
    r.stop_at_eos = i % 2 == 0;
    if (i == 3) r.sampling.repetition_penalty = 1.3f;
    if (i == 6) {  // a seeded sampled request: its own generator, so batching does not change it
      r.sampling.temperature = 0.9f;
      r.sampling.top_k = 20;
      r.sampling.top_p = 0.95f;
      r.sampling.seed = 77;
    }
    reqs.push_back(r);
  }
  return reqs;
}

TEST(Engine, ContinuousBatchingGivesEachRequestItsAloneTokens) {
  const Decoder& dec = test_decoder();
  const std::vector<GenerationRequest> reqs = mixed_requests();
  std::vector<Result> alone;
  for (const auto& r : reqs) alone.push_back(run_alone(dec, r));

  // 3 slots, prompts prefilled 7 tokens at a time and at most 12 per step, arrivals staggered.
  Engine e(dec, nullptr, opts(3, 16, 7, 12));
  std::vector<Result> got(reqs.size());
  for (size_t i = 0; i < 4; ++i) e.submit(reqs[i], collect(got[i]));
  for (int s = 0; s < 3; ++s) e.step();
  for (size_t i = 4; i < reqs.size(); ++i) e.submit(reqs[i], collect(got[i]));
  int steps = 0;
  while (e.step()) ASSERT_LT(++steps, 10000);

  uint64_t generated = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    EXPECT_EQ(got[i].finishes, 1);
    EXPECT_EQ(got[i].tokens, alone[i].tokens);
    EXPECT_EQ(got[i].fin.reason, alone[i].fin.reason);
    EXPECT_EQ(got[i].fin.completion_tokens, static_cast<int64_t>(got[i].tokens.size()));
    EXPECT_EQ(got[i].fin.prompt_tokens, static_cast<int64_t>(reqs[i].prompt.size()));
    if (!reqs[i].stop_at_eos) {
      EXPECT_EQ(got[i].fin.reason, "length");
    }
    generated += got[i].tokens.size();
  }
  const EngineStats st = e.stats();
  EXPECT_EQ(st.active, 0);
  EXPECT_EQ(st.waiting, 0);
  EXPECT_EQ(st.finished, reqs.size());
  EXPECT_EQ(st.generated_tokens, generated);
}

TEST(Engine, SubmitFromManyThreadsWithTheBackgroundLoop) {
  const Decoder& dec = test_decoder();
  const std::vector<GenerationRequest> reqs = mixed_requests();
  std::vector<Result> alone;
  for (const auto& r : reqs) alone.push_back(run_alone(dec, r));

  Engine e(dec, nullptr, opts(4, 32));
  e.start();
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  std::vector<Result> got(reqs.size() * 2);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&, i] {
      GenerationCallbacks cb = collect(got[i]);
      auto inner = cb.on_finish;
      cb.on_finish = [&, inner](const FinishEvent& ev) {
        inner(ev);
        std::lock_guard<std::mutex> lk(mu);
        ++done;
        cv.notify_all();
      };
      e.submit(reqs[i % reqs.size()], cb);
    });
  }
  for (auto& t : threads) t.join();
  {
    std::unique_lock<std::mutex> lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(120), [&] { return done == static_cast<int>(got.size()); }));
  }
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    EXPECT_EQ(got[i].tokens, alone[i % reqs.size()].tokens);
    EXPECT_EQ(got[i].finishes, 1);
  }
  e.stop();
  Result late;
  EXPECT_THROW(e.submit(reqs[0], collect(late)), EngineStoppedError);
}

TEST(Engine, CancelFreesTheSlotAndTheQueueIsBounded) {
  const Decoder& dec = test_decoder();
  Engine e(dec, nullptr, opts(1, 1));
  GenerationRequest req;
  req.prompt = random_prompt(10, 1);
  req.max_new_tokens = 50;
  req.sampling.temperature = 0.0f;
  req.stop_at_eos = false;
  Result a, b, c, d;
  const uint64_t ida = e.submit(req, collect(a));
  e.step();
  e.step();
  EXPECT_EQ(e.stats().active, 1);
  EXPECT_EQ(a.tokens.size(), 2u);
  const uint64_t idb = e.submit(req, collect(b));
  EXPECT_EQ(e.stats().waiting, 1);
  EXPECT_THROW(e.submit(req, collect(c)), EngineFullError);  // 1 slot + 1 queued

  EXPECT_TRUE(e.cancel(ida));
  e.step();  // a ends, b takes the slot (and is prefilled)
  EXPECT_EQ(a.finishes, 1);
  EXPECT_EQ(a.fin.reason, "cancelled");
  EXPECT_EQ(a.fin.completion_tokens, 2);
  EXPECT_FALSE(e.cancel(ida));
  EXPECT_FALSE(e.cancel(12345));
  EXPECT_EQ(e.stats().active, 1);
  EXPECT_EQ(e.stats().waiting, 0);
  EXPECT_EQ(b.tokens.size(), 1u);

  // A request cancelled while it waits never runs.
  const uint64_t idd = e.submit(req, collect(d));
  EXPECT_TRUE(e.cancel(idd));
  e.step();
  EXPECT_EQ(d.fin.reason, "cancelled");
  EXPECT_EQ(d.fin.completion_tokens, 0);
  EXPECT_TRUE(d.tokens.empty());

  while (e.step()) {
  }
  EXPECT_EQ(b.fin.reason, "length");
  EXPECT_EQ(b.tokens, run_alone(dec, req).tokens);  // the slot a used was reset
  EXPECT_FALSE(e.cancel(idb));
  EXPECT_EQ(e.stats().active, 0);
}

TEST(Engine, EndsAtEosMaxTokensAndFullContext) {
  const Decoder& dec = test_decoder();
  GenerationRequest req;
  req.prompt = random_prompt(6, 9);
  req.max_new_tokens = 24;
  req.sampling.temperature = 0.0f;
  req.stop_at_eos = false;
  const Result free_run = run_alone(dec, req);
  ASSERT_EQ(free_run.tokens.size(), 24u);
  ASSERT_EQ(free_run.fin.reason, "length");

  // EOS: a decoder whose eos is the first token that is new at position >= 2 stops right there.
  size_t at = 2;
  while (at < free_run.tokens.size() &&
         std::find(free_run.tokens.begin(), free_run.tokens.begin() + at, free_run.tokens[at]) !=
             free_run.tokens.begin() + at)
    ++at;
  ASSERT_LT(at, free_run.tokens.size());
  ModelConfig cfg = test_config();
  cfg.eos = free_run.tokens[at];
  const Decoder eos_dec(cfg, InferWeights::from_params(cfg, test_params(), WeightDType::kF32));
  GenerationRequest stop_req = req;
  stop_req.stop_at_eos = true;
  const Result r = run_alone(eos_dec, stop_req);
  EXPECT_EQ(r.fin.reason, "stop");
  EXPECT_EQ(r.fin.completion_tokens, static_cast<int64_t>(at + 1));
  EXPECT_EQ(r.tokens, std::vector<int32_t>(free_run.tokens.begin(), free_run.tokens.begin() + at + 1));

  // max_new_tokens = 0: finished at once.
  GenerationRequest zero = req;
  zero.max_new_tokens = 0;
  const Result z = run_alone(dec, zero);
  EXPECT_EQ(z.fin.reason, "length");
  EXPECT_EQ(z.fin.completion_tokens, 0);
  EXPECT_TRUE(z.tokens.empty());

  // The context: prompt + completion never exceed max_len.
  GenerationRequest full = req;
  full.prompt = random_prompt(kCtx - 8, 4);
  full.max_new_tokens = 100;
  const Result f = run_alone(dec, full);
  EXPECT_EQ(f.fin.reason, "length");
  EXPECT_EQ(f.fin.completion_tokens, 8);
}

TEST(Engine, ShutdownCancelsWhatIsLeft) {
  const Decoder& dec = test_decoder();
  Result a, b;
  {
    Engine e(dec, nullptr, opts(1, 4));
    GenerationRequest req;
    req.prompt = random_prompt(8, 2);
    req.max_new_tokens = 100;
    req.stop_at_eos = false;
    e.submit(req, collect(a));
    e.submit(req, collect(b));
    e.step();
  }  // destructor: stop()
  EXPECT_EQ(a.finishes, 1);
  EXPECT_EQ(b.finishes, 1);
  EXPECT_EQ(a.fin.reason, "cancelled");
  EXPECT_EQ(b.fin.reason, "cancelled");
}

TEST(Engine, RejectsInvalidRequestsAtSubmit) {
  Engine e(test_decoder(), nullptr, opts(2, 2));
  auto expect_error = [&](GenerationRequest r, const std::string& field) {
    Result res;
    try {
      e.submit(std::move(r), collect(res));
      ADD_FAILURE() << "no error for " << field;
    } catch (const Error& err) {
      EXPECT_NE(std::string(err.what()).find(field), std::string::npos) << err.what();
    }
  };
  GenerationRequest ok;
  ok.prompt = {1, 5, 6};
  GenerationRequest r = ok;
  r.prompt.clear();
  expect_error(r, "prompt");
  r = ok;
  r.prompt = random_prompt(kCtx, 3);
  expect_error(r, "prompt");
  r = ok;
  r.prompt.push_back(static_cast<int32_t>(kVocab));
  expect_error(r, "prompt");
  r = ok;
  r.max_new_tokens = -1;
  expect_error(r, "max_new_tokens");
  r = ok;
  r.sampling.temperature = -1.0f;
  expect_error(r, "temperature");
  r = ok;
  r.sampling.top_p = 0.0f;
  expect_error(r, "top_p");
  r = ok;
  r.stop = {"x"};
  expect_error(r, "stop");  // no tokenizer
  EXPECT_EQ(e.stats().waiting, 0);
  EXPECT_THROW(Engine(test_decoder(), nullptr, [] {
                 EngineOptions o = opts(1, 0);
                 o.max_len = kCtx + 1;
                 return o;
               }()),
               Error);
}

// ---------------------------------------------------------------------------------------------------
// Text stream

TEST(TextStreamHelpers, HoldbackFindAndUtf8Tail) {
  EXPECT_EQ(stop_holdback("abc", {"cd"}), 1u);
  EXPECT_EQ(stop_holdback("abc", {"bcx", "cd"}), 2u);
  EXPECT_EQ(stop_holdback("abc", {"abc"}), 0u);  // a whole match is found, not held
  EXPECT_EQ(stop_holdback("abc", {"x", ""}), 0u);
  EXPECT_EQ(stop_holdback("", {"ab"}), 0u);
  EXPECT_EQ(find_stop("hello world", {"wor", "lo"}), 3u);
  EXPECT_EQ(find_stop("hello world", {"xyz"}), std::string::npos);
  EXPECT_EQ(find_stop("hello world", {"o"}, 5), 7u);
  EXPECT_EQ(incomplete_utf8_tail("a"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("a\xC3"), 1u);
  EXPECT_EQ(incomplete_utf8_tail("\xE6\x97"), 2u);
  EXPECT_EQ(incomplete_utf8_tail("\xE6\x97\xA5"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F\x90"), 3u);
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F\x90\xB3"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("\x80\x80"), 0u);  // never valid: not held
}

std::string tok_training_text() {
  const char* words[] = {"the", "ship", "sailed", "across", "a", "grey", "sea", "and", "whale", "rose", "from",
                         "deep", "water", "while", "men", "watched", "in", "silence", "of", "morning", "light"};
  const int n = sizeof(words) / sizeof(words[0]);
  std::string s;
  uint32_t x = 777;
  for (int line = 0; line < 150; ++line) {
    for (int w = 0; w < 10; ++w) {
      x = x * 1103515245u + 12345u;
      if (w) s += ' ';
      s += words[(x >> 16) % n];
    }
    s += ".\n";
  }
  return s;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

class TextStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::path(::testing::TempDir()) / ("moepp_engine_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    const std::string text = (*dir_ / "train.txt").string();
    std::ofstream(text) << tok_training_text();
    train_tokenizer({text}, (*dir_ / "tokenizer.model").string(), static_cast<int>(kVocab));
    tok_ = new Tokenizer((*dir_ / "tokenizer.model").string());
  }
  static void TearDownTestSuite() {
    delete tok_;
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }
  // Pushes ids one by one; returns the deltas (finish() last).
  static std::vector<std::string> run(TextStream& ts, const std::vector<int32_t>& ids) {
    std::vector<std::string> out;
    for (int32_t id : ids) out.push_back(ts.push(id));
    out.push_back(ts.finish());
    return out;
  }
  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += x;
    return s;
  }
  static fs::path* dir_;
  static Tokenizer* tok_;
};
fs::path* TextStreamTest::dir_ = nullptr;
Tokenizer* TextStreamTest::tok_ = nullptr;

TEST_F(TextStreamTest, KeepsTheLeadingSpaceOfTheFirstGeneratedPiece) {
  const std::vector<int32_t> ids = tok_->encode("the ship sailed across a grey sea");
  ASSERT_GE(ids.size(), 3u);
  TextStream ts(*tok_, {}, ids[0]);  // the prompt ends with ids[0]
  const std::vector<std::string> deltas = run(ts, std::vector<int32_t>(ids.begin() + 1, ids.end()));
  const std::string whole = tok_->decode(ids), first = tok_->decode({ids[0]});
  EXPECT_EQ(join(deltas), whole.substr(first.size()));
  EXPECT_EQ(join(deltas)[0], ' ');
  EXPECT_EQ(ts.emitted(), join(deltas));
  // Without an anchor the list decodes as the tokenizer decodes it alone.
  TextStream plain(*tok_, {});
  EXPECT_EQ(join(run(plain, ids)), whole);
}

TEST_F(TextStreamTest, EmitsOnlyCompleteUtf8) {
  const std::string text = "sea \xE6\x97\xA5\xE6\x9C\xAC and \xC3\xBC\xE2\x82\xAC whale \xF0\x9F\x90\xB3!";
  const std::vector<int32_t> ids = tok_->encode(text);
  int bytes = 0;
  for (int32_t id : ids) bytes += tok_->is_byte(id);
  ASSERT_GE(bytes, 8);  // the characters outside the training text are byte pieces
  TextStream ts(*tok_, {});
  const std::vector<std::string> deltas = run(ts, ids);
  int held = 0;
  for (size_t i = 0; i + 1 < deltas.size(); ++i) {
    EXPECT_TRUE(valid_utf8(deltas[i])) << "delta " << i;
    EXPECT_EQ(deltas[i].find("\xEF\xBF\xBD"), std::string::npos) << "U+FFFD in delta " << i;
    held += deltas[i].empty();
  }
  EXPECT_GT(held, 0);
  EXPECT_EQ(join(deltas), text);
}

TEST_F(TextStreamTest, StopStringAcrossTokens) {
  const std::vector<int32_t> ids = tok_->encode("the whale rose from deep water while men watched");
  TextStream ts(*tok_, {"rose fr"});
  std::string got;
  size_t stopped_at = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    got += ts.push(ids[i]);
    EXPECT_EQ(std::string("the whale ").compare(0, got.size(), got), 0) << "emitted " << got;
    if (ts.stopped() && !stopped_at) stopped_at = i + 1;
  }
  got += ts.finish();
  EXPECT_TRUE(ts.stopped());
  EXPECT_EQ(got, "the whale ");
  // It stopped at the token that completed "rose fr", not later.
  const std::string upto = tok_->decode(std::vector<int32_t>(ids.begin(), ids.begin() + stopped_at));
  const std::string before = tok_->decode(std::vector<int32_t>(ids.begin(), ids.begin() + stopped_at - 1));
  EXPECT_NE(upto.find("rose fr"), std::string::npos);
  EXPECT_EQ(before.find("rose fr"), std::string::npos);

  // The earliest of several stops wins; a multi-byte stop string works too.
  TextStream two(*tok_, {"water", "whale"});
  EXPECT_EQ(join(run(two, ids)), "the ");
  const std::vector<int32_t> cjk = tok_->encode("sea \xE6\x97\xA5\xE6\x9C\xAC whale");
  TextStream mb(*tok_, {"\xE6\x9C\xAC"});
  EXPECT_EQ(join(run(mb, cjk)), "sea \xE6\x97\xA5");
}

TEST_F(TextStreamTest, HeldBackPrefixIsReleasedWhenTheStopDoesNotComplete) {
  const std::vector<int32_t> ids = tok_->encode("the whale rose f");
  TextStream ts(*tok_, {"rose fx"});
  std::string got;
  for (int32_t id : ids) got += ts.push(id);
  EXPECT_EQ(got, "the whale ");  // "rose f" may still become the stop string
  EXPECT_EQ(ts.finish(), "rose f");
  EXPECT_FALSE(ts.stopped());
  EXPECT_EQ(ts.finish(), "");
}

TEST_F(TextStreamTest, EngineStopsAtStopStringsWithText) {
  const Decoder& dec = test_decoder();
  ASSERT_EQ(tok_->vocab_size(), kVocab);
  GenerationRequest req;
  req.prompt = {1};
  for (int32_t id : tok_->encode("the ship")) req.prompt.push_back(id);
  req.max_new_tokens = 40;
  req.sampling.temperature = 0.0f;
  req.stop_at_eos = false;
  const Result free_run = run_alone(dec, req, tok_);
  EXPECT_EQ(free_run.text, free_run.fin.text);
  const std::string& T = free_run.text;
  // A stop string from the middle of the text, on character boundaries.
  auto boundary = [&](size_t i) {
    while (i < T.size() && (static_cast<unsigned char>(T[i]) & 0xC0) == 0x80) ++i;
    return i;
  };
  const size_t b0 = boundary(T.size() / 3), b1 = boundary(b0 + 1), b2 = boundary(b1 + 1);
  ASSERT_LT(b2, T.size()) << T;
  const std::string stop = T.substr(b0, b2 - b0);
  GenerationRequest with_stop = req;
  with_stop.stop = {stop};
  const Result r = run_alone(dec, with_stop, tok_);
  EXPECT_EQ(r.fin.reason, "stop");
  EXPECT_EQ(r.text, T.substr(0, T.find(stop)));
  EXPECT_EQ(r.fin.text, r.text);
  EXPECT_LT(r.tokens.size(), free_run.tokens.size());
}

}  // namespace
}  // namespace moepp
