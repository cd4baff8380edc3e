// Engine: continuous batching of generation requests over one Decoder (see engine.h).
#include "infer/engine.h"

#include <algorithm>
#include <chrono>
#include <exception>

#include "infer/text_stream.h"
#include "tokenizer/tokenizer.h"

namespace moepp {

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Callbacks must not take the engine down: an exception from one is dropped.
template <class F, class... A>
void call(const F& f, A&&... a) {
  if (!f) return;
  try {
    f(std::forward<A>(a)...);
  } catch (...) {
  }
}

// Throws InvalidRequestError(field, message) when cond is false.
void require(bool cond, const char* field, const std::string& message) {
  if (!cond) throw InvalidRequestError(field, message);
}

}  // namespace

void EngineOptions::validate() const {
  check(n_slots >= 1, "engine: n_slots must be >= 1 (got " + std::to_string(n_slots) + ")");
  check(max_len >= 2, "engine: max_len must be >= 2 (got " + std::to_string(max_len) + ")");
  check(max_queue >= 0, "engine: max_queue must be >= 0 (got " + std::to_string(max_queue) + ")");
  check(prefill_chunk >= 1, "engine: prefill_chunk must be >= 1 (got " + std::to_string(prefill_chunk) + ")");
  check(step_prefill_tokens >= 1,
        "engine: step_prefill_tokens must be >= 1 (got " + std::to_string(step_prefill_tokens) + ")");
}

struct Engine::Seq {
  uint64_t id = 0;
  GenerationRequest req;
  GenerationCallbacks cb;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<TextStream> text;
  std::vector<int32_t> tokens;  // prompt, then the generated ids
  int64_t slot = -1;
  int64_t fed = 0;        // tokens whose keys/values are in the slot
  int64_t generated = 0;  // tokens sampled
  bool done = false;
  Clock::time_point t_submit, t_admit, t_first;
};

Engine::Engine(const Decoder& decoder, const Tokenizer* tokenizer, EngineOptions opt)
    : dec_(decoder), tok_(tokenizer), opt_(opt) {
  if (opt_.max_len == 0) opt_.max_len = dec_.config().max_pos;
  opt_.validate();
  check(opt_.max_len <= dec_.config().max_pos,
        "engine: max_len " + std::to_string(opt_.max_len) + " exceeds the model's max_position_embeddings " +
            std::to_string(dec_.config().max_pos));
  cache_ = dec_.make_cache(opt_.n_slots, opt_.max_len);
  if (opt_.adaptive_threads) governor_ = std::make_unique<ThreadGovernor>(omp_get_max_threads());
  for (int64_t s = opt_.n_slots - 1; s >= 0; --s) free_slots_.push_back(s);
  totals_.n_slots = opt_.n_slots;
  totals_.max_queue = opt_.max_queue;
  totals_.max_len = opt_.max_len;
}

Engine::~Engine() { stop(); }

std::shared_ptr<Engine::Seq> Engine::make_seq(GenerationRequest req, GenerationCallbacks cb) const {
  const int64_t P = static_cast<int64_t>(req.prompt.size());
  require(P >= 1, "prompt", "prompt: empty (at least one token is needed)");
  require(P < opt_.max_len, "prompt",
          "prompt: " + std::to_string(P) + " tokens, but the context holds " + std::to_string(opt_.max_len) +
              " (the prompt must be shorter, to leave room for a generated token)");
  const int64_t V = dec_.config().vocab;
  for (int64_t i = 0; i < P; ++i)
    require(req.prompt[i] >= 0 && req.prompt[i] < V, "prompt",
            "prompt: token id " + std::to_string(req.prompt[i]) + " at position " + std::to_string(i) +
                " is outside the vocabulary [0, " + std::to_string(V) + ")");
  require(req.max_new_tokens >= 0, "max_new_tokens",
          "max_new_tokens: must be >= 0 (got " + std::to_string(req.max_new_tokens) + ")");
  require(req.logprobs >= -1 && req.logprobs <= 20, "logprobs",
          "logprobs: must be -1 (off) or in [0, 20] (got " + std::to_string(req.logprobs) + ")");
  req.sampling.validate();
  for (const std::string& s : req.stop) require(!s.empty(), "stop", "stop: empty stop string");
  require(req.stop.empty() || tok_ != nullptr, "stop", "stop: stop strings need a tokenizer");

  auto s = std::make_shared<Seq>();
  s->sampler = std::make_unique<Sampler>(req.sampling);
  if (tok_) s->text = std::make_unique<TextStream>(*tok_, req.stop, req.prompt.back());
  s->tokens = req.prompt;
  s->req = std::move(req);
  s->cb = std::move(cb);
  return s;
}

uint64_t Engine::submit(GenerationRequest req, GenerationCallbacks cb) {
  std::vector<GenerationRequest> reqs;
  std::vector<GenerationCallbacks> cbs;
  reqs.push_back(std::move(req));
  cbs.push_back(std::move(cb));
  return submit_all(std::move(reqs), std::move(cbs)).front();
}

