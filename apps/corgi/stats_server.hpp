// The stats listener (--stats ADDR): uWSGI's stats server (one JSON document per connection, then
// close) or, with --stats-http, a small HTTP/1.1 server of the same document at /, Prometheus text
// at /metrics and the live status page at /_corgi/status. It runs inside a poll() loop that is
// not Asio's: the master's own loop, or a thread of its own in a single process. Non-blocking
// throughout, a few connections at most, each with a deadline: a stuck client cannot hold the
// master.
#pragma once

#include "scoreboard.hpp"

#include <corgi/core/stats.hpp>

#include <poll.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace corgi::master {

// Where the figures of the whole server are: the master's scoreboard (workers and what they left
// behind), or a single process's own table; and the listening sockets, for their accept queues.
struct stats_sources {
    const scoreboard* board = nullptr;
    const stats::process_table* single = nullptr;  // a single process (no master)
    std::size_t io_threads = 1;                    // of each worker / of the single process
    struct socket {
        int fd = -1;
        std::string name, proto;
    };
    std::vector<socket> sockets;
    long server_pid = 0;  // the master's (or the single process's)
    std::chrono::system_clock::time_point started = std::chrono::system_clock::now();
};

enum class stats_format { json, prometheus };

// Renders the whole server (consistent: retried while the master folds an exited worker in).
// `previous_requests` (per worker slot) turns into uWSGI's delta_requests and is updated.
std::string render_stats(const stats_sources& sources, stats_format format,
                         std::vector<std::uint64_t>* previous_requests = nullptr);

// Makes the built-in {"metrics": true} target render `sources` (which must outlive the server).
void install_exposition(const stats_sources* sources);

class stats_server {
  public:
    // Takes ownership of a bound, listening socket.
    stats_server(int listen_fd, bool http, stats_sources sources);
    ~stats_server();
    stats_server(const stats_server&) = delete;
    stats_server& operator=(const stats_server&) = delete;

    // The descriptors to wait for, appended to `fds`; then handle(), with the same vector and
    // the index of the first one appended.
    void add_poll_fds(std::vector<pollfd>& fds) const;
    void handle(const std::vector<pollfd>& fds, std::size_t first);
    // The longest poll() may wait for the connections' deadlines (-1: no connection).
    int timeout_ms() const;

    // In a forked worker: closes the descriptors (the master's), touching nothing else.
    void close_in_child() noexcept;

    // A single process: serve from a thread of its own until stop().
    void start_thread();
    void stop();

    stats_sources& sources() noexcept { return sources_; }

  private:
    struct connection {
        int fd = -1;
        std::string in, out;
        std::size_t sent = 0;
        bool responding = false;
        std::chrono::steady_clock::time_point deadline;
    };
    void accept_all();
    void on_readable(connection& c);
    void on_writable(connection& c);
    void respond(connection& c);
    void close(connection& c);
    void sweep();

    int listen_fd_;
    bool http_;
    stats_sources sources_;
    std::vector<connection> connections_;
    std::vector<std::uint64_t> previous_requests_;
    std::thread thread_;
    int stop_pipe_[2] = {-1, -1};
};

}  // namespace corgi::master
