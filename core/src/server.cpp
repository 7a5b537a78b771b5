// The server loop: io threads (one io_context each), acceptors, connection registry and graceful
// shutdown.
#include <corgi/core/log.hpp>
#include <corgi/core/server.hpp>
#include <corgi/core/supervision.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

namespace corgi {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// "127.0.0.1" / "::1" and the port of a socket address; IPv4-mapped IPv6 shown as IPv4.
void describe(const net::generic::stream_protocol::endpoint& ep, std::string& addr,
              std::uint16_t& port) {
    char text[INET6_ADDRSTRLEN] = {};
    const sockaddr* sa = ep.data();
    if (sa->sa_family == AF_INET) {
        auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
        port = ntohs(in->sin_port);
        addr = text;
    } else if (sa->sa_family == AF_INET6) {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            ::inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], text, sizeof text);
        } else {
            ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
        }
        port = ntohs(in6->sin6_port);
        addr = text;
    } else {
        addr.clear();
        port = 0;
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// listen_address

listen_address listen_address::parse(std::string_view text) {
    listen_address a;
    if (text.starts_with("unix:")) {
        a.is_unix = true;
        a.path = std::string(text.substr(5));
        if (a.path.empty())
            throw std::invalid_argument("empty unix socket path in '" + std::string(text) + "'");
        if (a.path.size() >= sizeof(sockaddr_un{}.sun_path))
            throw std::invalid_argument("unix socket path too long: '" + a.path + "'");
        return a;
    }
    std::string_view host, port;
    if (text.starts_with("[")) {
        auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
            throw std::invalid_argument("bad address '" + std::string(text) +
                                        "': expected [ipv6]:port");
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos)
            throw std::invalid_argument("bad address '" + std::string(text) +
                                        "': expected host:port, :port, [ipv6]:port or unix:/path");
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (host.find(':') != std::string_view::npos)
            throw std::invalid_argument("bad address '" + std::string(text) +
                                        "': put IPv6 hosts in brackets");
    }
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
        throw std::invalid_argument("bad port in address '" + std::string(text) + "'");
    a.host = std::string(host);
    a.port = static_cast<std::uint16_t>(value);
    return a;
}

