// Server: the OpenAI-compatible HTTP server of `moepp serve` (docs/serve.md), on cpp-httplib, in front
// of an Engine (continuous batching). Routes:
//   POST /v1/completions, POST /v1/chat/completions   (JSON, or SSE with "stream": true)
//   GET  /v1/models, GET /health, GET /metrics (Prometheus text)
// Every error is a JSON body {"error": {"message", "type", "param", "code"}} with a 4xx/5xx status
// (400 invalid request, 404 unknown route, 405 wrong method, 413 body too large, 429 engine queue full,
// 500 internal, 503 shutting down). A streaming client that goes away cancels its request (its slot is
// freed). Memory is bounded: the engine's slots and queue are fixed, request bodies are capped and the
// HTTP worker pool has a fixed size.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "infer/engine.h"
#include "tokenizer/tokenizer.h"

namespace moepp::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                       // 0: any free port (bind() returns it)
  std::string model_name = "moepp";      // "model" of responses and /v1/models
  int64_t http_threads = 0;              // worker threads; 0: engine slots + queue + 4
  size_t max_body_bytes = 1 << 20;       // larger request bodies get 413
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
  // From any thread: stops the engine (open requests end as cancelled) and the HTTP server.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moepp::serve