std::vector<uint64_t> Engine::submit_all(std::vector<GenerationRequest> reqs, std::vector<GenerationCallbacks> cbs) {
  check(!reqs.empty() && reqs.size() == cbs.size(), "engine: submit_all needs one callback set per request");
  std::vector<std::shared_ptr<Seq>> seqs;
  for (size_t i = 0; i < reqs.size(); ++i) seqs.push_back(make_seq(std::move(reqs[i]), std::move(cbs[i])));
  std::vector<uint64_t> ids;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopped_) throw EngineStoppedError("engine: stopped");
    const int64_t n = static_cast<int64_t>(seqs.size());
    if (static_cast<int64_t>(live_.size()) + n > opt_.n_slots + opt_.max_queue)
      throw EngineFullError("engine: full (" + std::to_string(n_active_) + " running, " +
                            std::to_string(waiting_.size()) + " queued; the queue holds " +
                            std::to_string(opt_.max_queue) + (n > 1 ? "; " + std::to_string(n) + " asked for" : "") +
                            ")");
    const auto now = Clock::now();
    for (auto& s : seqs) {
      s->t_submit = now;
      s->id = next_id_++;
      live_.insert(s->id);
      waiting_.push_back(s);
      ids.push_back(s->id);
    }
  }
  cv_.notify_all();
  return ids;
}

bool Engine::cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!live_.count(id)) return false;
    cancels_.insert(id);
  }
  cv_.notify_all();
  return true;
}

void Engine::finish(const std::shared_ptr<Seq>& sp, const std::string& reason, std::vector<Finished>& done) {
  Seq& s = *sp;
  const auto now = Clock::now();
  FinishEvent ev;
  ev.reason = reason;
  ev.prompt_tokens = static_cast<int64_t>(s.req.prompt.size());
  ev.completion_tokens = s.generated;
  if (s.slot >= 0) {
    ev.queue_s = seconds(s.t_submit, s.t_admit);
    if (s.generated > 0) {
      ev.prefill_s = seconds(s.t_admit, s.t_first);
      ev.decode_s = seconds(s.t_first, now);
    }
    cache_.clear(s.slot);
    free_slots_.push_back(s.slot);
    s.slot = -1;
  } else {
    ev.queue_s = seconds(s.t_submit, now);
  }
  s.done = true;
  done.emplace_back(sp, std::move(ev));
}

void Engine::admit(std::vector<Finished>& done) {
  std::lock_guard<std::mutex> lk(mu_);
  std::unordered_set<uint64_t> cancels;
  cancels.swap(cancels_);
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (cancels.count((*it)->id)) {
      finish(*it, "cancelled", done);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& a : active_)
    if (cancels.count(a->id)) finish(a, "cancelled", done);
  while (!free_slots_.empty() && !waiting_.empty()) {
    std::shared_ptr<Seq> s = waiting_.front();
    waiting_.pop_front();
    s->slot = free_slots_.back();
    free_slots_.pop_back();
    s->t_admit = Clock::now();
    active_.push_back(s);
    if (s->req.max_new_tokens == 0) finish(s, "length", done);
  }
  n_active_ = static_cast<int64_t>(active_.size());
}

void Engine::build_batch(std::vector<DecodeChunk>& batch, std::vector<std::shared_ptr<Seq>>& rows) const {
  for (auto& a : active_) {
    Seq& s = *a;
    if (s.done || s.generated == 0) continue;
    batch.push_back({s.slot, s.tokens.data() + s.fed, 1, false});
    rows.push_back(a);
  }
  int64_t budget = opt_.step_prefill_tokens;
  for (auto& a : active_) {
    Seq& s = *a;
    if (s.done || s.generated > 0) continue;
    const int64_t n = std::min({static_cast<int64_t>(s.tokens.size()) - s.fed, opt_.prefill_chunk, budget});
    if (n <= 0) continue;
    batch.push_back({s.slot, s.tokens.data() + s.fed, n, false});
    rows.push_back(a);
    budget -= n;
  }
}

bool Engine::run_batch(const std::vector<DecodeChunk>& batch, const std::vector<std::shared_ptr<Seq>>& rows,
                       std::vector<Finished>& done) {
  std::string error;
  try {
    int64_t rows = 0;
    bool decode_only = true;
    for (const DecodeChunk& c : batch) {
      rows += c.n;
      decode_only = decode_only && c.n == 1;
    }
    run_governed(governor_.get(), decode_only && rows <= EngineOptions::kGovernedRows, rows,
                 [&] { dec_.forward(logits_, cache_, batch, scratch_); });
    return true;
  } catch (const std::exception& e) {
    error = e.what();
  }
  for (auto& s : rows) {
    finish(s, "error", done);
    done.back().second.error = error;
  }
  return false;
}