std::string listen_address::to_string() const {
    if (is_unix) return "unix:" + path;
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

// ---------------------------------------------------------------------------------------------------------------
// server internals

struct server::listener {
    using acceptor_type = net::basic_socket_acceptor<net::generic::stream_protocol>;
    acceptor_type acceptor;  // io thread 0's, the descriptor the listener was bound or adopted as
    std::vector<std::unique_ptr<acceptor_type>> more;  // io thread i's at i - 1 (null: none)
    acceptor_type& acceptor_of(std::size_t io_thread) {
        return io_thread == 0 ? acceptor : *more[io_thread - 1];
    }
    protocol proto;
    listen_address address;
    // Bound to one address: every connection's local address is this one, no getsockname needed.
    bool local_known = false;
    std::string local_addr;
    // Bound by listen(): the unix socket file is removed with the listener. An adopted socket's
    // file belongs to whoever bound it (the master of pre-forked workers).
    bool owns_path = false;
    listener(net::io_context& ctx, protocol p, listen_address a)
        : acceptor(ctx), proto(std::move(p)), address(std::move(a)) {}
    ~listener() {
        if (owns_path && address.is_unix && !address.path.empty()) ::unlink(address.path.c_str());
    }
};

// Per io thread: its live connections (touched only on that thread), the guard that keeps run()
// going and the sweeper that enforces their deadlines.
struct server::thread_slot {
    connection* head = nullptr;
    std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
    std::optional<net::steady_timer> sweeper;
};

namespace {
// How often each io thread checks its connections' deadlines: timeouts are seconds, so a quarter
// second of lateness is fine, and a few thousand comparisons a second cost less than one timer
// operation per request.
constexpr auto sweep_interval = std::chrono::milliseconds(250);
}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// connection

connection::connection(server& owner, stream_socket socket)
    : owner_(owner), socket_(std::move(socket)) {
    boost::system::error_code ec;
    auto remote = socket_.remote_endpoint(ec);
    if (!ec) describe(remote, remote_addr_, remote_port_);
    auto local = socket_.local_endpoint(ec);
    if (!ec) describe(local, local_addr_, local_port_);
}

connection::connection(server& owner, const net::any_io_executor& executor, int fd, int family,
                       std::string remote_addr, std::uint16_t remote_port, std::string local_addr,
                       std::uint16_t local_port)
    : owner_(owner),
      socket_(executor),
      raw_fd_(fd),
      family_(family),
      remote_addr_(std::move(remote_addr)),
      local_addr_(std::move(local_addr)),
      remote_port_(remote_port),
      local_port_(local_port) {}

connection::~connection() {
    if (raw_fd_ >= 0) ::close(raw_fd_);
}

void connection::adopt_descriptor() noexcept {
    const int fd = std::exchange(raw_fd_, -1);
    boost::system::error_code ec;
    socket_.assign(net::generic::stream_protocol(family_, family_ == AF_UNIX ? 0 : IPPROTO_TCP), fd,
                   ec);
    if (ec) {
        // Only when epoll refuses it (out of memory): the socket stays closed, and the session's
        // operations on it fail at once.
        ::close(fd);
        closed_ = true;
    }
}

int connection::native_fd() noexcept {
    return raw_fd_ >= 0 ? raw_fd_ : socket_.is_open() ? socket_.native_handle() : -1;
}

std::size_t connection::try_read(net::mutable_buffer buffer,
                                 boost::system::error_code& ec) noexcept {
    ec.clear();
    if (raw_fd_ < 0) {
        ec = closed_ ? net::error::bad_descriptor : net::error::would_block;
        return 0;
    }
    for (;;) {
        const ssize_t n = ::recv(raw_fd_, buffer.data(), buffer.size(), 0);
        if (n > 0) return static_cast<std::size_t>(n);
        if (n == 0) {
            ec = net::error::eof;
            return 0;
        }
        if (errno == EINTR) continue;
        ec = errno == EAGAIN || errno == EWOULDBLOCK
                 ? boost::system::error_code(net::error::would_block)
                 : boost::system::error_code(errno, boost::system::system_category());
        return 0;
    }
}

std::size_t connection::try_write(std::span<const net::const_buffer> buffers,
                                  boost::system::error_code& ec) noexcept {
    ec.clear();
    if (raw_fd_ < 0) {
        ec = closed_ ? net::error::bad_descriptor : net::error::would_block;
        return 0;
    }
    std::array<iovec, 16> iov;
    std::size_t count = 0;
    for (const auto& b : buffers) {
        if (b.size() == 0) continue;
        if (count == iov.size()) break;  // the rest goes on socket()
        iov[count].iov_base = const_cast<void*>(b.data());
        iov[count].iov_len = b.size();
        ++count;
    }
    if (count == 0) return 0;
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = count;
    for (;;) {
        const ssize_t n = ::sendmsg(raw_fd_, &msg, MSG_NOSIGNAL);
        if (n >= 0) return static_cast<std::size_t>(n);
        if (errno == EINTR) continue;
        ec = errno == EAGAIN || errno == EWOULDBLOCK
                 ? boost::system::error_code(net::error::would_block)
                 : boost::system::error_code(errno, boost::system::system_category());
        return 0;
    }
}

const server_limits& connection::limits() const noexcept { return owner_.limits(); }
const handler& connection::app() const noexcept { return owner_.app(); }
bool connection::draining() const noexcept { return owner_.stopping(); }

bool connection::has_pending_input() noexcept {
    int n = 0;
    return !closed_ && ::ioctl(native_fd(), FIONREAD, &n) == 0 && n > 0;
}

void connection::expires_after(std::chrono::steady_clock::duration d) noexcept {
    if (awaiting_first_bytes_ && draining())
        d = std::min<std::chrono::steady_clock::duration>(d, first_bytes_grace);
    deadline_ = std::chrono::steady_clock::now() + d;
}

void connection::expires_never() noexcept {
    deadline_ = std::chrono::steady_clock::time_point::max();
}

void connection::on_deadline(std::chrono::steady_clock::time_point now) noexcept {
    if (closed_) return;
    if (timed_out_) {
        close();  // the session had its chance to answer 408 and did not finish in time
        return;
    }
    // First expiry: cancel pending operations so the session can still answer (408) on the open
    // socket, with a write-timeout's grace before the socket is closed for good.
    timed_out_ = true;
    boost::system::error_code ec;
    socket_.cancel(ec);
    deadline_ = now + limits().write_timeout;
}

void connection::set_idle(bool idle) noexcept {
    idle_ = idle;
    // Draining: an idle connection ends, unless its next request has already arrived.
    if (idle && draining() && (lingering_ || !has_pending_input())) close();
}

void connection::cancel_wait() noexcept {
    if (closed_ || raw_fd_ >= 0) return;  // a raw descriptor has no operation to cancel
    boost::system::error_code ec;
    socket_.cancel(ec);
}

void connection::close() noexcept {
    if (closed_) return;
    closed_ = true;
    deadline_ = std::chrono::steady_clock::time_point::max();
    // close() alone: it sends the FIN (or the RST a client's unread bytes call for) and cancels
    // pending operations; a shutdown() first would be one more system call per connection.
    if (raw_fd_ >= 0) {
        ::close(std::exchange(raw_fd_, -1));  // never registered: no epoll_ctl DEL either
        return;
    }
    boost::system::error_code ec;
    socket_.close(ec);
}

task<void> connection::linger_close() {
    const server_limits& l = limits();
    boost::system::error_code ec;
    socket().shutdown(net::socket_base::shutdown_send, ec);
    if (ec || closed_ || draining() || l.lingering_time.count() <= 0 ||
        l.lingering_timeout.count() <= 0)
        co_return;
    lingering_ = true;  // what still arrives is dropped: a shutdown closes it at once
    set_idle(true);
    // An earlier expiry (the 408 that brought us here) must not make the next one close at once.
    timed_out_ = false;
    const auto end = std::chrono::steady_clock::now() + l.lingering_time;
    std::uint64_t dropped = 0;
    std::array<char, 16 * 1024> scratch;
    while (!closed_ && dropped < linger_max_bytes) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= end) break;
        expires_after(
            std::min<std::chrono::steady_clock::duration>(l.lingering_timeout, end - now));
        auto [read_ec, n] = co_await socket().async_read_some(net::buffer(scratch), use_tuple);
        if (read_ec) break;  // the peer's end of stream (the normal ending), a timeout or a close
        dropped += n;
    }
    expires_never();
}

