// The connection layer of `moepp serve` under cpp-httplib's HTTP parsing and routing (docs/serve.md,
// "Limits and timeouts"): each connection's loop of requests, with a deadline for receiving a whole
// request (headers and body) and a timeout for each write; a pool of worker threads whose queue of
// accepted connections is bounded (beyond it a connection is answered 503 at once and closed); and,
// for a handler, whether the client of the request it serves has gone away.
#pragma once

#include <httplib.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>

namespace moepp::serve {

struct ConnectionLimits {
  // A request's headers and body must arrive within this, counted from its first byte; a new
  // connection's first byte must arrive within it too.
  std::chrono::milliseconds read_timeout{10000};
  // A write to the client that cannot proceed for this long ends the connection.
  std::chrono::milliseconds write_timeout{10000};
  // Idle wait for the next request of a kept-alive connection, and requests per connection.
  std::chrono::milliseconds keep_alive_timeout{2000};
  size_t keep_alive_max = 5;
  size_t threads = 8;       // worker threads: each serves one connection at a time
  size_t max_pending = 64;  // accepted connections that may wait for a busy worker
};

class HttpServer : public httplib::Server {
 public:
  // rejected_body: the JSON of the 503 answered to a connection beyond the bound; on_rejected is
  // called (on the accepting thread) for each.
  HttpServer(ConnectionLimits limits, std::string rejected_body, std::function<void()> on_rejected);

  // cpp-httplib listens with a backlog of 5: a burst of connections overflows it and, with SYN
  // cookies, clients get "connection reset". Linux lets listen() be called again on the bound socket.
  bool widen_backlog(int backlog);

  // For a handler, on the thread that serves its request: whether the client has closed or reset the
  // connection (EOF, hang-up or error on the socket; a half-close counts as gone).
  static bool client_gone();
  // For the error handler: whether the current request was cut off by the read deadline.
  static bool read_timed_out();

 private:
  bool process_and_close_socket(socket_t sock) override;
  void reject(socket_t sock);

  ConnectionLimits limits_;
  std::string rejected_response_;
  std::function<void()> on_rejected_;
};

}  // namespace moepp::serve
