// Tests of the generation engine (src/infer/engine): continuous batching gives every request the
// tokens it gets alone (greedy and seeded sampling; staggered arrivals, chunked prefill, requests
// submitted from many threads); cancel frees the slot and the queue limit holds; EOS, max_new_tokens,
// context and shutdown endings; submit-time validation; each sequence's routing report (FFN experts per
// layer per token); and, with a tokenizer, text, stop strings and the text each routing report follows.
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "infer/decoder.h"
#include "infer/engine.h"
#include "model/model_params.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_fixtures.h"

namespace moepp {
namespace {

constexpr int64_t kVocab = test::kTestTokenizerVocab;  // so text and model fit together
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

// A greedy request of a random prompt that ignores EOS (it runs for max_new tokens).
GenerationRequest greedy_request(int64_t prompt_len, uint64_t seed, int64_t max_new) {
  GenerationRequest req;
  req.prompt = random_prompt(prompt_len, seed);
  req.max_new_tokens = max_new;
  req.sampling.temperature = 0.0f;
  req.stop_at_eos = false;
  return req;
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
  const GenerationRequest req = greedy_request(10, 1, 50);
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

TEST(Engine, SubmitAllTakesAllOrNone) {
  const Decoder& dec = test_decoder();
  Engine e(dec, nullptr, opts(2, 1));
  const GenerationRequest req = greedy_request(6, 3, 4);
  Result a, b, c, d;
  EXPECT_THROW(e.submit_all({req, req, req, req}, {collect(a), collect(b), collect(c), collect(d)}),
               EngineFullError);  // 2 slots + 1 queued < 4
  EXPECT_EQ(e.stats().waiting, 0);
  GenerationRequest bad = req;
  bad.max_new_tokens = -1;
  EXPECT_THROW(e.submit_all({req, bad}, {collect(a), collect(b)}), InvalidRequestError);
  EXPECT_EQ(e.stats().waiting, 0);  // nothing of a refused group is queued
  const std::vector<uint64_t> ids = e.submit_all({req, req, req}, {collect(a), collect(b), collect(c)});
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_TRUE(ids[0] < ids[1] && ids[1] < ids[2]);
  while (e.step()) {
  }
  const Result alone = run_alone(dec, req);
  for (const Result* r : {&a, &b, &c}) EXPECT_EQ(r->tokens, alone.tokens);
}

TEST(Engine, LogprobsOfTheRawDistribution) {
  const Decoder& dec = test_decoder();
  GenerationRequest req = greedy_request(7, 4, 5);
  req.sampling.repetition_penalty = 1.5f;  // changes the sampled row, not the reported logprobs
  req.logprobs = 3;
  Engine e(dec, nullptr, opts(1, 0));
  Result r;
  std::vector<TokenLogprobs> lps;
  GenerationCallbacks cb = collect(r);
  cb.on_logprobs = [&](const TokenLogprobs& lp) { lps.push_back(lp); };
  e.submit(req, cb);
  while (e.step()) {
  }
  ASSERT_EQ(lps.size(), r.tokens.size());
  // The reference: the decoder's logits over the whole sequence, token by token.
  std::vector<int32_t> seq = req.prompt;
  for (size_t i = 0; i < lps.size(); ++i) {
    KvCache cache = dec.make_cache(1, kCtx);
    DecoderScratch scratch;
    Tensor logits;
    dec.forward(logits, cache, {{0, seq.data(), static_cast<int64_t>(seq.size()), false}}, scratch);
    const TokenLogprobs want = token_logprobs(logits.ptr(), kVocab, r.tokens[i], 3);
    EXPECT_EQ(lps[i].chosen.token, r.tokens[i]);
    EXPECT_NEAR(lps[i].chosen.logprob, want.chosen.logprob, 1e-4);
    ASSERT_EQ(lps[i].top.size(), 3u);
    for (size_t k = 0; k < 3; ++k) {
      EXPECT_EQ(lps[i].top[k].token, want.top[k].token);
      EXPECT_NEAR(lps[i].top[k].logprob, want.top[k].logprob, 1e-4);
    }
    seq.push_back(r.tokens[i]);
  }
  req.logprobs = 21;
  EXPECT_THROW(e.submit(req, {}), InvalidRequestError);
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

// The FFN experts per layer of a sequence's rows [first, first + n), recomputed by one decoder pass
// over its tokens alone.
std::vector<std::vector<int32_t>> rows_ffn(const Decoder& dec, const std::vector<int32_t>& tokens, int64_t first,
                                           int64_t n) {
  KvCache cache = dec.make_cache(1, kCtx);
  DecoderScratch sc;
  Tensor logits;
  dec.forward(logits, cache, {{0, tokens.data(), static_cast<int64_t>(tokens.size()), false}}, sc);
  const int64_t L = dec.config().n_layers;
  std::vector<std::vector<int32_t>> out;
  for (int64_t r = first; r < first + n; ++r)
    out.emplace_back(sc.row_ffn.begin() + r * L, sc.row_ffn.begin() + (r + 1) * L);
  return out;
}

// With routing on, every sampled token reports the FFN experts per layer of the pass that computed its
// logits: the last prompt row for the first token, then the row of each token fed back. Batched with
// other sequences (decoding and in chunked prefill), each gets its own row's counts, equal to a pass
// over its tokens alone; a request without routing gets no report.
TEST(Engine, ReportsEachSequencesOwnRoutingInABatch) {
  const Decoder& dec = test_decoder();
  std::vector<GenerationRequest> reqs = mixed_requests();
  reqs.resize(5);
  for (size_t i = 0; i < reqs.size(); ++i) reqs[i].routing = i != 2;
  Engine e(dec, nullptr, opts(3, 16, 7, 12));
  std::vector<Result> got(reqs.size());
  std::vector<std::vector<std::vector<int32_t>>> routing(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    GenerationCallbacks cb = collect(got[i]);
    cb.on_routing = [&routing, &got, i](const std::vector<int32_t>& r) {
      EXPECT_EQ(got[i].tokens.size(), routing[i].size() + 1) << "on_routing after the token's on_token";
      routing[i].push_back(r);
    };
    e.submit(reqs[i], std::move(cb));
  }
  int steps = 0;
  while (e.step()) ASSERT_LT(++steps, 10000);
  std::set<int32_t> seen;
  for (size_t i = 0; i < reqs.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    if (!reqs[i].routing) {
      EXPECT_TRUE(routing[i].empty());
      continue;
    }
    const int64_t P = static_cast<int64_t>(reqs[i].prompt.size()), n = static_cast<int64_t>(got[i].tokens.size());
    ASSERT_EQ(static_cast<int64_t>(routing[i].size()), n);
    EXPECT_EQ(got[i].fin.completion_tokens, n);
    std::vector<int32_t> all = reqs[i].prompt;
    all.insert(all.end(), got[i].tokens.begin(), got[i].tokens.end() - 1);  // the last token is never fed
    EXPECT_EQ(routing[i], rows_ffn(dec, all, P - 1, n));
    for (const auto& r : routing[i]) seen.insert(r[0] + r[1]);
  }
  EXPECT_GE(seen.size(), 2u) << "routing does not vary between tokens: the test would prove little";
}

// ---------------------------------------------------------------------------------------------------
// With a tokenizer: text and stop strings

class EngineText : public test::TrainedTokenizerTest {};

// A greedy request of max_new tokens after bos + "the ship", EOS ignored.
GenerationRequest ship_request(const Tokenizer& tok, int64_t max_new) {
  GenerationRequest req;
  req.prompt = {1};
  for (int32_t id : tok.encode("the ship")) req.prompt.push_back(id);
  req.max_new_tokens = max_new;
  req.sampling.temperature = 0.0f;
  req.stop_at_eos = false;
  return req;
}

TEST_F(EngineText, StopsAtStopStringsWithText) {
  const Decoder& dec = test_decoder();
  ASSERT_EQ(tok_->vocab_size(), kVocab);
  const GenerationRequest req = ship_request(*tok_, 40);
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

// With routing, each token's report comes after the text it released: the pieces of text delivered
// between reports, joined, are the whole text (the held-back rest included, with the last token), and
// no text follows the last report.
TEST_F(EngineText, RoutingReportsFollowTheTextOfTheirToken) {
  const Decoder& dec = test_decoder();
  for (const bool with_stop : {false, true}) {
    SCOPED_TRACE(with_stop ? "stop string" : "length");
    GenerationRequest req = ship_request(*tok_, 30);
    req.routing = true;
    if (with_stop) {
      const std::string T = run_alone(dec, req, tok_).text;
      ASSERT_GE(T.size(), 12u);
      req.stop = {T.substr(T.size() / 2, 1) + "never"};  // held back at each occurrence, then released
    }
    Engine e(dec, tok_, opts(1, 0));
    Result r;
    std::vector<std::string> per_token;
    std::string since;
    GenerationCallbacks cb = collect(r);
    cb.on_text = [&](const std::string& t) {
      r.text += t;
      since += t;
    };
    cb.on_routing = [&](const std::vector<int32_t>& f) {
      EXPECT_EQ(static_cast<int64_t>(f.size()), dec.config().n_layers);
      per_token.push_back(since);
      since.clear();
    };
    e.submit(req, std::move(cb));
    while (e.step()) {
    }
    EXPECT_EQ(per_token.size(), r.tokens.size());
    EXPECT_TRUE(since.empty()) << "text after the last routing report: " << since;
    std::string joined;
    for (const std::string& t : per_token) joined += t;
    EXPECT_EQ(joined, r.fin.text);
    EXPECT_FALSE(r.fin.text.empty());
  }
}

}  // namespace
}  // namespace moepp
