// sd_notify and socket activation as systemd documents them (sd_notify(3), sd_listen_fds(3)),
// written out because the protocol is one datagram and a few environment variables: no libsystemd
// to link, and nothing to pay when the variables are absent.
#include "systemd.hpp"

#include <corgi/core/server.hpp>
#include <corgi/protocols/protocols.hpp>

#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <climits>
#include <csignal>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <optional>

namespace corgi::systemd {

namespace {

struct notify_target {
    bool enabled = false;
    sockaddr_un address{};
    socklen_t length = 0;
    std::string text;  // NOTIFY_SOCKET as given, for messages
    bool failure_reported = false;
    clock::duration watchdog{};
    clock::time_point watchdog_next = clock::time_point::max();
};

// Written once, before any thread or fork; afterwards only by the one thread that notifies (the
// master's loop, or io thread 0 of a single process).
notify_target target;

// One line on stderr in one write, so that it does not interleave with the workers' lines.
void say(const std::string& message) noexcept {
    try {
        const std::string line = "corgi: " + message + "\n";
        [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
    } catch (...) {
    }
}

std::optional<std::string> take_env(const char* name) {
    const char* value = std::getenv(name);
    if (!value) return std::nullopt;
    std::string text(value);
    ::unsetenv(name);
    return text;
}

std::optional<unsigned long long> parse_number(std::string_view text) {
    unsigned long long n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return n;
}

// STATUS= is one line of the datagram: a newline in it would start another assignment.
std::string one_line(std::string_view text) {
    std::string out(text);
    for (char& c : out)
        if (c == '\n' || c == '\r') c = ' ';
    return out;
}

}  // namespace

// ---- sd_notify --------------------------------------------------------------------------------

void take_notify_environment() {
    const auto socket = take_env("NOTIFY_SOCKET");
    const auto watchdog_usec = take_env("WATCHDOG_USEC");
    const auto watchdog_pid = take_env("WATCHDOG_PID");
    target = notify_target{};
    if (!socket || socket->empty()) return;
    if ((*socket)[0] != '/' && (*socket)[0] != '@')
        throw environment_error("NOTIFY_SOCKET: '" + *socket +
                                "' is neither a unix socket path (/...) nor an abstract socket "
                                "name (@...)");
    if (socket->size() >= sizeof(target.address.sun_path))
        throw environment_error("NOTIFY_SOCKET: '" + *socket + "' is longer than " +
                                std::to_string(sizeof(target.address.sun_path) - 1) +
                                " bytes, the most a unix socket address holds");
    target.address.sun_family = AF_UNIX;
    std::memcpy(target.address.sun_path, socket->data(), socket->size());
    if ((*socket)[0] == '@') {
        // An abstract name: a leading NUL and no terminating one, the length says where it ends.
        target.address.sun_path[0] = '\0';
        target.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket->size());
    } else {
        target.length =
            static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket->size() + 1);
    }
    target.text = *socket;
    target.enabled = true;

    if (!watchdog_usec) return;
    const auto usec = parse_number(*watchdog_usec);
    if (!usec)
        throw environment_error("WATCHDOG_USEC: expected microseconds (a number), got '" +
                                *watchdog_usec + "'");
    if (watchdog_pid) {
        const auto pid = parse_number(*watchdog_pid);
        if (!pid)
            throw environment_error("WATCHDOG_PID: expected a process id, got '" + *watchdog_pid +
                                    "'");
        if (*pid != static_cast<unsigned long long>(::getpid())) return;  // another process's
    }
    if (*usec == 0) return;
    // Half the period, as sd_watchdog_enabled(3) advises: one late ping is not a missed one.
    target.watchdog = std::chrono::microseconds(*usec / 2 ? *usec / 2 : 1);
    target.watchdog_next = clock::now() + target.watchdog;
}

bool notify_enabled() noexcept { return target.enabled; }

void export_notify_environment() {
    if (!target.enabled) return;
    ::setenv("NOTIFY_SOCKET", target.text.c_str(), 1);
    if (target.watchdog.count()) {
        const auto usec =
            std::chrono::duration_cast<std::chrono::microseconds>(target.watchdog).count() * 2;
        ::setenv("WATCHDOG_USEC", std::to_string(usec).c_str(), 1);
        ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
    }
}

void unexport_notify_environment() noexcept {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    ::unsetenv("WATCHDOG_PID");
}

void forget_notify() noexcept {
    target.enabled = false;
    target.watchdog = {};
    target.watchdog_next = clock::time_point::max();
}

void notify(std::string_view state) noexcept {
    if (!target.enabled) return;
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ssize_t sent = -1;
    int error = errno;
    if (fd >= 0) {
        sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                        reinterpret_cast<const sockaddr*>(&target.address), target.length);
        error = errno;
        ::close(fd);
    }
    if (sent < 0 && !target.failure_reported) {
        target.failure_reported = true;
        say("sd_notify: cannot send to NOTIFY_SOCKET " + target.text + ": " + std::strerror(error) +
            " (further failures are not reported)");
    }
}

