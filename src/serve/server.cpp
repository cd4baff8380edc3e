// The OpenAI-compatible HTTP server (see server.h): routes, the API-key check, the request -> engine
// bridge, SSE streaming, cancellation of requests whose client went away, JSON errors.
#include "serve/server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <random>

#include "serve/auth.h"
#include "serve/connection.h"
#include "serve/metrics.h"
#include "serve/openai_schema.h"

namespace moepp::serve {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// What the engine reports for one request, read by the HTTP thread that serves it.
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::string pending;  // text not yet sent
  bool finished = false;
  FinishEvent fin;
};

// A request ready for the engine, with what its response needs.
struct Job {
  GenerationRequest gen;
  bool chat = false, stream = false, include_usage = false;
  std::string id;
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
  return "";
}

std::string lstrip(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return s.substr(i);
}

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
  int64_t started = std::time(nullptr);

  Impl(Engine& e, const Tokenizer& t, ServerOptions o)
      : engine(e),
        tok(t),
        opt(std::move(o)),
        http(connection_limits(opt),
             dump(ApiError(503, "The server has too many connections waiting; retry later", "", "server_overloaded")
                      .to_json()),
             [this] { metrics.connection_rejected(); }) {}

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

  // Tokenises and checks a parsed request against the context; throws ApiError.
  Job prepare(const CompletionRequest& r) {
    Job job;
    job.chat = r.chat;
    job.stream = r.stream;
    job.include_usage = r.include_usage;
    job.created = std::time(nullptr);
    job.id = std::string(r.chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
    const ModelConfig& cfg = engine.decoder().config();
    std::vector<int32_t>& ids = job.gen.prompt;
    const char* prompt_param = r.chat ? "messages" : "prompt";
    if (!r.chat && !r.prompt_ids.empty()) {
      ids = r.prompt_ids;  // range-checked once, by Engine::submit (400 naming 'prompt', see submit())
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
      job.gen.max_new_tokens = *r.max_tokens;
    } else {
      job.gen.max_new_tokens = r.chat ? ctx - P : std::min<int64_t>(16, ctx - P);
    }
    job.gen.sampling = r.sampling;
    if (!r.seed_given) job.gen.sampling.seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
    job.gen.stop = r.stop;
    if (r.chat) job.gen.stop.push_back(kChatStop);
    job.gen.stop_at_eos = !r.ignore_eos;
    return job;
  }

  // Submits a job whose events go to ch; throws ApiError (429 when the engine is full).
  uint64_t submit(Job& job, const std::shared_ptr<Channel>& ch) {
    GenerationCallbacks cb;
    cb.on_text = [ch](const std::string& text) {
      {
        std::lock_guard<std::mutex> lk(ch->mu);
        ch->pending += text;
      }
      ch->cv.notify_all();
    };
    cb.on_finish = [this, ch](const FinishEvent& ev) {
      metrics.request_finished(ev.reason, ev.prompt_tokens, ev.completion_tokens,
                               ev.queue_s + ev.prefill_s + ev.decode_s, ev.queue_s + ev.prefill_s,
                               ev.completion_tokens > 0);
      {
        std::lock_guard<std::mutex> lk(ch->mu);
        ch->finished = true;
        ch->fin = ev;
      }
      ch->cv.notify_all();
    };
    try {
      return engine.submit(std::move(job.gen), std::move(cb));
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

  void completions(const httplib::Request& req, httplib::Response& res, bool chat) {
    try {
      const CompletionRequest r = parse_completion_request(req.body, chat);
      Job job = prepare(r);
      auto ch = std::make_shared<Channel>();
      const uint64_t rid = submit(job, ch);
      if (job.stream)
        stream(res, job, rid, ch);
      else
        respond(res, job, rid, ch);
    } catch (const ApiError& e) {
      set_error(res, e);
    }
  }

  // Waits for the end of a non-streaming request; a client that goes away meanwhile (queued or
  // running) cancels it, which frees its slot.
  void respond(httplib::Response& res, const Job& job, uint64_t rid, const std::shared_ptr<Channel>& ch) {
    FinishEvent ev;
    bool gone = false;
    {
      std::unique_lock<std::mutex> lk(ch->mu);
      while (!ch->cv.wait_for(lk, kDisconnectPoll, [&] { return ch->finished; })) {
        if (gone || !HttpServer::client_gone()) continue;
        gone = true;
        lk.unlock();
        engine.cancel(rid);
        metrics.client_disconnected();
        lk.lock();
      }
      ev = ch->fin;
    }
    if (gone) throw ApiError(499, "The client closed the connection; the request was cancelled", "", "client_closed");
    if (ev.reason == "error") throw ApiError(500, "Generation failed: " + ev.error, "", "internal_error");
    if (ev.reason == "cancelled") throw ApiError(503, "The server is shutting down", "", "shutting_down");
    const std::string text = job.chat ? lstrip(ev.text) : ev.text;
    res.set_content(dump(completion_json(job.id, job.created, opt.model_name, job.chat, text, ev.reason,
                                         {ev.prompt_tokens, ev.completion_tokens})),
                    "application/json");
  }

  // Server-sent events: "data: {chunk}\n\n" per piece of text, a final chunk with finish_reason, an
  // optional usage chunk, then "data: [DONE]\n\n". A failed write ends the stream and cancels.
  void stream(httplib::Response& res, const Job& job, uint64_t rid, const std::shared_ptr<Channel>& ch) {
    struct State {
      bool role_sent = false, content_started = false, done = false;
      Clock::time_point last_write = Clock::now();
    };
    auto st = std::make_shared<State>();
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, job, rid, ch, st](size_t, httplib::DataSink& sink) -> bool {
          auto write = [&](const std::string& s) {
            if (!sink.write(s.data(), s.size())) return false;
            st->last_write = Clock::now();
            return true;
          };
          auto event = [&](const json& j) { return write("data: " + dump(j) + "\n\n"); };
          auto gone = [&] {
            engine.cancel(rid);
            metrics.client_disconnected();
            return false;
          };
          if (st->done) return false;
          if (job.chat && !st->role_sent) {
            st->role_sent = true;
            if (!event(chunk_json(job.id, job.created, opt.model_name, true, "", "", true))) return gone();
          }
          std::string text;
          bool finished = false;
          FinishEvent ev;
          {
            std::unique_lock<std::mutex> lk(ch->mu);
            ch->cv.wait_for(lk, std::chrono::milliseconds(250), [&] { return !ch->pending.empty() || ch->finished; });
            text.swap(ch->pending);
            finished = ch->finished;
            if (finished) ev = ch->fin;
          }
          if (job.chat && !st->content_started) {
            text = lstrip(text);
            st->content_started = !text.empty();
          }
          if (!text.empty() && !event(chunk_json(job.id, job.created, opt.model_name, job.chat, text, "")))
            return gone();
          if (finished) {
            st->done = true;
            bool ok = true;
            if (ev.reason == "error" || ev.reason == "cancelled") {
              const ApiError e = ev.reason == "error"
                                     ? ApiError(500, "Generation failed: " + ev.error, "", "internal_error")
                                     : ApiError(503, "The server is shutting down", "", "shutting_down");
              ok = event(e.to_json());
            } else {
              ok = event(chunk_json(job.id, job.created, opt.model_name, job.chat, "", ev.reason));
              if (ok && job.include_usage)
                ok = event(usage_chunk_json(job.id, job.created, opt.model_name, job.chat,
                                            {ev.prompt_tokens, ev.completion_tokens}));
            }
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
        [this, rid](bool) { engine.cancel(rid); });
  }

  void setup() {
    http.set_payload_max_length(opt.max_body_bytes);

    http.Post("/v1/completions",
              guarded([this](const httplib::Request& q, httplib::Response& s) { completions(q, s, false); }));
    http.Post("/v1/chat/completions",
              guarded([this](const httplib::Request& q, httplib::Response& s) { completions(q, s, true); }));
    http.Get("/v1/models", guarded([this](const httplib::Request&, httplib::Response& res) {
      json m = {{"id", opt.model_name},  {"object", "model"},   {"created", started},
                {"owned_by", "moepp"},   {"max_model_len", engine.max_len()}};
      res.set_content(dump(json{{"object", "list"}, {"data", json::array({m})}}), "application/json");
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
    for (const char* path : {"/v1/models", "/health", "/metrics"}) {
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

void Server::stop() {
  impl_->engine.stop();
  impl_->http.stop();
}

}  // namespace moepp::serve
