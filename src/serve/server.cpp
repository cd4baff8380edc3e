// The OpenAI-compatible HTTP server (see server.h): routes, the API-key check, the request -> engine
// bridge, SSE streaming, cancellation of requests whose client went away, JSON errors.
#include "serve/server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "serve/auth.h"
#include "serve/connection.h"
#include "serve/metrics.h"
#include "serve/openai_schema.h"
#include "serve/web_assets.h"

namespace moepp::serve {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// What the engine reports for one choice of a request.
struct ChoiceState {
  std::string pending;                      // text not yet sent
  std::vector<TokenLogprobs> logprobs;      // tokens' logprobs not yet sent (with logprobs on)
  // With moepp_routing: the text of the token being generated (it becomes sendable, in `pending`, with
  // that token's routing report) and the tokens' routing not yet sent.
  std::string unrouted;
  std::vector<TokenRoutingJson> routing;
  bool finished = false, reported = false;  // reported: its last chunk was sent (streaming)
  FinishEvent fin;
};

// The choices of one request, read by the HTTP thread that serves it.
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ChoiceState> choices;
  size_t n_finished = 0;
};

// A request ready for the engine (one GenerationRequest per choice), with what its response needs.
struct Job {
  std::vector<GenerationRequest> gens;
  bool chat = false, stream = false, include_usage = false;
  int64_t logprobs = -1;
  bool routing = false;  // moepp_routing
  std::string id, model;
  int64_t created = 0;
};

void set_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump(e.to_json()), "application/json");
}

// The API parameter that carries a GenerationRequest field ("" when none does).
std::string request_param(const std::string& field, bool chat) {
  if (field == "prompt") return chat ? "messages" : "prompt";
  if (field == "max_new_tokens") return "max_tokens";
  if (field == "stop") return "stop";
  if (field == "logprobs") return chat ? "top_logprobs" : "logprobs";
  return "";
}

std::string lstrip(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return s.substr(i);
}

// The tokens' texts as lstrip() leaves their joined text: leading whitespace removed from the first
// ones until one keeps some text. Returns whether one did.
bool lstrip_tokens(std::vector<TokenRoutingJson>& tokens) {
  for (TokenRoutingJson& t : tokens) {
    t.text = lstrip(t.text);
    if (!t.text.empty()) return true;
  }
  return false;
}

// Sent with every response: the chat page may load its own script, style and API and nothing else (no
// inline script or style, no other origin, no framing), and no response is sniffed as another type.
constexpr const char* kContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// How often a handler that waits for a non-streaming request's end looks whether its client is gone.
constexpr std::chrono::milliseconds kDisconnectPoll{50};

ConnectionLimits connection_limits(const ServerOptions& o) {
  ConnectionLimits l;
  l.read_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.read_timeout_s * 1000));
  l.write_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.write_timeout_s * 1000));
  l.threads = static_cast<size_t>(o.http_threads);
  l.max_pending = o.max_pending_connections;
  return l;
}

}  // namespace

struct Server::Impl {
  Engine& engine;
  const Tokenizer& tok;
  ServerOptions opt;
  HttpServer http;
  Metrics metrics;
  std::atomic<uint64_t> next_id{1};
  // Streaming responses not yet done: stop() lets them send their last events (the shutdown error)
  // before the HTTP server stops, which cuts every stream still open.
  std::mutex streams_mu;
  std::condition_variable streams_cv;
  int64_t open_streams = 0;
  int64_t started = std::time(nullptr);
  std::string bos_text, eos_text;  // bos_token / eos_token of the chat template
  std::vector<int32_t> max_ffn_experts;  // per layer, for moepp_routing

