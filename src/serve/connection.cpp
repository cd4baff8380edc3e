// The connection layer of `moepp serve` (see connection.h): the socket stream that cpp-httplib parses
// requests from, the per-connection request loop, the bounded worker pool and the client-gone probe.
#include "serve/connection.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace moepp::serve {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Longest single wait on a socket, so that a stopping server is noticed.
constexpr milliseconds kSlice{100};

// Waits until sock reports one of events, at most until deadline, in slices that end early when stop()
// says so. False on timeout, stop or a poll error.
bool wait_socket(int sock, short events, Clock::time_point deadline, const std::function<bool()>& stop) {
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline || (stop && stop())) return false;
    const auto left = std::chrono::ceil<milliseconds>(deadline - now);
    pollfd p{sock, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min(left, kSlice).count()));
    if (r > 0) return true;  // hang-ups and errors too: the next read or write reports them
    if (r < 0 && errno != EINTR) return false;
  }
}

// Whether the peer has closed, half-closed or reset the connection (never blocks).
bool peer_gone(int sock) {
  pollfd p{sock, POLLIN | POLLRDHUP, 0};
  const int r = ::poll(&p, 1, 0);
  if (r < 0) return errno != EINTR;
  if (r == 0) return false;
  if (p.revents & (POLLERR | POLLHUP | POLLNVAL | POLLRDHUP)) return true;
  char c;
  const ssize_t n = ::recv(sock, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

void endpoint(int sock, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  const int r = peer ? ::getpeername(sock, reinterpret_cast<sockaddr*>(&addr), &len)
                     : ::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len);
  if (r != 0) return;
  std::array<char, NI_MAXHOST> host{};
  std::array<char, NI_MAXSERV> serv{};
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host.data(), host.size(), serv.data(), serv.size(),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return;
  ip = host.data();
  port = std::atoi(serv.data());
}

// One connection's socket as cpp-httplib's Stream: reads are buffered and must finish before the
// current request's deadline; each write waits at most the write timeout.
class ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(int sock, milliseconds write_timeout, std::function<bool()> stopping)
      : sock_(sock), write_timeout_(write_timeout), stopping_(std::move(stopping)) {}

  void start_request(Clock::time_point deadline) {
    deadline_ = deadline;
    timed_out_ = false;
  }
  bool timed_out() const { return timed_out_; }
  bool buffered() const { return off_ < len_; }

  bool is_readable() const override {
    if (buffered()) return true;
    if (wait_socket(sock_, POLLIN, deadline_, stopping_)) return true;
    if (Clock::now() >= deadline_) timed_out_ = true;
    return false;
  }
  bool is_writable() const override {
    // Not cut short by a stopping server: the last answers (503 shutting_down) still go out.
    return wait_socket(sock_, POLLOUT, Clock::now() + write_timeout_, nullptr) && !peer_gone(sock_);
  }

  ssize_t read(char* ptr, size_t size) override {
    if (!buffered()) {
      if (!is_readable()) return -1;
      if (size >= buf_.size()) return ::recv(sock_, ptr, size, 0);
      const ssize_t n = ::recv(sock_, buf_.data(), buf_.size(), 0);
      if (n <= 0) return n;
      off_ = 0;
      len_ = static_cast<size_t>(n);
    }
    const size_t n = std::min(size, len_ - off_);
    std::memcpy(ptr, buf_.data() + off_, n);
    off_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    return ::send(sock_, ptr, size, MSG_NOSIGNAL);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { endpoint(sock_, true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { endpoint(sock_, false, ip, port); }
  socket_t socket() const override { return sock_; }

 private:
  int sock_;
  milliseconds write_timeout_;
  std::function<bool()> stopping_;
  Clock::time_point deadline_ = Clock::now();
  mutable bool timed_out_ = false;
  std::array<char, 4096> buf_{};
  size_t off_ = 0, len_ = 0;
};

// The stream of the connection this thread serves (null between connections), and whether the
// connection handed to process_and_close_socket on this thread is to be turned away.
thread_local ConnectionStream* t_stream = nullptr;
thread_local bool t_rejecting = false;

// Worker threads taking accepted connections from a queue; at most threads + max_pending connections
// are queued or being served, and one beyond that runs at once on the accepting thread with
// t_rejecting set.
class BoundedPool final : public httplib::TaskQueue {
 public:
  BoundedPool(size_t threads, size_t max_pending) : capacity_(std::max<size_t>(threads, 1) + max_pending) {
    for (size_t i = 0; i < std::max<size_t>(threads, 1); ++i) workers_.emplace_back([this] { work(); });
  }
  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (jobs_.size() + busy_ < capacity_) {
        jobs_.push_back(std::move(fn));
        cv_.notify_one();
        return;
      }
    }
    t_rejecting = true;
    fn();
    t_rejecting = false;
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, nothing left
        fn = std::move(jobs_.front());
        jobs_.pop_front();
        ++busy_;
      }
      fn();
      std::lock_guard<std::mutex> lk(mu_);
      --busy_;
    }
  }

  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  size_t busy_ = 0;  // workers serving a connection
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace

