// Engine: runs generation requests with continuous batching over one Decoder and one KvCache with a
// fixed number of sequence slots. Each step
//   1. drops cancelled requests and admits waiting ones (FIFO) into free slots,
//   2. builds ONE Decoder::forward batch: a single decode token for every sequence that is generating,
//      plus prompt chunks of sequences still in prefill (at most prefill_chunk tokens of one sequence
//      and step_prefill_tokens in all per step, so a long prompt never stalls the others' decoding),
//   3. samples the next token of every sequence whose prompt is complete (SamplingParams per request,
//      history = prompt + generated), and delivers it: on_token (id), on_text (new complete text, when
//      a tokenizer is given: see text_stream.h), on_routing (when asked for) and, when the request
//      ends, on_finish.
// A request ends with finish_reason "stop" (EOS when stop_at_eos, or a stop string), "length"
// (max_new_tokens reached, or the slot's context is full), "cancelled" (cancel() or engine shutdown) or
// "error" (the decoder threw; message in FinishEvent::error). Its slot is freed at once.
//
// Memory is fixed: n_slots KV-cache slots of max_len positions, and at most n_slots + max_queue
// requests in the engine (submit() throws EngineFullError beyond that).
//
// Threads: submit(), cancel() and stats() may be called from any thread. Either start() a background
// thread that steps while there is work, or call step() yourself (one thread; not both). Callbacks run
// on the stepping thread, outside the engine's lock (they may call submit/cancel, not stop); keep them
// short. An exception thrown by a callback is dropped.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/error.h"
#include "infer/decoder.h"
#include "infer/kv_cache.h"
#include "infer/sampler.h"
#include "infer/thread_governor.h"

namespace moepp {

class Tokenizer;

// submit() when n_slots + max_queue requests are already in the engine.
class EngineFullError : public Error {
 public:
  using Error::Error;
};
// submit() after stop().
class EngineStoppedError : public Error {
 public:
  using Error::Error;
};
// submit() for an invalid request; field() is the GenerationRequest field at fault ("prompt",
// "max_new_tokens", "logprobs" or "stop"), so that a front end can name its own parameter (serve: HTTP 400).
class InvalidRequestError : public Error {
 public:
  InvalidRequestError(std::string field, const std::string& message) : Error(message), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

struct EngineOptions {
  int64_t n_slots = 8;                // sequences decoded together
  int64_t max_len = 0;                // context (positions) per slot; 0 = the model's max_pos
  int64_t max_queue = 64;             // requests waiting for a slot, beyond the n_slots running
  int64_t prefill_chunk = 256;        // most prompt tokens of one sequence per step
  int64_t step_prefill_tokens = 512;  // most prompt tokens of all sequences per step
  // Decode-only steps of up to kGovernedRows rows (the streaming products) take their OpenMP thread
  // count from a ThreadGovernor (infer/thread_governor.h): fewer threads while other processes hold
  // cores; the outputs stay the same bits. On by default (its quiet-machine cost measured within the
  // noise; README "Decode under CPU contention"); generate/serve --no-adaptive-threads turn it off.
  bool adaptive_threads = true;
  static constexpr int64_t kGovernedRows = 8;
  void validate() const;              // throws moepp::Error naming the field
};

struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids (bos included if wanted); 1 <= size < max_len
  int64_t max_new_tokens = 16;  // >= 0 (0: finishes at once with "length")
  SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings (need a tokenizer); the text is cut before them
  bool stop_at_eos = true;        // EOS ends the request ("stop"); the EOS id is counted, not printed
  // >= 0: on_logprobs reports every sampled token's log-probability and this many most likely
  // alternatives (at most 20), from the model's own distribution: the log-softmax of the raw logits,
  // before any penalty, temperature or truncation (vLLM's default). -1: off.
  int64_t logprobs = -1;
  // true: on_routing reports, for every sampled token, how many FFN experts each MoE layer ran in the
  // pass that computed its logits (Decoder's DecoderScratch::logit_ffn for this sequence's row).
  bool routing = false;
};

struct FinishEvent {
  std::string reason;  // "stop" | "length" | "cancelled" | "error"
  std::string error;   // message when reason == "error"
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // tokens sampled (an EOS that stopped the request included)
  std::string text;               // all text delivered through on_text (with a tokenizer)
  double queue_s = 0;             // submit -> admitted into a slot
  double prefill_s = 0;           // admitted -> first token sampled (0 when none was)
  double decode_s = 0;            // first token -> finish
};

struct GenerationCallbacks {
  std::function<void(int32_t token)> on_token;            // every sampled token, in order
  std::function<void(const TokenLogprobs& lp)> on_logprobs;  // with logprobs >= 0: before on_token
  std::function<void(const std::string& text)> on_text;   // non-empty pieces of new text
  // With routing: [n_layers] FFN experts per layer, once per sampled token, after that token's
  // on_token and on_text (and, when the token ends the request, after the rest of the text is
  // flushed), so the text delivered since the previous on_routing is what this token released.
  std::function<void(const std::vector<int32_t>& ffn_per_layer)> on_routing;
  std::function<void(const FinishEvent& finish)> on_finish;  // exactly once per accepted request
};

struct EngineStats {
  int64_t n_slots = 0, max_queue = 0, max_len = 0;
  int64_t active = 0;   // requests holding a slot
  int64_t waiting = 0;  // requests queued for a slot
  uint64_t steps = 0;                 // forward passes run
  uint64_t prompt_tokens = 0;         // prompt tokens prefilled, all requests
  uint64_t generated_tokens = 0;      // tokens sampled, all requests
  uint64_t finished = 0;              // requests finished (any reason)
  uint64_t thread_switches = 0;       // adaptive_threads: the ThreadGovernor's level changes
};

class Engine {
 public:
  // tokenizer may be null (no text: on_text is never called and stop strings are refused); it must
  // outlive the engine. Allocates the KV cache.
  Engine(const Decoder& decoder, const Tokenizer* tokenizer, EngineOptions opt);
  ~Engine();  // stop()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const EngineOptions& options() const { return opt_; }
  int64_t max_len() const { return opt_.max_len; }
  // Bytes of the KV cache, allocated once by the constructor (KvCache::bytes; fixed, so safe to read
  // from any thread).
  size_t cache_bytes() const { return cache_.bytes(); }
  const Decoder& decoder() const { return dec_; }