  Impl(Engine& e, const Tokenizer& t, ServerOptions o)
      : engine(e),
        tok(t),
        opt(std::move(o)),
        http(connection_limits(opt),
             dump(ApiError(503, "The server has too many connections waiting; retry later", "", "server_overloaded")
                      .to_json()),
             [this] { metrics.connection_rejected(); }),
        max_ffn_experts(engine.decoder().max_ffn_experts()) {
    if (opt.chat_template) {
      const ModelConfig& cfg = engine.decoder().config();
      bos_text = !opt.chat_template->bos_token.empty() ? opt.chat_template->bos_token : tok.id_to_piece(cfg.bos);
      eos_text = !opt.chat_template->eos_token.empty() ? opt.chat_template->eos_token : tok.id_to_piece(cfg.eos);
    }
  }

  bool authorized(const httplib::Request& q) const {
    return opt.api_key.empty() || bearer_matches(q.get_header_value("Authorization"), opt.api_key);
  }

  static void unauthorized(const httplib::Request& q, httplib::Response& res) {
    const std::string msg = q.has_header("Authorization")
                                ? "Incorrect API key provided"
                                : "You didn't provide an API key: send it as 'Authorization: Bearer <key>'";
    res.set_header("WWW-Authenticate", "Bearer");
    set_error(res, ApiError(401, msg, "", "invalid_api_key", "invalid_request_error"));
  }

  // A route's handler behind the API-key check (every route but /health).
  httplib::Server::Handler guarded(httplib::Server::Handler h) {
    return [this, h = std::move(h)](const httplib::Request& q, httplib::Response& res) {
      if (authorized(q))
        h(q, res);
      else
        unauthorized(q, res);
    };
  }

  // The name a request asked for, or its main name when it named none; 404 model_not_found for a name
  // that is not served.
  std::string served_name(const std::string& asked) const {
    if (asked.empty()) return opt.model_name;
    if (asked == opt.model_name) return asked;
    for (const std::string& a : opt.aliases)
      if (asked == a) return asked;
    throw ApiError(404, "The model '" + asked + "' does not exist (served: " + names_list() + ")", "model",
                   "model_not_found");
  }
  std::string names_list() const {
    std::string s = opt.model_name;
    for (const std::string& a : opt.aliases) s += ", " + a;
    return s;
  }
  json model_json(const std::string& name) const {
    return json{{"id", name}, {"object", "model"}, {"created", started}, {"owned_by", "moepp"},
                {"max_model_len", engine.max_len()}};
  }

