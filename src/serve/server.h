// Server: the OpenAI-compatible HTTP server of `moepp serve` (docs/serve.md), on cpp-httplib, in front
// of an Engine (continuous batching). Routes:
//   POST /v1/completions, POST /v1/chat/completions   (JSON, or SSE with "stream": true)
//   GET  /v1/models, GET /v1/models/{id}, GET /health, GET /metrics (Prometheus text)
//   GET  /, /app.js, /app.css: the chat page (web_assets.h), which shows each token's routing
//        (the "moepp_routing" extension); GET /favicon.ico: 204
// Every error is a JSON body {"error": {"message", "type", "param", "code"}} with a 4xx/5xx status
// (400 invalid request, 401 missing or wrong API key, 404 unknown route or model, 405 wrong method, 408 request
// not received in time, 413 body too large, 429 engine queue full, 500 internal, 503 shutting down or
// too many connections waiting). With an API key every route but /health and the page needs
// "Authorization: Bearer <key>". Every response carries a strict Content-Security-Policy (the page's own
// script, style and API only), X-Content-Type-Options: nosniff and Referrer-Policy: no-referrer. A client that goes away, streaming or not, cancels its request (its slot is freed). Memory
// is bounded: the engine's slots and queue are fixed, request bodies are capped, the HTTP worker pool
// has a fixed size and its queue of accepted connections a bound; slow clients are cut off by the read
// and write timeouts (serve/connection.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "infer/engine.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace moepp::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                       // 0: any free port (bind() returns it)
  std::string model_name = "moepp";      // the main served name: "model" of requests that name none
  std::vector<std::string> aliases;      // more served names (requests naming another one get 404)
  int64_t http_threads = 0;              // worker threads; 0: engine slots + queue + 4
  size_t max_body_bytes = 1 << 20;       // larger request bodies get 413
  std::string api_key;                   // non-empty: required as "Authorization: Bearer <key>"
  double read_timeout_s = 10;            // a whole request (headers and body) must arrive within this
  double write_timeout_s = 10;           // a write that cannot proceed for this long ends the connection
  size_t max_pending_connections = 64;   // accepted connections waiting for a worker; beyond: 503
  // The checkpoint's chat template (load_chat_template); none: the fixed format of chat_prompt().
  std::optional<ChatTemplateConfig> chat_template;
};

class Server {
 public:
  // The engine (started, or started by run()) and tokenizer must outlive the server.
  Server(Engine& engine, const Tokenizer& tok, ServerOptions opt);
  ~Server();  // stops the engine (its requests' callbacks refer to the server) and the HTTP server
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket; returns the port. Throws moepp::Error when it cannot.
  int bind();
  // Serves until stop() (call bind() first). Starts the engine's thread.
  void run();
  // From any thread: stops the engine (open requests end as cancelled: a stream gets an error event
  // "shutting_down" and [DONE]), waits up to 2 s for open streams to send those, then stops the HTTP
  // server.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moepp::serve
