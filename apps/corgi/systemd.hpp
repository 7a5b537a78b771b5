// systemd's side of a service, without libsystemd: sd_notify (one datagram to $NOTIFY_SOCKET) and
// socket activation ($LISTEN_FDS). Each reads its environment once and unsets it, so that workers,
// apps and their subprocesses never take the messages or the sockets for their own.
#pragma once

#include <corgi/core/config.hpp>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace corgi {
class server;
}

namespace corgi::systemd {

// A malformed systemd environment (LISTEN_FDS not a number, a descriptor that is not a listening
// socket ...): a configuration mistake, exit status 2. The message names the variable.
struct environment_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

using clock = std::chrono::steady_clock;

// ---- sd_notify --------------------------------------------------------------------------------

// Reads and unsets NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. Without NOTIFY_SOCKET every
// notify call below is a test of one bool. Throws environment_error for a WATCHDOG_USEC or
// WATCHDOG_PID that is not a number, or a NOTIFY_SOCKET that is no unix socket address.
void take_notify_environment();
bool notify_enabled() noexcept;
// A master about to re-execute itself (HUP) puts the variables back for its new image, and takes
// them away again if execve fails.
void export_notify_environment();
void unexport_notify_environment() noexcept;
// In a pre-forked worker: the master speaks for the service, the worker never does.
void forget_notify() noexcept;

// One datagram of "KEY=VALUE" lines. Send errors are reported once on stderr and otherwise
// ignored: the service manager being gone must not stop the server.
void notify(std::string_view state) noexcept;
void notify_ready(std::string_view status) noexcept;      // READY=1 and STATUS=
void notify_reloading(std::string_view status) noexcept;  // RELOADING=1, MONOTONIC_USEC=, STATUS=
void notify_stopping(std::string_view status) noexcept;   // STOPPING=1 and STATUS=
void notify_status(std::string_view status) noexcept;     // STATUS=
// CLOCK_MONOTONIC in microseconds, what MONOTONIC_USEC carries.
long long monotonic_usec() noexcept;

// The watchdog (WatchdogSec=): WATCHDOG_USEC / 2 when WATCHDOG_USEC is set and WATCHDOG_PID is
// unset or ours; zero otherwise.
clock::duration watchdog_interval() noexcept;
// When the next WATCHDOG=1 is due (clock::time_point::max() without a watchdog).
clock::time_point watchdog_due() noexcept;
// Sends WATCHDOG=1 when it is due at `now`.
void watchdog_tick(clock::time_point now) noexcept;

// A single process: READY=1 (with `status`) once run() has started its acceptors, WATCHDOG=1
// from io thread 0 (a stuck event loop stops the pings), STOPPING=1 on SIGTERM/SIGINT. Make it
// before run(), keep it until run() returns; nothing is scheduled without NOTIFY_SOCKET.
class server_notifier {
  public:
    server_notifier(server& srv, std::string status);
    ~server_notifier();
    server_notifier(const server_notifier&) = delete;
    server_notifier& operator=(const server_notifier&) = delete;

  private:
    struct state;
    std::shared_ptr<state> state_;
};

// ---- socket activation ------------------------------------------------------------------------

struct activated_socket {
    int fd = -1;
    std::string name;        // its FileDescriptorName= ("" without LISTEN_FDNAMES)
    listen_address address;  // where it listens (host "" for all interfaces)
};

// Reads and unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES. Returns the sockets passed from
// fd 3 on (marked close-on-exec), or nothing when LISTEN_FDS is unset or LISTEN_PID is not this
// process (a note on stderr then). Throws environment_error when LISTEN_PID or LISTEN_FDS is not a
// positive number, LISTEN_FDNAMES has not one name per descriptor, or a descriptor is not a
// listening stream socket.
std::vector<activated_socket> take_listeners();

// The listeners to serve on activated sockets, one per socket in order. Protocol: the socket's
// name when it is one (http, uwsgi, fastcgi, scgi), else the protocol of a configured listener at
// the same address, else http. Configured listeners that match no socket are not bound: each is
// named on stderr as ignored.
std::vector<listen_entry> activated_listen_entries(const std::vector<activated_socket>& sockets,
                                                   const std::vector<listen_entry>& configured);

}  // namespace corgi::systemd