// ---------------------------------------------------------------------------------------------------------------
// server

// ---------------------------------------------------------------------------------------------
// Trusted proxies

struct peer_trust::network {
    net::ip::address_v6 base;  // v4 as v4-mapped v6, so one comparison serves both
    unsigned prefix = 128;
};

namespace {
net::ip::address_v6 as_v6(const net::ip::address& a) {
    return a.is_v4() ? net::ip::make_address_v6(net::ip::v4_mapped, a.to_v4()) : a.to_v6();
}
bool same_prefix(const net::ip::address_v6& a, const net::ip::address_v6& b, unsigned prefix) {
    const auto x = a.to_bytes(), y = b.to_bytes();
    for (unsigned i = 0; i < 16 && prefix > 0; ++i, prefix = prefix >= 8 ? prefix - 8 : 0) {
        const unsigned bits = std::min(prefix, 8u);
        const unsigned char mask = static_cast<unsigned char>(0xff00u >> bits);
        if ((x[i] & mask) != (y[i] & mask)) return false;
    }
    return true;
}
}  // namespace

peer_trust::peer_trust(const std::vector<std::string>& entries) {
    for (const auto& entry : entries) {
        if (entry == "*") {
            any_ = true;
            continue;
        }
        const auto slash = entry.find('/');
        boost::system::error_code ec;
        const auto address = net::ip::make_address(entry.substr(0, slash), ec);
        auto bad = [&] {
            return std::invalid_argument("forwarded-allow-ips: '" + entry +
                                         "' is not an address, a network or *");
        };
        if (ec) throw bad();
        network n;
        n.base = as_v6(address);
        const unsigned max = address.is_v4() ? 32 : 128;
        unsigned prefix = max;
        if (slash != std::string::npos) {
            const std::string bits = entry.substr(slash + 1);
            auto [end, err] = std::from_chars(bits.data(), bits.data() + bits.size(), prefix);
            if (bits.empty() || err != std::errc() || end != bits.data() + bits.size() ||
                prefix > max)
                throw bad();
        }
        n.prefix = address.is_v4() ? prefix + 96 : prefix;
        networks_.push_back(std::make_shared<const network>(n));
    }
}

