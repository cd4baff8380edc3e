// `moepp serve`: the OpenAI-compatible HTTP server (docs/serve.md) on a checkpoint or a run directory's
// latest checkpoint. Prints "moepp serve: listening on http://HOST:PORT ..." on stderr once it accepts
// connections; SIGINT / SIGTERM stop it (open requests end as cancelled), then it exits 0. The API key
// (--api-key or the first line of --api-key-file) is never printed. Under mpirun with --ep-size N the
// FFN experts are split over the N ranks: rank 0 opens the port and runs the engine, the others follow
// its decoder until it stops (a SIGINT / SIGTERM that reaches them is left to rank 0's shutdown).
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/inference_group.h"
#include "core/error.h"
#include "infer/decoder.h"
#include "infer/decoder_followers.h"
#include "infer/engine.h"
#include "infer/model_dir.h"
#include "serve/server.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace moepp::cli {
namespace {

namespace fs = std::filesystem;

struct ServeArgs {
  std::string model, host = "127.0.0.1", dtype = "f32", model_name;
  std::string port = "8000", slots = "8", max_queue = "64", ctx = "0", prefill_chunk = "256", max_body = "1048576";
  std::string api_key, api_key_file, read_timeout = "10", write_timeout = "10", max_pending = "64";
  std::string ep_size = "1";
  float zc_bias = 0.0f;
  std::string kv_dtype = "auto";
  bool packed_prefill = false;
  bool adaptive_threads = EngineOptions{}.adaptive_threads;
  std::vector<std::string> served_names;
};

volatile std::sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int) { g_stop_signal = 1; }

int64_t to_int(const std::string& opt, const std::string& s) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  check(!s.empty() && end && *end == '\0' && errno == 0, "serve: " + opt + ": '" + s + "' is not an integer");
  return v;
}

double to_seconds(const std::string& opt, const std::string& s) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  check(!s.empty() && end && *end == '\0' && errno == 0 && v >= 0.1 && v <= 3600,
        "serve: " + opt + ": '" + s + "' is not a number of seconds in [0.1, 3600]");
  return v;
}

// The key of --api-key, or the first line of --api-key-file (without its line end); "" for none.
// Messages never contain the key.
std::string api_key(const ServeArgs& a) {
  check(a.api_key.empty() || a.api_key_file.empty(), "serve: give --api-key or --api-key-file, not both");
  std::string key = a.api_key;
  if (!a.api_key_file.empty()) {
    std::ifstream f(a.api_key_file, std::ios::binary);
    check(f.good(), "serve: --api-key-file: cannot read " + a.api_key_file);
    std::getline(f, key);
    if (!key.empty() && key.back() == '\r') key.pop_back();
    check(!key.empty(), "serve: --api-key-file: the first line of " + a.api_key_file + " is empty");
  }
  return key;
}