long long monotonic_usec() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<long long>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

void notify_ready(std::string_view status) noexcept {
    if (!target.enabled) return;
    try {
        notify("READY=1\nSTATUS=" + one_line(status));
    } catch (...) {
    }
}

void notify_reloading(std::string_view status) noexcept {
    if (!target.enabled) return;
    try {
        notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()) +
               "\nSTATUS=" + one_line(status));
    } catch (...) {
    }
}

void notify_stopping(std::string_view status) noexcept {
    if (!target.enabled) return;
    try {
        notify("STOPPING=1\nSTATUS=" + one_line(status));
    } catch (...) {
    }
}

void notify_status(std::string_view status) noexcept {
    if (!target.enabled) return;
    try {
        notify("STATUS=" + one_line(status));
    } catch (...) {
    }
}

clock::duration watchdog_interval() noexcept {
    return target.enabled ? target.watchdog : clock::duration{};
}

clock::time_point watchdog_due() noexcept {
    return target.enabled ? target.watchdog_next : clock::time_point::max();
}

void watchdog_tick(clock::time_point now) noexcept {
    if (!target.enabled || now < target.watchdog_next) return;
    notify("WATCHDOG=1");
    target.watchdog_next = now + target.watchdog;
}

// ---- server_notifier --------------------------------------------------------------------------

struct server_notifier::state {
    server& srv;
    std::string status;
    net::steady_timer watchdog;
    net::signal_set signals;
    state(server& s, std::string text)
        : srv(s),
          status(std::move(text)),
          watchdog(s.main_context()),
          signals(s.main_context(), SIGTERM, SIGINT) {}

    // The handlers capture this state by pointer: it outlives every run of the io_context (it is
    // made before run() and destroyed after it returns), and a handler still queued then is
    // destroyed with the io_context without being called.
    void arm_watchdog() {
        watchdog.expires_after(watchdog_interval());
        watchdog.async_wait([this](boost::system::error_code ec) {
            if (ec || srv.stopping()) return;
            notify("WATCHDOG=1");
            arm_watchdog();
        });
    }
};

server_notifier::server_notifier(server& srv, std::string status) {
    if (!notify_enabled()) return;
    state_ = std::make_shared<state>(srv, std::move(status));
    state* st = state_.get();
    net::io_context& ctx = srv.main_context();
    // Posted twice: the first runs once run() has started, the second after the acceptors it
    // spawned (the worker's ready() does the same).
    net::post(ctx, [st, &ctx] { net::post(ctx, [st] { notify_ready(st->status); }); });
    // Both this set and the server's are told of the signal (Asio delivers it to every set). The
    // set waits once: a second signal is the server's alone.
    st->signals.async_wait([st](boost::system::error_code ec, int sig) {
        if (ec) return;
        // The pending watchdog wait would keep run() from returning once the connections end.
        st->watchdog.cancel();
        notify_stopping(std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") +
                        ", stopping gracefully");
    });
    if (watchdog_interval() > clock::duration::zero()) st->arm_watchdog();
}

server_notifier::~server_notifier() {
    if (!state_) return;
    boost::system::error_code ignored;
    state_->signals.cancel(ignored);
    state_->watchdog.cancel();
}

// ---- socket activation ------------------------------------------------------------------------

namespace {

// The first descriptor systemd passes (SD_LISTEN_FDS_START).
constexpr int first_listen_fd = 3;

std::vector<std::string> split_names(const std::string& text) {
    std::vector<std::string> names;
    std::size_t from = 0;
    for (;;) {
        const auto colon = text.find(':', from);
        names.push_back(text.substr(from, colon - from));
        if (colon == std::string::npos) return names;
        from = colon + 1;
    }
}

listen_address address_of(int fd, const std::string& label) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        throw environment_error("LISTEN_FDS: " + label +
                                ": getsockname failed: " + std::strerror(errno));
    listen_address a;
    char text[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_UNIX) {
        const auto* un = reinterpret_cast<const sockaddr_un*>(&ss);
        a.is_unix = true;
        const std::size_t n =
            len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
        if (n > 0 && un->sun_path[0] == '\0')
            a.path = "@" + std::string(un->sun_path + 1, n - 1);  // abstract
        else
            a.path = std::string(un->sun_path, ::strnlen(un->sun_path, n));
    } else if (ss.ss_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
        ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
        a.host = text;
        a.port = ntohs(in->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
        ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
        a.host = text;
        a.port = ntohs(in6->sin6_port);
    } else {
        throw environment_error("LISTEN_FDS: " + label +
                                " is not a TCP or unix socket (address family " +
                                std::to_string(ss.ss_family) + ")");
    }
    if (a.host == "0.0.0.0" || a.host == "::") a.host.clear();  // all interfaces
    return a;
}

activated_socket check_listener(int fd, const std::string& name) {
    const std::string label =
        "descriptor " + std::to_string(fd) + (name.empty() ? "" : " (\"" + name + "\")");
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw environment_error("LISTEN_FDS: " + label + " is not open");
    if (!S_ISSOCK(st.st_mode)) throw environment_error("LISTEN_FDS: " + label + " is not a socket");
    int type = 0, accepting = 0;
    socklen_t type_len = sizeof type, accepting_len = sizeof accepting;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 || type != SOCK_STREAM)
        throw environment_error("LISTEN_FDS: " + label +
                                " is not a stream socket (ListenDatagram= and "
                                "ListenSequentialPacket= are not served)");
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &accepting_len) != 0 || !accepting)
        throw environment_error("LISTEN_FDS: " + label +
                                " is not listening (Accept=yes passes connections, not "
                                "listeners: use Accept=no)");
    activated_socket s;
    s.fd = fd;
    s.name = name;
    s.address = address_of(fd, label);
    // Workers are forked, never exec'd, so they keep it; a subprocess an app starts does not.
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags >= 0) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    return s;
}