std::vector<std::string> peer_trust::split(std::string_view text) {
    std::vector<std::string> out;
    while (!text.empty()) {
        const auto comma = text.find(',');
        std::string_view item = text.substr(0, comma);
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        if (!item.empty()) out.emplace_back(item);
        if (comma == std::string_view::npos) break;
        text.remove_prefix(comma + 1);
    }
    return out;
}

bool peer_trust::trusts(std::string_view address) const noexcept {
    if (address.empty() || any_) return true;  // a unix socket's peer is a local process
    boost::system::error_code ec;
    const auto a = net::ip::make_address(std::string(address), ec);
    if (ec) return false;
    const auto v6 = as_v6(a);
    for (const auto& n : networks_)
        if (same_prefix(v6, n->base, n->prefix)) return true;
    return false;
}

bool connection::trusted_peer() const noexcept {
    if (trusted_ < 0) trusted_ = owner_.trust_.trusts(remote_addr_) ? 1 : 0;
    return trusted_ == 1;
}

server::server(server_options options)
    : trust_(options.forwarded_allow_ips), options_(std::move(options)) {
    std::size_t n = options_.io_threads ? options_.io_threads
                                        : std::max(1u, std::thread::hardware_concurrency());
    options_.io_threads = n;
    for (std::size_t i = 0; i < n; ++i) {
        contexts_.push_back(std::make_unique<net::io_context>(1));
        slots_.push_back(std::make_unique<thread_slot>());
    }
}

server::~server() = default;

void server::set_handler(handler h) { handler_ = std::move(h); }