void run_serve(const ServeArgs& a) {
  Comm* group = inference_expert_group(to_int("--ep-size", a.ep_size), "serve");
  const int64_t port = to_int("--port", a.port), slots = to_int("--slots", a.slots);
  const int64_t max_queue = to_int("--max-queue", a.max_queue), ctx = to_int("--ctx", a.ctx);
  const int64_t prefill_chunk = to_int("--prefill-chunk", a.prefill_chunk), max_body = to_int("--max-body", a.max_body);
  check(port >= 0 && port <= 65535, "serve: --port must be in [0, 65535] (got " + a.port + ")");
  check(slots >= 1 && slots <= 1024, "serve: --slots must be in [1, 1024] (got " + a.slots + ")");
  check(max_queue >= 0 && max_queue <= 100000, "serve: --max-queue must be in [0, 100000] (got " + a.max_queue + ")");
  check(ctx >= 0, "serve: --ctx must be >= 0 (got " + a.ctx + ")");
  check(prefill_chunk >= 1, "serve: --prefill-chunk must be >= 1 (got " + a.prefill_chunk + ")");
  check(max_body >= 1024, "serve: --max-body must be >= 1024 (got " + a.max_body + ")");
  const WeightDType dtype = parse_weight_dtype(a.dtype);
  const double read_timeout = to_seconds("--read-timeout", a.read_timeout);
  const double write_timeout = to_seconds("--write-timeout", a.write_timeout);
  const int64_t max_pending = to_int("--max-pending-connections", a.max_pending);
  check(max_pending >= 0 && max_pending <= 10000,
        "serve: --max-pending-connections must be in [0, 10000] (got " + a.max_pending + ")");
  const std::string key = api_key(a);

  ModelDir md = open_model_dir(a.model, "", "serve");
  md.cfg.set_zc_bias(a.zc_bias);
  const ModelConfig& cfg = md.cfg;
  const Tokenizer& tok = md.tok;
  std::optional<ChatTemplateConfig> chat_template = load_chat_template(md.dir);
  check(ctx <= cfg.max_pos, "serve: --ctx " + a.ctx + " exceeds the model's max_position_embeddings " +
                                std::to_string(cfg.max_pos));

  // SIGINT / SIGTERM set a flag that a watcher thread turns into server.stop() (other libraries'
  // threads, OpenBLAS's among them, exist before main, so the signals cannot be masked off everywhere
  // and waited for). A client that goes away must not kill the process with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  g_stop_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  Decoder dec = load_decoder(md, dtype, group, parse_kv_dtype_choice(a.kv_dtype, "--kv-dtype"),
                             a.packed_prefill);
  if (is_follower(dec)) {
    follow_decoder(dec);
    return;
  }
  FollowerRelease release(dec);  // declared before the engine: sent once the engine's thread has ended
  EngineOptions eo;
  eo.n_slots = slots;
  eo.max_queue = max_queue;
  eo.max_len = ctx;  // 0: max_pos
  eo.prefill_chunk = prefill_chunk;
  eo.step_prefill_tokens = std::max<int64_t>(prefill_chunk, 512);
  eo.adaptive_threads = a.adaptive_threads;
  Engine engine(dec, &tok, eo);

  serve::ServerOptions so;
  so.host = a.host;
  so.port = static_cast<int>(port);
  so.model_name = a.model_name.empty() ? fs::path(a.model).lexically_normal().filename().string() : a.model_name;
  if (so.model_name.empty()) so.model_name = fs::path(a.model).lexically_normal().parent_path().filename().string();
  if (so.model_name.empty()) so.model_name = "moepp";
  so.aliases = a.served_names;
  so.chat_template = std::move(chat_template);
  so.max_body_bytes = static_cast<size_t>(max_body);
  so.api_key = key;
  so.read_timeout_s = read_timeout;
  so.write_timeout_s = write_timeout;
  so.max_pending_connections = static_cast<size_t>(max_pending);
  serve::Server server(engine, tok, so);
  const int bound = server.bind();

  std::atomic<bool> served{false};
  std::thread waiter([&] {
    while (!served.load()) {
      if (g_stop_signal) {
        server.stop();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::fprintf(stderr,
               "moepp serve: listening on http://%s:%d (model %s from %s, weights %s %.1f MB + %.1f MB mapped, %lld slots x %lld "
               "positions, KV cache %s %.1f MB, queue %lld%s)\n",
               a.host.c_str(), bound, so.model_name.c_str(), md.dir.c_str(), weight_dtype_name(dtype),
               static_cast<double>(dec.weights().bytes()) / 1e6, static_cast<double>(dec.weights().mapped_bytes()) / 1e6,
               static_cast<long long>(slots),
               static_cast<long long>(engine.max_len()), kv_dtype_name(dec.kv_dtype()),
               static_cast<double>(engine.cache_bytes()) / 1e6,
               static_cast<long long>(max_queue), key.empty() ? "" : ", API key required");
  std::fflush(stderr);
  server.run();
  served = true;
  waiter.join();
  engine.stop();
  release.stop();
  if (group) std::fprintf(stderr, "moepp serve: %s\n", expert_group_summary(dec).c_str());
  std::fprintf(stderr, "moepp serve: stopped\n");
}

}  // namespace

void register_serve_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* sub = app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching (docs/serve.md)");
  sub->add_option("--model", a->model, "checkpoint directory, or a run directory (its latest checkpoint)")->required();
  sub->add_option("--port", a->port, "TCP port (0 = any free port; the chosen one is printed)")->capture_default_str();
  sub->add_option("--host", a->host, "address to listen on")->capture_default_str();
  sub->add_option("--slots", a->slots, "sequences decoded together (KV-cache slots)")->capture_default_str();
  sub->add_option("--max-queue", a->max_queue, "requests waiting for a slot before 429")->capture_default_str();
  sub->add_option("--ctx", a->ctx, "positions per slot, prompt + completion (0 = max_position_embeddings)")
      ->capture_default_str();
  sub->add_option("--dtype", a->dtype, "weight storage: f32, bf16, int8 or q4")->capture_default_str();
  sub->add_option("--model-name", a->model_name, "model id in responses (default: the --model directory's name)");
  sub->add_option("--served-model-name", a->served_names,
                  "another name the model answers to (repeatable; requests naming no served name get 404)")
      ->check([](const std::string& v) { return v.empty() ? std::string("a model name must not be empty") : std::string(); });
  sub->add_option("--prefill-chunk", a->prefill_chunk, "most prompt tokens of one request per step")
      ->capture_default_str();
  sub->add_option("--max-body", a->max_body, "largest request body in bytes (413 beyond)")->capture_default_str();
  sub->add_option("--api-key", a->api_key,
                  "require 'Authorization: Bearer KEY' on every route but /health (visible in ps: prefer --api-key-file)")
      ->check([](const std::string& v) { return v.empty() ? std::string("the API key must not be empty") : std::string(); });
  sub->add_option("--api-key-file", a->api_key_file, "as --api-key, the key being the first line of this file");
  sub->add_option("--read-timeout", a->read_timeout, "seconds within which a request's headers and body must arrive")
      ->capture_default_str();
  sub->add_option("--write-timeout", a->write_timeout, "seconds a write to a client may stall before the connection ends")
      ->capture_default_str();
  sub->add_option("--max-pending-connections", a->max_pending,
                  "accepted connections that may wait for an HTTP worker (503 beyond)")
      ->capture_default_str();
  add_zc_bias_option(sub, a->zc_bias);
  add_kv_dtype_option(sub, a->kv_dtype);
  add_packed_prefill_option(sub, a->packed_prefill);
  add_adaptive_threads_option(sub, a->adaptive_threads);
  sub->add_option("--ep-size", a->ep_size,
                  "ranks the FFN experts are split over; under mpirun it must equal the number of processes")
      ->capture_default_str();
  sub->callback([a] { run_serve(*a); });
}

}  // namespace moepp::cli
