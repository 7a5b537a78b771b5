// The master of pre-forked workers: forks them with the listening sockets it bound, respawns the
// ones that die (with backoff when they crash-loop), kills the ones that hang, recycles them
// (request count, memory, age) and turns signals into a graceful or quick stop, a reload (HUP:
// the master re-executes itself, keeping its pid, its sockets and its workers, then replaces the
// workers one at a time) and scaling (TTIN/TTOU). It never serves and never runs Python threads:
// no Asio here, a self-pipe for signals and one poll loop.
#pragma once

#include "scoreboard.hpp"
#include "stats_server.hpp"

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace corgi::master {

// What a master hands over to itself across execve (in the environment): its sockets, its
// scoreboard and its workers.
struct inherited_state {
    struct listener {
        int fd = -1;
        std::string protocol;
        std::string address;  // as bound ("unix:/path" for a unix socket)
    };
    struct worker {
        pid_t pid = 0;
        std::size_t slot = 0;
        std::uint64_t started_ns = 0;  // CLOCK_MONOTONIC, the same in every process
        bool ready = false;
        bool retiring = false;
        std::uint64_t kill_at_ns = 0;  // retiring: SIGKILL then (0: none)
        int ready_fd = -1;             // not ready yet: the read end of its readiness pipe
    };
    std::vector<listener> listeners;
    std::vector<std::string> unix_paths;  // the socket files the master removes at exit
    int scoreboard_fd = -1;
    std::size_t scoreboard_slots = 0;
    int wake_read_fd = -1, wake_write_fd = -1;  // the workers' "look at the scoreboard" pipe
    std::vector<worker> workers;
    bool booted = false;
    int stats_fd = -1;  // the --stats listener, -1: none
};

// The state a re-executed master was given, read and removed from the environment (nullopt for
// a master started by hand). Throws std::runtime_error when it is malformed.
std::optional<inherited_state> take_inherited_state();

struct options {
    std::size_t workers = 1;
    // A worker told to stop (TERM) is killed (SIGKILL) if it has not exited this long after
    // graceful_timeout: the worker closes its own busy connections at graceful_timeout.
    std::chrono::milliseconds graceful_timeout{30000};
    std::chrono::milliseconds boot_timeout{60000};
    std::chrono::milliseconds worker_timeout{30000};  // 0: no liveness check
    std::uint64_t max_requests = 0, max_requests_jitter = 0, max_rss_mb = 0;
    std::chrono::milliseconds max_worker_lifetime{0};
    std::size_t io_threads = 1;           // of each worker: the heartbeats the master expects
    std::string pidfile;                  // written at start, removed at exit ("" for none)
    std::vector<std::string> unix_paths;  // socket files of the listeners, removed at exit
    std::vector<inherited_state::listener> listeners;  // inherited by every worker, closed at exit
    // Around each fork (preloaded apps: CPython's fork hooks); the child's runs first thing in it.
    std::function<void()> before_fork, after_fork_in_parent, after_fork_in_child;
    // The command line to re-execute on HUP (argv[0] is replaced by /proc/self/exe); empty: HUP
    // replaces the workers without re-executing (the code they run is the master's).
    std::vector<std::string> argv;
    // Set by a re-executed master: what the previous image left running.
    std::optional<inherited_state> inherited;
    // Non-empty: no worker can be started (a reload whose apps fail to import); the reason is
    // logged each time one would be.
    std::string cannot_spawn;
    // USR1: reopen the master's log files (the workers get USR1 too).
    std::function<void()> reopen_logs;
    // --stats: a bound, listening socket the master serves the stats on (-1: none); --stats-http.
    int stats_fd = -1;
    bool stats_http = false;
};

// What a worker runs after fork (signals reset, master's descriptors closed, the scoreboard
// channel installed): serve until SIGTERM, calling ready() once the apps are imported and the
// listeners accept; returns the exit status.
using worker_body = std::function<int(const std::function<void()>& ready)>;

// Writes this process's pid to `path` (nothing for ""); throws std::system_error naming the file
// when it cannot, so that a server never runs with a pidfile its service manager cannot read.
void write_pidfile(const std::string& path);

// Runs the master until it stops; returns its exit status: 0 after a stop by signal, 1 when the
// first workers fail to boot.
int run(const options& opts, const worker_body& body);

// The environment variable a master sets for the copy of itself that only checks the
// configuration before a reload (the binary exits 0, or 2 with the error, and starts nothing).
inline constexpr const char* check_config_env = "CORGI_CHECK_CONFIG";

}  // namespace corgi::master