bound_listener bind_listener(const listen_address& address, unsigned unix_socket_mode) {
    net::io_context ctx(1);
    net::basic_socket_acceptor<net::generic::stream_protocol> acc(ctx);
    listen_address bound = address;
    boost::system::error_code ec;
    // A unix socket file this call created is removed again when a later step fails.
    bool created_path = false;
    auto fail = [&](const char* what) {
        if (created_path) ::unlink(address.path.c_str());
        throw std::system_error(ec, std::string("cannot ") + what + " " + address.to_string());
    };
    if (address.is_unix) {
        // A stale socket file left by a crash is replaced; one that a live process answers on is an
        // error.
        struct stat st {};
        if (::lstat(address.path.c_str(), &st) == 0) {
            if (!S_ISSOCK(st.st_mode))
                throw std::system_error(
                    std::make_error_code(std::errc::file_exists),
                    "cannot listen on " + address.to_string() + ": not a socket");
            net::local::stream_protocol::socket probe(ctx);
            boost::system::error_code probe_ec;
            probe.connect(net::local::stream_protocol::endpoint(address.path), probe_ec);
            if (!probe_ec)
                throw std::system_error(std::make_error_code(std::errc::address_in_use),
                                        "cannot listen on " + address.to_string() +
                                            ": another process is serving on it");
            ::unlink(address.path.c_str());
        }
        net::local::stream_protocol::endpoint ep(address.path);
        net::generic::stream_protocol::endpoint gep(ep);
        acc.open(gep.protocol(), ec);
        if (ec) fail("open");
        acc.bind(gep, ec);
        if (ec) fail("bind");  // not ours: not unlinked
        created_path = true;
        if (unix_socket_mode) ::chmod(address.path.c_str(), unix_socket_mode);
    } else {
        net::ip::address ip;
        if (address.host.empty()) {
            ip = net::ip::address_v6::any();
        } else if (address.host == "localhost") {
            ip = net::ip::address_v4::loopback();
        } else {
            ip = net::ip::make_address(address.host, ec);
            if (ec) fail("parse the host of");
        }
        net::ip::tcp::endpoint tep(ip, address.port);
        net::generic::stream_protocol::endpoint gep(tep);
        acc.open(gep.protocol(), ec);
        if (ec && address.host.empty()) {  // no IPv6 on this machine: all IPv4 interfaces
            tep = net::ip::tcp::endpoint(net::ip::address_v4::any(), address.port);
            gep = net::generic::stream_protocol::endpoint(tep);
            ec.clear();
            acc.open(gep.protocol(), ec);
        }
        if (ec) fail("open");
        if (tep.address().is_v6()) {
            int off = 0;
            ::setsockopt(acc.native_handle(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
        }
        acc.set_option(net::socket_base::reuse_address(true), ec);
        acc.bind(gep, ec);
        if (ec) fail("bind");
        net::generic::stream_protocol::endpoint local = acc.local_endpoint(ec);
        std::string host;
        describe(local, host, bound.port);
        // Every protocol served here has the client speak first, so the kernel may hold a
        // connection until its first bytes arrive: accept then finds the request already readable,
        // which saves a failed read and an event-loop round trip per connection (nginx's `listen
        // ... deferred`). Best effort.
        int defer_seconds = 1;
        ::setsockopt(acc.native_handle(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_seconds,
                     sizeof defer_seconds);
    }
    acc.listen(net::socket_base::max_listen_connections, ec);
    if (ec) fail("listen on");
    const int fd = acc.release(ec);
    if (ec) fail("release the socket of");
    return {fd, bound};
}

listen_address server::listen(const listen_address& address, protocol proto) {
    bound_listener b = bind_listener(address, options_.unix_socket_mode);
    try {
        adopt(b.fd, std::move(proto));
    } catch (...) {
        ::close(b.fd);
        if (b.address.is_unix) ::unlink(b.address.path.c_str());
        throw;
    }
    auto& l = *listeners_.back();
    l.address = b.address;  // as asked ("", "localhost"), with the real port
    l.owns_path = true;     // bound here: the unix socket file goes with the listener
    return l.address;
}

listen_address server::adopt(int fd, protocol proto) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int accepting = 0;
    socklen_t accepting_len = sizeof accepting;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0 ||
        ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &accepting_len) != 0 || !accepting)
        throw std::system_error(
            std::make_error_code(std::errc::invalid_argument),
            "cannot adopt descriptor " + std::to_string(fd) + ": not a listening socket");
    listen_address address;
    bool local_known = false;
    std::string local_addr;
    if (ss.ss_family == AF_UNIX) {
        address.is_unix = true;
        address.path = reinterpret_cast<const sockaddr_un*>(&ss)->sun_path;
    } else {
        net::generic::stream_protocol::endpoint ep(&ss, len);
        describe(ep, local_addr, address.port);
        address.host = local_addr;
        // One address, not all interfaces ("0.0.0.0" and "::" are all of them).
        local_known = local_addr != "0.0.0.0" && local_addr != "::";
        if (!local_known) address.host.clear();
    }
    auto l = std::make_shared<listener>(*contexts_.front(), std::move(proto), address);
    l->local_known = local_known;
    l->local_addr = local_addr;
    boost::system::error_code ec;
    net::generic::stream_protocol family(ss.ss_family, 0);
    l->acceptor.assign(family, fd, ec);
    if (ec)
        throw std::system_error(
            ec, "cannot adopt descriptor " + std::to_string(fd) + " (" + address.to_string() + ")");
    listeners_.push_back(l);
    return address;
}