HttpServer::HttpServer(ConnectionLimits limits, std::string rejected_body, std::function<void()> on_rejected)
    : limits_(limits), on_rejected_(std::move(on_rejected)) {
  rejected_response_ = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: " +
                       std::to_string(rejected_body.size()) + "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" +
                       rejected_body;
  new_task_queue = [l = limits_] { return new BoundedPool(l.threads, l.max_pending); };
  // cpp-httplib also puts these on each accepted socket (SO_RCVTIMEO / SO_SNDTIMEO) and into its
  // Keep-Alive header; the request loop below enforces them.
  const auto sec = [](milliseconds d) { return static_cast<time_t>(std::max<int64_t>(1, (d.count() + 999) / 1000)); };
  set_read_timeout(sec(limits_.read_timeout));
  set_write_timeout(sec(limits_.write_timeout));
  set_keep_alive_timeout(sec(limits_.keep_alive_timeout));
  set_keep_alive_max_count(limits_.keep_alive_max);
}

bool HttpServer::widen_backlog(int backlog) { return ::listen(svr_sock_, backlog) == 0; }

bool HttpServer::client_gone() { return t_stream && peer_gone(t_stream->socket()); }

bool HttpServer::read_timed_out() { return t_stream && t_stream->timed_out(); }

void HttpServer::reject(socket_t sock) {
  // Whatever the client already sent is read first (closing with unread data would reset the
  // connection, and the client might lose the answer); nothing here waits.
  std::array<char, 4096> drain{};
  for (int i = 0; i < 16 && ::recv(sock, drain.data(), drain.size(), MSG_DONTWAIT) > 0; ++i) {
  }
  const ssize_t sent = ::send(sock, rejected_response_.data(), rejected_response_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)sent;  // best effort: the connection is closed either way
  ::shutdown(sock, SHUT_WR);
  ::close(sock);
  if (on_rejected_) on_rejected_();
}

bool HttpServer::process_and_close_socket(socket_t sock) {
  if (t_rejecting) {
    reject(sock);
    return false;
  }
  const auto stopping = [this] { return svr_sock_ == INVALID_SOCKET; };
  ConnectionStream strm(sock, limits_.write_timeout, stopping);
  t_stream = &strm;
  bool ok = false;
  for (size_t n = 1; n <= limits_.keep_alive_max; ++n) {
    const milliseconds idle = n == 1 ? limits_.read_timeout : limits_.keep_alive_timeout;
    if (!strm.buffered() && !wait_socket(sock, POLLIN, Clock::now() + idle, stopping)) break;
    strm.start_request(Clock::now() + limits_.read_timeout);
    bool closed = false;
    ok = process_request(strm, n == limits_.keep_alive_max, closed, nullptr);
    if (!ok || closed || strm.timed_out()) break;
  }
  t_stream = nullptr;
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return ok;
}

}  // namespace moepp::serve
