// The master of pre-forked workers: forks them with the listening sockets it bound, respawns the
// ones that die (with backoff when they crash-loop), and turns signals into a graceful or quick
// stop, rolling replacement (HUP) and scaling (TTIN/TTOU). It never serves and never starts Python:
// no Asio here, a self-pipe for signals and one poll loop.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace corgi::master {

struct options {
    std::size_t workers = 1;
    // A worker told to stop (TERM) is killed (SIGKILL) if it has not exited this long after
    // graceful_timeout: the worker closes its own busy connections at graceful_timeout.
    std::chrono::milliseconds graceful_timeout{30000};
    std::string pidfile;                  // written at start, removed at exit ("" for none)
    std::vector<std::string> unix_paths;  // socket files of the listeners, removed at exit
    std::vector<int> listener_fds;        // inherited by every worker, closed at exit
    // Around each fork (--preload: CPython's fork hooks); the child's runs first thing in it.
    std::function<void()> before_fork, after_fork_in_parent, after_fork_in_child;
};

// What a worker runs after fork (signals reset, master's descriptors closed): serve until SIGTERM,
// calling ready() once the apps are imported and the listeners accept; returns the exit status.
using worker_body = std::function<int(const std::function<void()>& ready)>;

// Writes this process's pid to `path` (nothing for ""); throws std::system_error naming the file
// when it cannot, so that a server never runs with a pidfile its service manager cannot read.
void write_pidfile(const std::string& path);

// Runs the master until it stops; returns its exit status: 0 after a stop by signal, 1 when the
// first workers fail to boot.
int run(const options& opts, const worker_body& body);

}  // namespace corgi::master