task<void> server::accept_loop(std::shared_ptr<listener> l, std::size_t index) {
    const bool tcp = !l->address.is_unix;
    // Every io thread accepts on the listener (its own descriptor of it) and serves what it
    // accepts: no hand-off between threads, and a thread busy in a handler (Python on an io
    // thread, a blocking call) leaves new connections to the others, as pre-forked workers do.
    auto& acceptor = l->acceptor_of(index);
    net::io_context& target = *contexts_[index];
    // accept4 on the descriptor rather than Asio's async_accept: the connection gets a
    // non-blocking descriptor in the same call, and it becomes an Asio socket only if its session
    // has to wait (see connection). The acceptor is closed only by a handler of this io thread, so
    // between two suspensions the descriptor is ours; after each one it is checked again.
    const int listen_fd = acceptor.native_handle();
    {
        boost::system::error_code ec;
        acceptor.non_blocking(true, ec);  // accept4 must never block the io thread
        if (ec) {
            log::error("accept on " + l->address.to_string() + ": " + ec.message());
            co_return;
        }
    }
    for (;;) {
        sockaddr_storage peer_addr{};
        socklen_t peer_len = sizeof peer_addr;
        const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer_addr), &peer_len,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            const int e = errno;
            if (e == EINTR || e == ECONNABORTED) continue;
            if (e == EAGAIN || e == EWOULDBLOCK) {
                // The queue is empty: wait for the next connection (epoll, edge-triggered: only
                // now, after EAGAIN, does a wait see the next edge).
                auto [ec] = co_await acceptor.async_wait(net::socket_base::wait_read, use_tuple);
                if (ec == net::error::operation_aborted || !acceptor.is_open()) co_return;
                if (!ec) continue;
                log::warning("accept on " + l->address.to_string() + ": " + ec.message());
            } else {
                // Out of descriptors or memory: say so, breathe, go on.
                log::warning("accept on " + l->address.to_string() + ": " + std::strerror(e));
            }
            net::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(50));
            co_await pause.async_wait(use_tuple);
            if (!acceptor.is_open()) co_return;
            continue;
        }
        // A connection accepted as the shutdown begins is served (and drained) all the same:
        // dropping it would reset a client whose request is already in the socket.
        if (connections_.load(std::memory_order_relaxed) >= options_.limits.max_connections) {
            ::close(fd);
            continue;
        }
        net::generic::stream_protocol::endpoint peer(&peer_addr, peer_len, tcp ? IPPROTO_TCP : 0);
        if (tcp) {
            int one = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        connections_.fetch_add(1, std::memory_order_relaxed);
        // The peer comes with accept and the local address from the listener when it is bound to
        // one, so a connection costs no getpeername/getsockname (unix sockets have neither).
        std::string remote_addr, local_addr;
        std::uint16_t remote_port = 0, local_port = 0;
        if (tcp) {
            describe(peer, remote_addr, remote_port);
            if (l->local_known) {
                local_addr = l->local_addr;
                local_port = l->address.port;
            } else {
                sockaddr_storage local_addr_raw{};
                socklen_t local_len = sizeof local_addr_raw;
                if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local_addr_raw), &local_len) ==
                    0)
                    describe(net::generic::stream_protocol::endpoint(&local_addr_raw, local_len,
                                                                     IPPROTO_TCP),
                             local_addr, local_port);
            }
        }
        auto conn = std::make_shared<connection>(*this, target.get_executor(), fd,
                                                 peer_addr.ss_family, std::move(remote_addr),
                                                 remote_port, std::move(local_addr), local_port);
        conn->thread_index_ = index;
        // The session runs on the connection's own io thread; registration happens there too.
        net::co_spawn(
            target,
            [this, conn, l]() -> task<void> {
                thread_slot& slot = *slots_[conn->thread_index_];
                conn->next_ = slot.head;
                if (slot.head) slot.head->prev_ = conn.get();
                slot.head = conn.get();
                // Accepted as a shutdown begins: served all the same (a fresh connection is not
                // idle), since its client has sent or is sending a request.
                co_await l->proto.serve(*conn);
            },
            [this, conn, l](std::exception_ptr e) {
                if (e) {
                    try {
                        std::rethrow_exception(e);
                    } catch (const std::exception& ex) {
                        log::error(l->proto.name + " session failed: " + ex.what());
                    } catch (...) {
                        log::error(l->proto.name + " session failed");
                    }
                }
                conn->close();
                thread_slot& slot = *slots_[conn->thread_index_];
                if (conn->prev_)
                    conn->prev_->next_ = conn->next_;
                else if (slot.head == conn.get())
                    slot.head = conn->next_;
                if (conn->next_) conn->next_->prev_ = conn->prev_;
                conn->prev_ = conn->next_ = nullptr;
                if (connections_.fetch_sub(1, std::memory_order_acq_rel) == 1 && stopping())
                    net::post(control_, [this] { finish_shutdown(); });
            });
        // One connection per turn: its session starts before the next accept, so a thread whose
        // session blocks (Python on an io thread) leaves the connections queued meanwhile to the
        // other io threads, which were woken by the same readiness.
        co_await net::post(acceptor.get_executor(), use_tuple);
        if (!acceptor.is_open()) co_return;
    }
}

