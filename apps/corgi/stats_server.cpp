#include "stats_server.hpp"

#include "status_page.hpp"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <thread>

namespace corgi::master {

namespace {

using steady = std::chrono::steady_clock;
constexpr auto connection_deadline = std::chrono::seconds(5);
constexpr std::size_t max_connections = 32;
constexpr std::size_t max_request_head = 8192;
constexpr const char* version = "0.1.0";

struct memory {
    std::uint64_t rss = 0, vsz = 0;
};

memory memory_of(long pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/statm");
    std::uint64_t size = 0, resident = 0;
    if (!(in >> size >> resident)) return {};
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    return {resident * page, size * page};
}

// utime + stime of one thread, in seconds (0 when it is gone).
double cpu_seconds_of(long pid, long tid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close_paren = text.rfind(')');
    if (close_paren == std::string::npos) return 0;
    std::istringstream fields(text.substr(close_paren + 2));
    std::string field;
    // Fields 3..13 (state ... cmajflt), then utime (14) and stime (15).
    for (int i = 3; i <= 13; ++i) fields >> field;
    double utime = 0, stime = 0;
    fields >> utime >> stime;
    static const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    return (utime + stime) / ticks;
}

// The accept queue of a TCP listener: Linux reports it (and the backlog) in TCP_INFO.
stats::socket_view socket_of(const stats_sources::socket& s) {
    stats::socket_view v{s.name, s.proto, 0, 0};
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(s.fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return v;
    if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6) return v;
    tcp_info info{};
    socklen_t info_len = sizeof info;
    if (::getsockopt(s.fd, IPPROTO_TCP, TCP_INFO, &info, &info_len) == 0) {
        v.queue = info.tcpi_unacked;
        v.max_queue = info.tcpi_sacked;
    }
    return v;
}

std::uint64_t in_flight_of(const stats::process_table& t) {
    std::int64_t n = 0;
    for (const auto& c : t.core_in_flight) n += c.load(std::memory_order_relaxed);
    return n > 0 ? static_cast<std::uint64_t>(n) : 0;
}

stats::server_view view_of(const stats_sources& src, std::vector<std::uint64_t>& requests_seen) {
    stats::server_view view;
    view.version = version;
    view.pid = src.server_pid;
    for (const auto& s : src.sockets) view.sockets.push_back(socket_of(s));
    const auto now = std::chrono::system_clock::now();
    if (!src.board) {
        view.uptime_seconds = std::chrono::duration<double>(now - src.started).count();
        stats::worker_view w;
        w.id = 1;
        w.pid = src.server_pid;
        w.table = src.single;
        w.io_threads = src.io_threads;
        w.in_flight = src.single ? in_flight_of(*src.single) : 0;
        const memory m = memory_of(w.pid);
        w.rss = m.rss;
        w.vsz = m.vsz;
        w.respawn_count = 1;
        w.last_spawn = std::chrono::duration<double>(src.started.time_since_epoch()).count();
        requests_seen.resize(1);
        view.workers.push_back(w);
        return view;
    }
    const board_header& h = src.board->header();
    view.uptime_seconds =
        std::max<double>(0, std::chrono::duration<double>(now.time_since_epoch()).count() -
                                static_cast<double>(h.started.load(std::memory_order_relaxed)));
    view.retired = &h.retired;
    for (std::size_t c = 0; c < static_cast<std::size_t>(restart_cause::count); ++c)
        view.worker_restarts[restart_cause_name(static_cast<restart_cause>(c))] =
            h.restarts[c].load(std::memory_order_relaxed);
    view.requests_lost = h.requests_lost.load(std::memory_order_relaxed);
    const std::size_t used =
        std::min<std::size_t>(h.slots_used.load(std::memory_order_acquire), src.board->size());
    requests_seen.resize(std::max(requests_seen.size(), used));
    for (std::size_t i = 0; i < used; ++i) {
        const worker_slot& slot = src.board->at(i);
        const long pid = static_cast<long>(slot.pid.load(std::memory_order_acquire));
        if (pid == 0) continue;
        stats::worker_view w;
        w.id = static_cast<int>(i + 1);
        w.pid = pid;
        w.ready = slot.accepting.load(std::memory_order_relaxed) != 0;
        w.in_flight = slot.in_flight.load(std::memory_order_relaxed);
        w.table = &slot.table;
        w.io_threads = std::min<std::size_t>(slot.io_threads.load(std::memory_order_relaxed),
                                             worker_slot::max_heartbeats);
        const memory m = memory_of(pid);
        w.rss = m.rss;
        w.vsz = m.vsz;
        w.respawn_count = slot.respawn_count.load(std::memory_order_relaxed);
        w.last_spawn = static_cast<double>(slot.last_spawn.load(std::memory_order_relaxed));
        for (std::size_t t = 0; t < w.io_threads; ++t) {
            const long tid = slot.io_tids[t].load(std::memory_order_relaxed);
            w.io_thread_cpu_seconds.push_back(tid ? cpu_seconds_of(pid, tid) : 0.0);
        }
        const std::uint64_t requests = slot.table.total_requests();
        // A new worker in the slot starts from 0 again.
        w.delta_requests = requests >= requests_seen[i] ? requests - requests_seen[i] : requests;
        requests_seen[i] = requests;  // the same read: no request falls between two deltas
        view.workers.push_back(w);
    }
    return view;
}

const stats_sources* exposition_sources = nullptr;

std::string render_exposition() {
    return render_stats(*exposition_sources, stats_format::prometheus);
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

std::string render_stats(const stats_sources& src, stats_format format,
                         std::vector<std::uint64_t>* previous_requests) {
    for (int attempt = 0;; ++attempt) {
        std::uint64_t before = 0;
        if (src.board) {
            before = src.board->header().fold_sequence.load(std::memory_order_acquire);
            if ((before & 1) && attempt < 1000) {
                std::this_thread::yield();
                continue;
            }
        }
        std::vector<std::uint64_t> seen =
            previous_requests ? *previous_requests : std::vector<std::uint64_t>();
        stats::server_view view = view_of(src, seen);
        std::string out =
            format == stats_format::json ? stats::to_json(view).dump() : stats::to_prometheus(view);
        const bool consistent = !src.board || src.board->header().fold_sequence.load(
                                                  std::memory_order_acquire) == before;
        if (!consistent && attempt < 1000) continue;
        if (previous_requests) *previous_requests = std::move(seen);
        return out;
    }
}

void install_exposition(const stats_sources* sources) {
    exposition_sources = sources;
    stats::set_exposition_source(sources ? render_exposition : nullptr);
}

stats_server::stats_server(int listen_fd, bool http, stats_sources sources)
    : listen_fd_(listen_fd), http_(http), sources_(std::move(sources)) {
    set_nonblocking(listen_fd_);
}

stats_server::~stats_server() {
    stop();
    for (auto& c : connections_) ::close(c.fd);
    if (listen_fd_ >= 0) ::close(listen_fd_);
}

void stats_server::add_poll_fds(std::vector<pollfd>& fds) const {
    fds.push_back({listen_fd_, POLLIN, 0});
    for (const auto& c : connections_)
        fds.push_back({c.fd, static_cast<short>(c.responding ? POLLOUT : POLLIN), 0});
}

void stats_server::handle(const std::vector<pollfd>& fds, std::size_t first) {
    // The connections as they were when add_poll_fds ran: accept only after serving them.
    const std::size_t known = connections_.size();
    for (std::size_t i = 0; i < known && first + 1 + i < fds.size(); ++i) {
        const short ev = fds[first + 1 + i].revents;
        connection& c = connections_[i];
        if (ev & (POLLERR | POLLNVAL)) {
            close(c);
        } else if (c.responding && (ev & (POLLOUT | POLLHUP))) {
            on_writable(c);
        } else if (!c.responding && (ev & (POLLIN | POLLHUP))) {
            on_readable(c);
        }
    }
    if (first < fds.size() && (fds[first].revents & POLLIN)) accept_all();
    sweep();
}

int stats_server::timeout_ms() const {
    if (connections_.empty()) return -1;
    auto next = connections_.front().deadline;
    for (const auto& c : connections_) next = std::min(next, c.deadline);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(next - steady::now()).count();
    return static_cast<int>(std::clamp<long long>(ms + 1, 0, 1000));
}

void stats_server::accept_all() {
    for (;;) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;  // EAGAIN, or a transient error: the next poll tells
        if (connections_.size() >= max_connections) {
            ::close(fd);
            continue;
        }
        connections_.push_back({fd, {}, {}, 0, false, steady::now() + connection_deadline});
        connection& c = connections_.back();
        // uWSGI's stats server writes its document as soon as it accepts.
        if (!http_) respond(c);
    }
}

void stats_server::on_readable(connection& c) {
    char buf[2048];
    for (;;) {
        const ssize_t n = ::read(c.fd, buf, sizeof buf);
        if (n > 0) {
            c.in.append(buf, static_cast<std::size_t>(n));
            if (c.in.find("\r\n\r\n") != std::string::npos ||
                c.in.find("\n\n") != std::string::npos) {
                respond(c);
                return;
            }
            if (c.in.size() > max_request_head) {
                close(c);
                return;
            }
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) close(c);
        return;
    }
}

void stats_server::respond(connection& c) {
    c.responding = true;
    if (!http_) {
        c.out = render_stats(sources_, stats_format::json, &previous_requests_);
        on_writable(c);
        return;
    }
    std::istringstream line(c.in.substr(0, c.in.find('\n')));
    std::string method, target;
    line >> method >> target;
    const std::string path = target.substr(0, target.find('?'));
    int status = 200;
    std::string type = "application/json", body, extra;
    if (method != "GET" && method != "HEAD") {
        status = 405;
        type = "text/plain; charset=utf-8";
        body = "405 Method Not Allowed\n";
        extra = "Allow: GET, HEAD\r\n";
    } else if (path == "/" || path == "/stats" || path == "/stats.json") {
        body = render_stats(sources_, stats_format::json, &previous_requests_);
    } else if (path == "/metrics") {
        type = "text/plain; version=0.0.4; charset=utf-8";
        body = render_stats(sources_, stats_format::prometheus);
    } else if (path == "/_corgi/status" || path == "/status") {
        type = "text/html; charset=utf-8";
        body = std::string(status_page_html());
    } else {
        status = 404;
        type = "text/plain; charset=utf-8";
        body = "404 Not Found\n";
    }
    const char* reason = status == 200 ? "OK" : status == 404 ? "Not Found" : "Method Not Allowed";
    c.out = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Type: " + type +
            "\r\nContent-Length: " + std::to_string(body.size()) +
            "\r\nCache-Control: no-store\r\nConnection: close\r\n" + extra + "\r\n";
    if (method != "HEAD") c.out += body;
    on_writable(c);
}

void stats_server::on_writable(connection& c) {
    while (c.sent < c.out.size()) {
        const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) {
            c.sent += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        break;
    }
    close(c);
}

void stats_server::close(connection& c) {
    if (c.fd >= 0) ::close(c.fd);
    c.fd = -1;
}

void stats_server::sweep() {
    const auto now = steady::now();
    for (auto& c : connections_)
        if (c.fd >= 0 && now >= c.deadline) close(c);
    std::erase_if(connections_, [](const connection& c) { return c.fd < 0; });
}

void stats_server::close_in_child() noexcept {
    for (const auto& c : connections_) ::close(c.fd);
    ::close(listen_fd_);
}

void stats_server::start_thread() {
    if (::pipe2(stop_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) return;
    thread_ = std::thread([this] {
        std::vector<pollfd> fds;
        for (;;) {
            fds.clear();
            fds.push_back({stop_pipe_[0], POLLIN, 0});
            add_poll_fds(fds);
            const int r = ::poll(fds.data(), fds.size(), timeout_ms());
            if (r < 0 && errno != EINTR) return;
            if (fds[0].revents) return;
            handle(fds, 1);
        }
    });
}

void stats_server::stop() {
    if (!thread_.joinable()) return;
    const char byte = 's';
    [[maybe_unused]] ssize_t n = ::write(stop_pipe_[1], &byte, 1);
    thread_.join();
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
    stop_pipe_[0] = stop_pipe_[1] = -1;
}

}  // namespace corgi::master