Engine::StepTokens Engine::sample_and_deliver(const std::vector<DecodeChunk>& batch,
                                              const std::vector<std::shared_ptr<Seq>>& rows,
                                              std::vector<Finished>& done) {
  StepTokens n;
  const int64_t V = dec_.config().vocab;
  const int32_t eos = dec_.config().eos;
  const int64_t L = dec_.config().n_layers;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::shared_ptr<Seq>& sp = rows[i];
    Seq& s = *sp;
    const bool prefill = s.generated == 0;
    s.fed += batch[i].n;
    if (prefill) n.prompt_fed += static_cast<uint64_t>(batch[i].n);
    if (s.fed < static_cast<int64_t>(s.tokens.size())) continue;  // prompt not complete yet
    float* row = logits_.ptr() + i * V;
    if (s.req.logprobs >= 0) raw_.assign(row, row + V);  // the sampler's penalties change the row
    const int32_t t = s.sampler->sample(row, V, s.tokens, s.req.prompt.size());
    s.tokens.push_back(t);
    ++s.generated;
    ++n.sampled;
    if (s.generated == 1) s.t_first = Clock::now();
    if (s.req.logprobs >= 0) call(s.cb.on_logprobs, token_logprobs(raw_.data(), V, t, s.req.logprobs));
    call(s.cb.on_token, t);
    const char* reason = nullptr;  // set when this token ends the request
    if (s.req.stop_at_eos && t == eos) {
      reason = "stop";
    } else {
      if (s.text) {
        const std::string delta = s.text->push(t);
        if (!delta.empty()) call(s.cb.on_text, delta);
        if (s.text->stopped()) reason = "stop";
      }
      if (!reason && (s.generated >= s.req.max_new_tokens || static_cast<int64_t>(s.tokens.size()) >= opt_.max_len))
        reason = "length";
    }
    if (reason && s.text) {  // the held-back rest of the text belongs to this last token
      const std::string tail = s.text->finish();
      if (!tail.empty()) call(s.cb.on_text, tail);
    }
    if (s.req.routing) {
      const auto row = scratch_.logit_ffn.begin() + static_cast<int64_t>(i) * L;
      call(s.cb.on_routing, std::vector<int32_t>(row, row + L));
    }
    if (reason) finish(sp, reason, done);
  }
  return n;
}

bool Engine::settle(std::vector<Finished>& done, bool ran, StepTokens n) {
  for (auto& [s, ev] : done) {
    if (s->text && ev.reason != "error") {
      const std::string tail = s->text->finish();
      if (!tail.empty()) call(s->cb.on_text, tail);
    }
    if (s->text) ev.text = s->text->emitted();
  }
  active_.erase(std::remove_if(active_.begin(), active_.end(), [](const auto& a) { return a->done; }),
                active_.end());
  bool more;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& d : done) live_.erase(d.first->id);
    n_active_ = static_cast<int64_t>(active_.size());
    if (ran) ++totals_.steps;
    if (governor_) totals_.thread_switches = static_cast<uint64_t>(governor_->switches());
    totals_.prompt_tokens += n.prompt_fed;
    totals_.generated_tokens += n.sampled;
    totals_.finished += done.size();
    more = !waiting_.empty() || !active_.empty() || !cancels_.empty();
  }
  for (auto& [s, ev] : done) call(s->cb.on_finish, ev);
  return more;
}

bool Engine::step() {
  std::vector<Finished> done;
  admit(done);
  std::vector<DecodeChunk> batch;
  std::vector<std::shared_ptr<Seq>> rows;
  build_batch(batch, rows);
  const bool ran = !batch.empty() && run_batch(batch, rows, done);
  const StepTokens n = ran ? sample_and_deliver(batch, rows, done) : StepTokens{};
  return settle(done, ran, n);
}

void Engine::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !waiting_.empty() || !cancels_.empty() || n_active_ > 0; });
      if (stopping_) return;
    }
    step();
  }
}

void Engine::start() {
  std::lock_guard<std::mutex> lk(mu_);
  if (stopped_ || thread_.joinable()) return;
  thread_ = std::thread(&Engine::loop, this);
}

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopped_) return;
    stopping_ = stopped_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::vector<Finished> done;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& w : waiting_) finish(w, "cancelled", done);
    waiting_.clear();
    for (auto& a : active_) finish(a, "cancelled", done);
    live_.clear();
    cancels_.clear();
    n_active_ = 0;
    totals_.finished += done.size();
  }
  for (auto& [s, ev] : done) {
    if (s->text) ev.text = s->text->emitted();
    call(s->cb.on_finish, ev);
  }
  active_.clear();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  EngineStats st = totals_;
  st.active = n_active_;
  st.waiting = static_cast<int64_t>(waiting_.size());
  return st;
}

}  // namespace moepp