void server::run() {
    if (!handler_) handler_ = [](request&) -> task<response> { co_return response::error(404); };
    for (std::size_t i = 0; i < slots_.size(); ++i) {
        slots_[i]->work.emplace(net::make_work_guard(*contexts_[i]));
        slots_[i]->sweeper.emplace(*contexts_[i]);
        sweep_deadlines(i);
    }
    for (auto& l : listeners_) {
        // The other io threads' acceptors: each a dup() of the listening descriptor, registered
        // with its own thread's epoll.
        for (std::size_t i = l->more.size() + 1; i < contexts_.size(); ++i) {
            const int fd = ::fcntl(l->acceptor.native_handle(), F_DUPFD_CLOEXEC, 0);
            auto acc = std::make_unique<listener::acceptor_type>(*contexts_[i]);
            boost::system::error_code ec;
            if (fd >= 0) acc->assign(l->acceptor.local_endpoint(ec).protocol(), fd, ec);
            if (fd < 0 || ec) {
                if (fd >= 0) ::close(fd);
                log::warning("io thread " + std::to_string(i) + " cannot accept on " +
                             l->address.to_string() + ": " +
                             (fd < 0 ? std::string(std::strerror(errno)) : ec.message()));
                acc.reset();
            }
            l->more.push_back(std::move(acc));
        }
        for (std::size_t i = 0; i < contexts_.size(); ++i) {
            if (i > 0 && !l->more[i - 1]) continue;
            net::co_spawn(*contexts_[i], accept_loop(l, i), [l](std::exception_ptr e) {
                if (e)
                    log::error("acceptor for " + l->address.to_string() +
                               " stopped by an exception");
            });
        }
    }
    auto control_work = net::make_work_guard(control_);
    std::optional<net::signal_set> signals;
    if (options_.handle_signals) {
        signals.emplace(control_, SIGTERM);
        if (options_.stop_on_sigint) signals->add(SIGINT);
        signals->async_wait([this, &signals](boost::system::error_code ec, int sig) {
            if (ec) return;
            log::info(std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") +
                      ", shutting down gracefully");
            stop();
            // A second signal while draining ends at once.
            signals->async_wait([this](boost::system::error_code ec2, int) {
                if (ec2) return;
                log::info("second signal: closing every connection now");
                for (std::size_t i = 0; i < contexts_.size(); ++i)
                    net::post(*contexts_[i], [this, i] {
                        for (connection* c = slots_[i]->head; c; c = c->next_) c->close();
                    });
                finish_shutdown();
            });
        });
        cancel_signals_ = [&signals] {
            boost::system::error_code ec;
            signals->cancel(ec);
        };
    }
    auto run_context = [this](std::size_t i) {
        if (io_loop_)
            io_loop_(i, *contexts_[i]);
        else
            contexts_[i]->run();
    };
    threads_done_.store(false);
    std::thread control([this] {
        ::pthread_setname_np(::pthread_self(), "corgi-control");
        control_.run();
    });
    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < contexts_.size(); ++i)
        threads.emplace_back([&run_context, i] {
            // Named so `top -H` and perf tell the io threads apart (the main thread is io thread
            // 0).
            const std::string name = "corgi-io-" + std::to_string(i);
            ::pthread_setname_np(::pthread_self(), name.c_str());
            run_context(i);
        });
    run_context(0);
    for (auto& t : threads) t.join();
    threads_done_.store(true);
    // The signal set goes with the control thread's last handlers.
    net::post(control_, [this] {
        if (cancel_signals_) cancel_signals_();
        cancel_signals_ = nullptr;
        control_.stop();
    });
    control.join();
    control_.restart();
    listeners_.clear();  // removes unix socket files
    log::flush();
}