  // Validates and queues a request; returns its id (> 0). This is where a prompt's token ids are
  // range-checked, once, for every caller (serve and generate pass the ids unchecked); the decoder is
  // then only given ids in the vocabulary. Throws InvalidRequestError naming the field for an invalid
  // request (empty prompt, prompt not shorter than max_len, token id outside the vocabulary,
  // max_new_tokens < 0, stop strings that are empty or without a tokenizer), moepp::Error naming the
  // parameter for bad sampling parameters, EngineFullError when full, and EngineStoppedError after
  // stop().
  uint64_t submit(GenerationRequest req, GenerationCallbacks cb);
  // Several requests at once, all or none: each is validated as by submit(), and EngineFullError is
  // thrown unless the engine can queue all of them (for n choices of one API request). Returns their
  // ids in order; each takes its own slot when admitted.
  std::vector<uint64_t> submit_all(std::vector<GenerationRequest> reqs, std::vector<GenerationCallbacks> cbs);

  // Asks to end a request (its on_finish reports "cancelled" at the next step, unless it finished
  // first). Returns false when the id is unknown or already finished.
  bool cancel(uint64_t id);

  // One scheduling step (see above). Returns true when requests remain (waiting or active).
  bool step();

  // Background stepping thread; stop() ends it and cancels every remaining request (on_finish
  // "cancelled"), after which submit() throws. Both are idempotent.
  void start();
  void stop();

  EngineStats stats() const;

 private:
  struct Seq;
  using Finished = std::pair<std::shared_ptr<Seq>, FinishEvent>;
  // Ends s: frees its slot and queues its finish event (callbacks run later, outside the lock).
  void finish(const std::shared_ptr<Seq>& s, const std::string& reason, std::vector<Finished>& done);
  void loop();
  // Validates req and builds its sequence (submit's checks); throws as submit() does.
  std::shared_ptr<Seq> make_seq(GenerationRequest req, GenerationCallbacks cb) const;

  // The phases of step(), in order; `done` collects the requests that end in this step.
  struct StepTokens {
    uint64_t prompt_fed = 0, sampled = 0;  // prompt tokens run and tokens sampled in one step
  };
  // 1. Handles the cancels asked for and moves waiting requests into free slots.
  void admit(std::vector<Finished>& done);
  // 2. Appends a decode token per generating sequence and prompt chunks within the step's budget;
  //    rows[i] is the sequence of batch[i].
  void build_batch(std::vector<DecodeChunk>& batch, std::vector<std::shared_ptr<Seq>>& rows) const;
  // 3. Runs the decoder into logits_; when it throws, ends every row with "error" and returns false.
  bool run_batch(const std::vector<DecodeChunk>& batch, const std::vector<std::shared_ptr<Seq>>& rows,
                 std::vector<Finished>& done);
  // 4. Advances every row past its chunk and samples for those whose prompt is complete (callbacks
  //    on_token/on_text), ending those that stop or reach their length.
  StepTokens sample_and_deliver(const std::vector<DecodeChunk>& batch, const std::vector<std::shared_ptr<Seq>>& rows,
                                std::vector<Finished>& done);
  // 5. Flushes the text of ended requests, drops them, updates the totals and calls on_finish.
  //    Returns whether requests remain.
  bool settle(std::vector<Finished>& done, bool ran, StepTokens n);

  const Decoder& dec_;
  const Tokenizer* tok_;
  EngineOptions opt_;
  KvCache cache_;
  DecoderScratch scratch_;
  Tensor logits_;
  std::vector<float> raw_;  // a row of logits before sampling (for logprobs)
  std::unique_ptr<ThreadGovernor> governor_;  // with adaptive_threads; used by the stepping thread

  // Owned by the stepping thread.
  std::vector<std::shared_ptr<Seq>> active_;
  std::vector<int64_t> free_slots_;

  // Shared; guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Seq>> waiting_;
  std::unordered_set<uint64_t> live_;     // waiting or active
  std::unordered_set<uint64_t> cancels_;  // asked to cancel, not yet handled
  uint64_t next_id_ = 1;
  int64_t n_active_ = 0;
  EngineStats totals_;
  bool stopping_ = false, stopped_ = false;
  std::thread thread_;
};

}  // namespace moepp