  // Tokenises and checks a parsed request against the context; throws ApiError.
  Job prepare(const CompletionRequest& r) {
    Job job;
    job.model = served_name(r.model);
    job.chat = r.chat;
    job.stream = r.stream;
    job.include_usage = r.include_usage;
    job.logprobs = r.logprobs;
    job.routing = r.routing;
    job.created = std::time(nullptr);
    job.id = std::string(r.chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
    const ModelConfig& cfg = engine.decoder().config();
    GenerationRequest gen;
    std::vector<int32_t>& ids = gen.prompt;
    const char* prompt_param = r.chat ? "messages" : "prompt";
    if (!r.chat && !r.prompt_ids.empty()) {
      ids = r.prompt_ids;  // range-checked once, by Engine::submit (400 naming 'prompt', see submit())
    } else if (r.chat && opt.chat_template) {
      // The checkpoint's template: bos only where it writes bos_token; its special strings are ids.
      std::string text;
      try {
        text = opt.chat_template->tmpl.render(r.messages, true, bos_text, eos_text);
      } catch (const ChatTemplateError& e) {
        throw ApiError(400, std::string("The chat template refused the messages: ") + e.what(), "messages");
      }
      ids = encode_with_specials(tok, text, {{bos_text, cfg.bos}, {eos_text, cfg.eos}});
    } else {
      ids.push_back(cfg.bos);
      for (int32_t t : tok.encode(r.chat ? chat_prompt(r.messages) : r.prompt)) ids.push_back(t);
    }
    const int64_t ctx = engine.max_len(), P = static_cast<int64_t>(ids.size());
    if (P >= ctx)
      throw ApiError(400,
                     "This model's maximum context length is " + std::to_string(ctx) + " tokens, but the prompt has " +
                         std::to_string(P) + " tokens (at least one token must be left for the completion)",
                     prompt_param, "context_length_exceeded");
    if (r.max_tokens) {
      if (P + *r.max_tokens > ctx)
        throw ApiError(400,
                       "This model's maximum context length is " + std::to_string(ctx) + " tokens, but " +
                           std::to_string(P + *r.max_tokens) + " were requested (" + std::to_string(P) +
                           " in the prompt, " + std::to_string(*r.max_tokens) + " for the completion)",
                       "max_tokens", "context_length_exceeded");
      gen.max_new_tokens = *r.max_tokens;
    } else {
      gen.max_new_tokens = r.chat ? ctx - P : std::min<int64_t>(16, ctx - P);
    }
    gen.sampling = r.sampling;
    gen.stop = r.stop;
    if (r.chat) {
      if (!opt.chat_template)
        gen.stop.push_back(kChatStop);
      else if (!eos_text.empty())
        gen.stop.push_back(eos_text);  // the end of a turn written out as text
    }
    gen.stop_at_eos = !r.ignore_eos;
    gen.logprobs = r.logprobs;
    gen.routing = r.routing;
    // Choice i draws with seed + i (reproducible per choice for a given seed), or a random seed.
    for (int64_t i = 0; i < r.n; ++i) {
      job.gens.push_back(gen);
      job.gens.back().sampling.seed =
          r.seed_given ? r.sampling.seed + static_cast<uint64_t>(i)
                       : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
    }
    return job;
  }

  // Submits a job's choices, all or none, their events going to ch; returns their engine ids. Throws
  // ApiError (429 when the engine cannot queue all of them).
  std::vector<uint64_t> submit(Job& job, const std::shared_ptr<Channel>& ch) {
    const int32_t eos = engine.decoder().config().eos;
    ch->choices.resize(job.gens.size());
    std::vector<GenerationCallbacks> cbs(job.gens.size());
    for (size_t i = 0; i < cbs.size(); ++i) {
      GenerationCallbacks& cb = cbs[i];
      const bool routing = job.routing;
      cb.on_text = [ch, i, routing](const std::string& text) {
        {
          std::lock_guard<std::mutex> lk(ch->mu);
          (routing ? ch->choices[i].unrouted : ch->choices[i].pending) += text;
        }
        ch->cv.notify_all();
      };
      if (routing) {
        // The engine reports a token's routing after its text: the token takes the text since the last.
        cb.on_routing = [ch, i](const std::vector<int32_t>& ffn) {
          {
            std::lock_guard<std::mutex> lk(ch->mu);
            ChoiceState& c = ch->choices[i];
            c.routing.push_back({c.unrouted, ffn});
            c.pending += c.unrouted;
            c.unrouted.clear();
          }
          ch->cv.notify_all();
        };
      }
      if (job.logprobs >= 0) {
        const bool skip_eos = job.gens[i].stop_at_eos;  // the EOS that ends a reply is not part of it
        cb.on_logprobs = [ch, i, eos, skip_eos](const TokenLogprobs& lp) {
          if (skip_eos && lp.chosen.token == eos) return;
          std::lock_guard<std::mutex> lk(ch->mu);
          ch->choices[i].logprobs.push_back(lp);
        };
      }
      cb.on_finish = [this, ch, i](const FinishEvent& ev) {
        metrics.request_finished(ev.reason, ev.prompt_tokens, ev.completion_tokens,
                                 ev.queue_s + ev.prefill_s + ev.decode_s, ev.queue_s + ev.prefill_s,
                                 ev.completion_tokens > 0);
        {
          std::lock_guard<std::mutex> lk(ch->mu);
          ChoiceState& c = ch->choices[i];
          c.pending += c.unrouted;  // text after the last token's report (only when a request is cancelled)
          c.unrouted.clear();
          c.finished = true;
          c.fin = ev;
          ++ch->n_finished;
        }
        ch->cv.notify_all();
      };
    }
    try {
      return engine.submit_all(std::move(job.gens), std::move(cbs));
    } catch (const EngineFullError& e) {
      throw ApiError(429, std::string("The server is busy (") + e.what() + "); retry later", "", "queue_full");
    } catch (const EngineStoppedError&) {
      throw ApiError(503, "The server is shutting down", "", "shutting_down");
    } catch (const InvalidRequestError& e) {
      throw ApiError(400, e.what(), request_param(e.field(), job.chat));
    } catch (const Error& e) {
      throw ApiError(400, e.what());
    }
  }

  void cancel_all(const std::vector<uint64_t>& rids) {
    for (uint64_t rid : rids) engine.cancel(rid);
  }

  void completions(const httplib::Request& req, httplib::Response& res, bool chat) {
    try {
      const CompletionRequest r = parse_completion_request(req.body, chat);
      Job job = prepare(r);
      auto ch = std::make_shared<Channel>();
      const std::vector<uint64_t> rids = submit(job, ch);
      if (job.stream)
        stream(res, job, rids, ch);
      else
        respond(res, job, rids, ch);
    } catch (const ApiError& e) {
      set_error(res, e);
    }
  }

  // A token as logprobs show it: its piece with SentencePiece's U+2581 read as a space; a byte piece is
  // that byte, written "bytes:\xNN" when it is not a character alone.
  TokenLogprobJson token_json(const TokenLogprob& t) const {
    TokenLogprobJson out;
    out.logprob = t.logprob;
    if (tok.is_byte(t.token)) {
      const unsigned byte = static_cast<unsigned>(std::stoul(tok.id_to_piece(t.token).substr(3, 2), nullptr, 16));
      out.bytes = {static_cast<uint8_t>(byte)};
      if (byte < 0x80) {
        out.token = std::string(1, static_cast<char>(byte));
      } else {
        char hex[32];
        std::snprintf(hex, sizeof hex, "bytes:\\x%02x", byte);
        out.token = hex;
      }
      return out;
    }
    const std::string piece = tok.id_to_piece(t.token);
    static const std::string kSpace = "\xE2\x96\x81";  // U+2581
    for (size_t i = 0; i < piece.size();) {  // (built anew: an in-place replace() trips g++ 12's -Wrestrict)
      if (piece.compare(i, kSpace.size(), kSpace) == 0) {
        out.token += ' ';
        i += kSpace.size();
      } else {
        out.token += piece[i++];
      }
    }
    out.bytes.assign(out.token.begin(), out.token.end());
    return out;
  }

  // The logprobs JSON of a choice's tokens (null when not asked for); offset: the completion's text
  // already sent before these tokens (legacy text_offset).
  json logprobs_json(const Job& job, const std::vector<TokenLogprobs>& lps, int64_t& offset) const {
    if (job.logprobs < 0) return nullptr;
    std::vector<TokenLogprobsJson> toks;
    for (const TokenLogprobs& lp : lps) {
      TokenLogprobsJson t;
      t.chosen = token_json(lp.chosen);
      for (const TokenLogprob& a : lp.top) t.top.push_back(token_json(a));
      toks.push_back(std::move(t));
    }
    if (job.chat) return chat_logprobs_json(toks);
    const json j = completion_logprobs_json(toks, offset);
    for (const TokenLogprobsJson& t : toks) offset += static_cast<int64_t>(t.chosen.bytes.size());
    return j;
  }

  // Waits for the end of every choice of a non-streaming request; a client that goes away meanwhile
  // (queued or running) cancels them, which frees their slots.
  void respond(httplib::Response& res, const Job& job, const std::vector<uint64_t>& rids,
               const std::shared_ptr<Channel>& ch) {
    bool gone = false;
    std::vector<ChoiceState> done;
    {
      std::unique_lock<std::mutex> lk(ch->mu);
      while (!ch->cv.wait_for(lk, kDisconnectPoll, [&] { return ch->n_finished == ch->choices.size(); })) {
        if (gone || !HttpServer::client_gone()) continue;
        gone = true;
        lk.unlock();
        cancel_all(rids);
        metrics.client_disconnected();
        lk.lock();
      }
      done = ch->choices;
    }
    if (gone) throw ApiError(499, "The client closed the connection; the request was cancelled", "", "client_closed");
    std::vector<Choice> choices;
    Usage usage;
    for (size_t i = 0; i < done.size(); ++i) {
      const FinishEvent& ev = done[i].fin;
      if (ev.reason == "error") throw ApiError(500, "Generation failed: " + ev.error, "", "internal_error");
      if (ev.reason == "cancelled") throw ApiError(503, "The server is shutting down", "", "shutting_down");
      int64_t offset = 0;
      choices.push_back({static_cast<int64_t>(i), job.chat ? lstrip(ev.text) : ev.text, ev.reason,
                         logprobs_json(job, done[i].logprobs, offset)});
      if (job.routing) {
        if (job.chat) lstrip_tokens(done[i].routing);
        choices.back().routing = routing_json(done[i].routing, max_ffn_experts);
      }
      usage.prompt_tokens = ev.prompt_tokens;
      usage.completion_tokens += ev.completion_tokens;
    }
    res.set_content(dump(completion_json(job.id, job.created, job.model, job.chat, choices, usage)),
                    "application/json");
  }

  // Server-sent events: "data: {chunk}\n\n" per piece of text of a choice (chunks of the n choices
  // interleave, each tagged with its index), a chunk with each choice's finish_reason, an optional usage
  // chunk, then "data: [DONE]\n\n". A failed write ends the stream and cancels every choice.
  void stream(httplib::Response& res, const Job& job, const std::vector<uint64_t>& rids,
              const std::shared_ptr<Channel>& ch) {
    struct State {
      bool role_sent = false, done = false;
      std::vector<bool> content_started;
      std::vector<int64_t> offset;  // legacy text_offset per choice
      Clock::time_point last_write = Clock::now();
    };
    auto st = std::make_shared<State>();
    {
      std::lock_guard<std::mutex> lk(streams_mu);
      ++open_streams;
    }
    st->content_started.assign(rids.size(), false);
    st->offset.assign(rids.size(), 0);
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, job, rids, ch, st](size_t, httplib::DataSink& sink) -> bool {
          auto write = [&](const std::string& s) {
            if (!sink.write(s.data(), s.size())) return false;
            st->last_write = Clock::now();
            return true;
          };
          auto event = [&](const json& j) { return write("data: " + dump(j) + "\n\n"); };
          auto gone = [&] {
            cancel_all(rids);
            metrics.client_disconnected();
            return false;
          };
          if (st->done) return false;
          if (job.chat && !st->role_sent) {
            st->role_sent = true;
            for (size_t i = 0; i < rids.size(); ++i)
              if (!event(chunk_json(job.id, job.created, job.model, true, Choice{static_cast<int64_t>(i), "", "", nullptr},
                                    true)))
                return gone();
          }
          // What every choice has new: text, logprobs, and whether it ended (reported once).
          struct New {
            std::string text;
            std::vector<TokenLogprobs> logprobs;
            std::vector<TokenRoutingJson> routing;
          };
          std::vector<New> fresh(rids.size());
          std::vector<FinishEvent> ended;
          bool all_done = false;
          {
            std::unique_lock<std::mutex> lk(ch->mu);
            const auto has_news = [&] {
              for (const ChoiceState& c : ch->choices)
                if (!c.pending.empty() || !c.logprobs.empty() || !c.routing.empty() || (c.finished && !c.reported))
                  return true;
              return false;
            };
            ch->cv.wait_for(lk, std::chrono::milliseconds(250), has_news);
            for (size_t i = 0; i < rids.size(); ++i) {
              ChoiceState& c = ch->choices[i];
              fresh[i].text.swap(c.pending);
              fresh[i].logprobs.swap(c.logprobs);
              fresh[i].routing.swap(c.routing);
              c.reported = c.finished;
            }
            all_done = ch->n_finished == ch->choices.size();
            if (all_done)
              for (const ChoiceState& c : ch->choices) ended.push_back(c.fin);
          }
          for (size_t i = 0; i < rids.size(); ++i) {
            New& f = fresh[i];
            if (job.chat && !st->content_started[i]) {
              f.text = lstrip(f.text);
              lstrip_tokens(f.routing);
              st->content_started[i] = !f.text.empty();
            }
            const int64_t index = static_cast<int64_t>(i);
            if (!f.text.empty() || !f.logprobs.empty() || !f.routing.empty()) {
              Choice c{index, f.text, "", logprobs_json(job, f.logprobs, st->offset[i])};
              if (job.routing) c.routing = routing_json(f.routing, max_ffn_experts);
              if (!event(chunk_json(job.id, job.created, job.model, job.chat, c))) return gone();
            }
          }
          if (all_done) {
            st->done = true;
            bool ok = true;
            Usage usage;
            for (const FinishEvent& ev : ended) {
              if (ev.reason == "error" || ev.reason == "cancelled") {
                const ApiError e = ev.reason == "error"
                                       ? ApiError(500, "Generation failed: " + ev.error, "", "internal_error")
                                       : ApiError(503, "The server is shutting down", "", "shutting_down");
                ok = event(e.to_json()) && write("data: [DONE]\n\n");
                if (!ok) return false;
                sink.done();
                return true;
              }
              usage.prompt_tokens = ev.prompt_tokens;
              usage.completion_tokens += ev.completion_tokens;
            }
            for (size_t i = 0; ok && i < ended.size(); ++i)
              ok = event(chunk_json(job.id, job.created, job.model, job.chat,
                                    Choice{static_cast<int64_t>(i), "", ended[i].reason, nullptr}));
            if (ok && job.include_usage) ok = event(usage_chunk_json(job.id, job.created, job.model, job.chat, usage));
            if (ok) ok = write("data: [DONE]\n\n");
            if (!ok) return false;
            sink.done();
            return true;
          }
          // Nothing new: a comment line now and then, so that a vanished client is noticed even while
          // the request waits for a slot.
          if (Clock::now() - st->last_write > std::chrono::seconds(1) && !write(": keep-alive\n\n")) return gone();
          if (!sink.is_writable()) return gone();
          return true;
        },
        [this, rids](bool) {
          cancel_all(rids);
          {
            std::lock_guard<std::mutex> lk(streams_mu);
            --open_streams;
          }
          streams_cv.notify_all();
        });
  }

  // Stops the engine (open requests end as cancelled), gives open streams up to `grace` to send their
  // last events, then stops the HTTP server.
  void stop(std::chrono::milliseconds grace) {
    engine.stop();
    {
      std::unique_lock<std::mutex> lk(streams_mu);
      streams_cv.wait_for(lk, grace, [&] { return open_streams == 0; });
    }
    http.stop();
  }

  void setup() {
    http.set_payload_max_length(opt.max_body_bytes);
    http.set_default_headers({{"Content-Security-Policy", kContentSecurityPolicy},
                              {"X-Content-Type-Options", "nosniff"},
                              {"Referrer-Policy", "no-referrer"}});

    // The chat page: open without the API key, like /health (it holds no secret; the key the user types
    // into it goes with its API requests).
    for (const WebAsset& a : web_assets()) {
      std::string pattern;
      for (char c : a.path) {
        if (c == '.') pattern += '\\';
        pattern += c;
      }
      http.Get(pattern, [a](const httplib::Request&, httplib::Response& res) {
        res.set_header("Cache-Control", "no-cache");
        res.set_content(a.body.data(), a.body.size(), std::string(a.content_type));
      });
    }
    http.Get("/favicon.ico", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });

    http.Post("/v1/completions",
              guarded([this](const httplib::Request& q, httplib::Response& s) { completions(q, s, false); }));
    http.Post("/v1/chat/completions",
              guarded([this](const httplib::Request& q, httplib::Response& s) { completions(q, s, true); }));
    http.Get("/v1/models", guarded([this](const httplib::Request&, httplib::Response& res) {
      json data = json::array({model_json(opt.model_name)});
      for (const std::string& a : opt.aliases) data.push_back(model_json(a));
      res.set_content(dump(json{{"object", "list"}, {"data", data}}), "application/json");
    }));
    http.Get(R"(/v1/models/(.+))", guarded([this](const httplib::Request& q, httplib::Response& res) {
      try {
        res.set_content(dump(model_json(served_name(q.matches[1].str()))), "application/json");
      } catch (const ApiError& e) {
        set_error(res, e);
      }
    }));
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const EngineStats s = engine.stats();
      res.set_content(dump(json{{"status", "ok"},
                                {"model", opt.model_name},
                                {"active_slots", s.active},
                                {"slots", s.n_slots},
                                {"queue_length", s.waiting}}),
                      "application/json");
    });
    http.Get("/metrics", guarded([this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.render(engine.stats()), "text/plain; version=0.0.4; charset=utf-8");
    }));
    for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
      http.Get(path, guarded([](const httplib::Request& q, httplib::Response& res) {
        set_error(res, ApiError(405, "Method GET is not allowed for " + q.path + " (use POST)", "", "method_not_allowed"));
      }));
    }
    for (const char* path : {"/v1/models", R"(/v1/models/(.+))", "/health", "/metrics"}) {
      http.Post(path, guarded([](const httplib::Request& q, httplib::Response& res) {
        set_error(res, ApiError(405, "Method POST is not allowed for " + q.path + " (use GET)", "", "method_not_allowed"));
      }));
    }
    http.set_error_handler([this](const httplib::Request& q, httplib::Response& res) {
      if (!res.body.empty()) return;  // a handler's own JSON error
      if (res.status == 404 && !authorized(q)) {  // no route is shown to a client without the key
        res.status = 401;
        unauthorized(q, res);
        return;
      }
      if (res.status == 400 && HttpServer::read_timed_out()) res.status = 408;
      std::string msg;
      if (res.status == 404) msg = "Unknown endpoint: " + q.method + " " + q.path;
      else if (res.status == 408) msg = "The request did not arrive within the read timeout";
      else if (res.status == 413) msg = "The request body is too large";
      else msg = std::string("HTTP error ") + std::to_string(res.status);
      set_error(res, ApiError(res.status, msg));
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string msg = "internal error";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const ApiError& e) {
        set_error(res, e);
        return;
      } catch (const std::exception& e) {
        msg = e.what();
      } catch (...) {
      }
      set_error(res, ApiError(500, "Internal error: " + msg, "", "internal_error"));
    });
    http.set_logger([this](const httplib::Request& q, const httplib::Response& res) {
      static const char* known[] = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"};
      std::string path = "other";
      for (const char* k : known)
        if (q.path == k) path = k;
      if (q.path.rfind("/v1/models/", 0) == 0) path = "/v1/models/{id}";
      for (const WebAsset& a : web_assets())
        if (q.path == a.path) path = "page";
      metrics.http_response(path, res.status);
    });
  }
};

Server::Server(Engine& engine, const Tokenizer& tok, ServerOptions opt) {
  if (opt.http_threads <= 0) opt.http_threads = engine.options().n_slots + engine.options().max_queue + 4;
  impl_ = std::make_unique<Impl>(engine, tok, std::move(opt));
  impl_->setup();
}

Server::~Server() {
  // The engine's callbacks point into impl_: no request may outlive it.
  impl_->engine.stop();
  impl_->http.stop();
}

int Server::bind() {
  Impl& m = *impl_;
  int port = m.opt.port;
  if (port == 0) {
    port = m.http.bind_to_any_port(m.opt.host);
    check(port > 0, "serve: cannot listen on " + m.opt.host + " (any port)");
  } else {
    check(m.http.bind_to_port(m.opt.host, port),
          "serve: cannot listen on " + m.opt.host + ":" + std::to_string(port) + " (address in use or not local?)");
  }
  check(m.http.widen_backlog(1024), "serve: cannot set the listen backlog");
  return port;
}

void Server::run() {
  impl_->engine.start();
  impl_->http.listen_after_bind();
}

void Server::stop() { impl_->stop(std::chrono::seconds(2)); }

}  // namespace moepp::serve