void server::stop() noexcept {
    if (stopping_.exchange(true)) return;
    // Each acceptor is closed on its own io thread (its accept loop relies on that).
    for (std::size_t i = 0; i < contexts_.size(); ++i)
        net::post(*contexts_[i], [this, i] {
            for (auto& l : listeners_) {
                if (i > 0 && (i > l->more.size() || !l->more[i - 1])) continue;
                boost::system::error_code ec;
                l->acceptor_of(i).close(ec);
            }
        });
    net::post(control_, [this] {
        for (std::size_t i = 0; i < contexts_.size(); ++i)
            net::post(*contexts_[i], [this, i] { close_idle_and_wait(i); });
        if (connections_.load() == 0) {
            finish_shutdown();
            return;
        }
        // Busy connections get the grace period, then are closed.
        auto grace =
            std::make_shared<net::steady_timer>(control_, options_.limits.graceful_timeout);
        grace->async_wait([this, grace](boost::system::error_code ec) {
            if (ec) return;
            if (connections_.load() > 0)
                log::warning("graceful shutdown: closing " + std::to_string(connections_.load()) +
                             " connection(s) still busy after the grace period");
            // The grace period bounds the exit: handlers still running (a C++ handler waiting on a
            // timer, a Python request) would keep their io_context alive, so each context is
            // stopped after its sockets are closed; the remaining coroutine frames are destroyed
            // with the io_context.
            for (std::size_t i = 0; i < contexts_.size(); ++i)
                net::post(*contexts_[i], [this, i] {
                    for (connection* c = slots_[i]->head; c; c = c->next_) c->close();
                    contexts_[i]->stop();
                });
            finish_shutdown();
            if (!options_.on_stuck_thread) return;
            // An io thread that does not take the posts above is inside a handler that does not
            // return.
            auto stuck = std::make_shared<net::steady_timer>(control_, server_options::stuck_wait);
            stuck->async_wait([this, stuck](boost::system::error_code ec2) {
                if (!ec2 && !threads_done_.load()) options_.on_stuck_thread();
            });
        });
        grace_timer_ = grace;
    });
}

std::vector<int> server::listener_fds() const {
    std::vector<int> fds;
    for (const auto& l : listeners_) fds.push_back(l->acceptor.native_handle());
    return fds;
}

void server::close_idle_and_wait(std::size_t slot_index) {
    // An idle connection whose next request has already arrived (a pipelined request) is served
    // with `Connection: close` rather than reset: closing a socket with unread bytes sends RST,
    // and the client loses a request it already sent. The others have their wait cancelled, not
    // their socket closed: the reactor may already have read the next request into the session's
    // buffer, its completion queued behind this handler (FIONREAD is 0 then). The session serves
    // those bytes, or returns on the cancelled read, and the server closes the socket after it.
    const auto first_bytes_due = std::chrono::steady_clock::now() + connection::first_bytes_grace;
    for (connection* c = slots_[slot_index]->head; c; c = c->next_) {
        if (c->awaiting_first_bytes_ && !c->has_pending_input())
            c->deadline_ = std::min(c->deadline_, first_bytes_due);
        if (!c->idle_) continue;
        if (c->lingering_)
            c->close();  // what a lingering read gets is dropped anyway
        else if (!c->has_pending_input())
            c->cancel_wait();
    }
}

void server::finish_shutdown() {
    if (auto g = grace_timer_.lock()) g->cancel();
    if (cancel_signals_) cancel_signals_();
    for (std::size_t i = 0; i < contexts_.size(); ++i)
        net::post(*contexts_[i], [this, i] {
            slots_[i]->work.reset();
            if (slots_[i]->sweeper) slots_[i]->sweeper->cancel();
        });
}

void server::sweep_deadlines(std::size_t slot_index) {
    thread_slot& slot = *slots_[slot_index];
    slot.sweeper->expires_after(sweep_interval);
    slot.sweeper->async_wait([this, slot_index](boost::system::error_code ec) {
        if (ec) return;  // shutdown
        const auto now = std::chrono::steady_clock::now();
        // on_deadline may close a connection, which only cancels its session; the session unlinks
        // it later, so the list stays intact while it is walked.
        for (connection* c = slots_[slot_index]->head; c; c = c->next_)
            if (c->deadline_ <= now) c->on_deadline(now);
        // The master's liveness check: an io thread that stops running its sweeper is stuck.
        supervision::heartbeat(slot_index);
        sweep_deadlines(slot_index);
    });
}

}  // namespace corgi