bool is_protocol(const std::string& name) {
    try {
        protocols::by_name(name);
        return true;
    } catch (const std::invalid_argument&) {
        return false;
    }
}

bool is_loopback(const std::string& host) {
    return host == "127.0.0.1" || host == "::1" || host.rfind("127.", 0) == 0;
}

// A configured address names an activated socket: the same unix path, or the same port and host
// ("" and 0.0.0.0/:: mean all interfaces, "localhost" any loopback address).
bool same_address(const listen_address& configured, const listen_address& bound) {
    if (configured.is_unix != bound.is_unix) return false;
    if (configured.is_unix) return configured.path == bound.path;
    if (configured.port != bound.port) return false;
    std::string host = configured.host;
    if (host == "0.0.0.0" || host == "::") host.clear();
    if (host == "localhost") return is_loopback(bound.host);
    return host == bound.host;
}

}  // namespace

std::vector<activated_socket> take_listeners() {
    const auto pid_text = take_env("LISTEN_PID");
    const auto fds_text = take_env("LISTEN_FDS");
    const auto names_text = take_env("LISTEN_FDNAMES");
    if (!fds_text) return {};
    if (!pid_text) {
        // sd_listen_fds(3) ignores them too: they may have been meant for a parent process.
        say("LISTEN_FDS is set without LISTEN_PID: ignored, the configured listeners are bound");
        return {};
    }
    const auto pid = parse_number(*pid_text);
    if (!pid || *pid == 0)
        throw environment_error("LISTEN_PID: expected a process id, got '" + *pid_text + "'");
    if (*pid != static_cast<unsigned long long>(::getpid())) {
        say("LISTEN_FDS is for process " + *pid_text + ", not this one (" +
            std::to_string(::getpid()) + "): ignored, the configured listeners are bound");
        return {};
    }
    const auto count = parse_number(*fds_text);
    if (!count || *count == 0 ||
        *count > static_cast<unsigned long long>(INT_MAX - first_listen_fd))
        throw environment_error("LISTEN_FDS: expected a positive number of descriptors, got '" +
                                *fds_text + "'");
    std::vector<std::string> names;
    if (names_text) {
        names = split_names(*names_text);
        if (names.size() != *count)
            throw environment_error("LISTEN_FDNAMES: " + std::to_string(names.size()) +
                                    " name(s) for " + std::to_string(*count) +
                                    " descriptor(s) in LISTEN_FDS ('" + *names_text + "')");
    }
    std::vector<activated_socket> sockets;
    for (unsigned long long i = 0; i < *count; ++i)
        sockets.push_back(check_listener(first_listen_fd + static_cast<int>(i),
                                         names.empty() ? std::string() : names[i]));
    return sockets;
}

std::vector<listen_entry> activated_listen_entries(const std::vector<activated_socket>& sockets,
                                                   const std::vector<listen_entry>& configured) {
    std::vector<bool> matched(configured.size(), false);
    std::vector<listen_entry> entries;
    for (const auto& s : sockets) {
        std::optional<std::string> protocol;
        if (is_protocol(s.name)) protocol = s.name;
        for (std::size_t i = 0; i < configured.size(); ++i)
            if (!matched[i] && same_address(configured[i].address, s.address)) {
                matched[i] = true;
                if (!protocol) protocol = configured[i].protocol;
                break;
            }
        entries.push_back({protocol.value_or("http"), s.address});
    }
    for (std::size_t i = 0; i < configured.size(); ++i)
        if (!matched[i])
            say("socket activation: " + configured[i].protocol + " on " +
                configured[i].address.to_string() +
                " is configured but not among the activated sockets: not bound");
    return entries;
}

}  // namespace corgi::systemd
