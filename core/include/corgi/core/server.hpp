// The server loop: listeners (TCP v4/v6 and unix sockets), io threads, connection lifetime, limits,
// timeouts and graceful shutdown. It knows no wire format: each listener has a `protocol` whose
// session function turns the connection's bytes into requests for the handler.
#pragma once

#include <corgi/core/handler.hpp>
#include <corgi/core/task.hpp>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace corgi {

using stream_socket = net::generic::stream_protocol::socket;
using namespace std::chrono_literals;

struct server_limits {
    std::size_t max_header_bytes = 64 * 1024;  // request line + headers (or a proxy's vars block)
    std::uint64_t max_body_bytes = 1024ull * 1024 * 1024;  // per request body
    std::chrono::milliseconds header_timeout =
        10s;                                       // whole header, from its first byte (slowloris)
    std::chrono::milliseconds body_timeout = 60s;  // between two pieces of a body
    std::chrono::milliseconds idle_timeout =
        60s;  // keep-alive: waiting for the next request's first byte
    std::chrono::milliseconds write_timeout = 60s;     // one write to the client
    std::chrono::milliseconds graceful_timeout = 30s;  // shutdown: in-flight requests get this long
    std::size_t max_connections = 10000;          // beyond this, new connections are closed at once
    std::size_t max_requests_per_connection = 0;  // 0: unlimited
    // Lingering close, as nginx's lingering_close: after an error answered while the request was
    // still arriving, the connection shuts its write side and reads and drops what the client
    // still sends, for at most lingering_time in all and lingering_timeout between two reads.
    // Closing with unread bytes makes the kernel send a reset, which can destroy the answer
    // before the client reads it. 0 s: no lingering.
    std::chrono::milliseconds lingering_time = 30s;
    std::chrono::milliseconds lingering_timeout = 5s;
    // Gunicorn's request limits, enforced by the HTTP parser; 0: unlimited (max_header_bytes
    // still bounds them).
    std::size_t limit_request_line = 4094;        // request line bytes without CRLF (414)
    std::size_t limit_request_fields = 100;       // header fields (431)
    std::size_t limit_request_field_size = 8190;  // one header field line without CRLF (431)
    // uWSGI's harakiri, failing one request instead of the worker: how long a handler may run
    // before the request is answered 504 and the handler cancelled (0: no deadline; a route's
    // "timeout" overrides it), and how long a cancelled request may take to end before it counts
    // as stuck (logged; the worker asks its master to replace it). Applied by the dispatcher
    // (make_dispatcher), not by the server loop.
    std::chrono::milliseconds harakiri{0};
    std::chrono::milliseconds harakiri_grace = 10s;
};

// An address to listen on: "host:port", ":port" (all interfaces), "[::1]:port" or "unix:/path".
struct listen_address {
    bool is_unix = false;
    std::string host;  // empty: all interfaces
    std::uint16_t port = 0;
    std::string path;  // unix socket path
    // Throws std::invalid_argument with a message naming the problem.
    static listen_address parse(std::string_view text);
    std::string to_string() const;
};

// A socket bound and listening, not yet served: what a master binds once before it forks its
// workers, each of which adopts it (one accept queue for all of them).
struct bound_listener {
    int fd = -1;
    listen_address address;  // as asked, with the real port when 0 was asked for
};
// Binds and listens (errors throw std::system_error naming the address). A stale unix socket file
// is replaced; one a live process answers on is an error. The caller owns the descriptor and, for
// a unix socket, the file.
bound_listener bind_listener(const listen_address& address, unsigned unix_socket_mode = 0);

class server;

// One accepted connection, as a protocol's session sees it. The session does its I/O on socket(),
// sets a deadline before each read or write, and marks itself idle while waiting for the next
// request so that a graceful shutdown can close it at once.
//
// An accepted descriptor becomes an Asio socket only when the session first needs to wait on it:
// registering it costs an epoll_ctl ADD, Asio's first operation an ioctl(FIONBIO) and its close an
// epoll_ctl DEL. A one-shot uwsgi or SCGI request from nginx (or an HTTP request on a connection
// of its own) usually arrives whole with the accept and is answered in one send, so try_read()
// and try_write() serve it on the raw non-blocking descriptor and none of the three is made.
class connection : public std::enable_shared_from_this<connection> {
  public:
    // Looks the addresses up on the socket (getpeername/getsockname).
    connection(server& owner, stream_socket socket);
    // A descriptor from accept4(SOCK_NONBLOCK) of the given address family, addresses already
    // known (from accept and the listener): no system call until the session needs one.
    connection(server& owner, const net::any_io_executor& executor, int fd, int family,
               std::string remote_addr, std::uint16_t remote_port, std::string local_addr,
               std::uint16_t local_port);
    ~connection();

    // The Asio socket, made from the descriptor on first use.
    stream_socket& socket() noexcept {
        if (raw_fd_ >= 0) adopt_descriptor();
        return socket_;
    }
    // Reads what is there without waiting, while the descriptor is not an Asio socket yet: bytes
    // read (ec clear), 0 with ec = eof, or 0 with ec = would_block when the caller must wait
    // (on socket(), as always once it exists).
    std::size_t try_read(net::mutable_buffer buffer, boost::system::error_code& ec) noexcept;
    // Writes what the socket takes without waiting, under the same condition: the bytes written
    // (the caller writes the rest on socket()), or 0 with ec set (would_block: wait).
    std::size_t try_write(std::span<const net::const_buffer> buffers,
                          boost::system::error_code& ec) noexcept;
    const server_limits& limits() const noexcept;
    const handler& app() const noexcept;

    // Peer and local address, known from accept ("" and 0 on a unix socket).
    const std::string& remote_addr() const noexcept { return remote_addr_; }
    std::uint16_t remote_port() const noexcept { return remote_port_; }
    const std::string& local_addr() const noexcept { return local_addr_; }
    std::uint16_t local_port() const noexcept { return local_port_; }

    // Pending socket operations are cancelled (and timed_out() turns true) once the deadline has
    // passed; if the session has not ended a write-timeout later, the socket is closed. Setting a
    // deadline is a store: one sweeper per io thread checks its connections' deadlines a few times
    // a second, so a connection costs no timer operation at all.
    void expires_after(std::chrono::steady_clock::duration d) noexcept;
    void expires_never() noexcept;
    bool timed_out() const noexcept { return timed_out_; }

    // Idle: between requests. A shutdown closes idle connections at once and lets busy ones finish.
    // A fresh connection is not idle: its client sent or is sending a request before the listener
    // closed, and that request is still served (within the header timeout and the grace period).
    void set_idle(bool idle) noexcept;
    // The server is shutting down: answer the current request with `Connection: close`, then end.
    bool draining() const noexcept;
    // Bytes the kernel holds that the session has not read yet: a draining server still serves a
    // request that has already arrived (closing over unread bytes would reset the connection).
    bool has_pending_input() noexcept;

    // The peer is a trusted proxy (--forwarded-allow-ips; a unix-socket peer always is).
    bool trusted_peer() const noexcept;

    // Closes the socket (idempotent); pending operations complete with an error.
    void close() noexcept;
    // Cancels pending operations (they complete with operation_aborted) and leaves the socket
    // open: what a completed read already delivered still reaches the session.
    void cancel_wait() noexcept;

    // Sessions call this when the first bytes of the connection arrive. Until then a draining
    // server gives the connection first_bytes_grace to start its request (a client that has
    // connected and then sent nothing for that long, such as a preconnect or a port check, would
    // otherwise hold the shutdown for the whole grace period).
    void received_first_bytes() noexcept { awaiting_first_bytes_ = false; }
    static constexpr std::chrono::seconds first_bytes_grace{1};

    // Ends a connection whose peer may still be sending (an error answered before the request
    // was read to its end): shuts the write side, then reads and drops what arrives until the
    // peer closes, lingering_timeout passes without a byte, lingering_time passes in all or
    // linger_max_bytes were dropped. The session returns afterwards and the server closes the
    // socket. While lingering the connection counts as idle: a graceful shutdown closes it at
    // once, and a server already draining does not linger at all.
    task<void> linger_close();
    static constexpr std::uint64_t linger_max_bytes = 64ull * 1024 * 1024;

  private:
    friend class server;
    void on_deadline(std::chrono::steady_clock::time_point now) noexcept;
    void adopt_descriptor() noexcept;
    int native_fd() noexcept;

    server& owner_;
    stream_socket socket_;
    int raw_fd_ = -1;  // the accepted descriptor until socket_ owns it (or it is closed)
    int family_ = 0;
    std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
    bool timed_out_ = false;
    bool idle_ = false;
    bool awaiting_first_bytes_ = true;
    bool closed_ = false;
    bool lingering_ = false;
    mutable signed char trusted_ = -1;  // trusted_peer(), looked up once
    std::string remote_addr_, local_addr_;
    std::uint16_t remote_port_ = 0, local_port_ = 0;
    connection* prev_ = nullptr;  // intrusive list of live connections, per io thread
    connection* next_ = nullptr;
    std::size_t thread_index_ = 0;
};

// A wire format: its name (for logs and request.protocol_name) and the coroutine that serves one
// connection. The session ends by returning; the server closes the socket afterwards.
struct protocol {
    std::string name;
    std::function<task<void>(connection&)> serve;
};

struct server_options {
    std::size_t io_threads = 0;  // 0: number of cores
    server_limits
        limits{};  // braces: designated initializers that omit it stay -Wextra clean (GCC 12)
    unsigned unix_socket_mode = 0;  // chmod of unix sockets; 0 leaves the umask's choice
    bool handle_signals = true;     // SIGINT/SIGTERM start a graceful shutdown
    // false: SIGINT is left alone (a pre-forked worker, whose master forwards it as SIGTERM).
    bool stop_on_sigint = true;
    // Peers whose X-Request-Id is taken as the request id (Gunicorn's --forwarded-allow-ips):
    // addresses, CIDR networks ("10.0.0.0/8", "fd00::/8") or "*" for any. Unix-socket peers are
    // always trusted (only a local process can connect, as in Gunicorn).
    std::vector<std::string> forwarded_allow_ips{"127.0.0.1", "::1"};
    // Called, on the server's control thread, when an io thread is still busy stuck_wait after
    // the graceful timeout closed every connection (a handler that never returns: Python spinning
    // on an io thread, a blocking C call): run() cannot return, so the program decides (the corgi
    // binary exits). Unset: run() waits.
    std::function<void()> on_stuck_thread{};  // braces: as limits above
    static constexpr std::chrono::seconds stuck_wait{2};
};

// Which peers are trusted proxies (server_options::forwarded_allow_ips), parsed once.
class peer_trust {
  public:
    // Throws std::invalid_argument naming an entry that is neither an address nor a network.
    explicit peer_trust(const std::vector<std::string>& entries);
    // "127.0.0.1, 10.0.0.0/8" -> its entries (Gunicorn's comma-separated form).
    static std::vector<std::string> split(std::string_view comma_separated);
    bool trusts(std::string_view address) const noexcept;

  private:
    bool any_ = false;
    struct network;
    std::vector<std::shared_ptr<const network>> networks_;
};

class server {
  public:
    explicit server(server_options options = {});
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    void set_handler(handler h);
    // Binds now (errors throw std::system_error naming the address), serves once run() starts.
    // Returns the bound address (the real port when 0 was asked for).
    listen_address listen(const listen_address& address, protocol proto);
    // Serves on a socket already bound and listening (inherited from a master, or from
    // bind_listener), which the server then owns and closes; a unix socket's file is left where it
    // is. Returns the address it is bound to. Throws std::system_error if fd is not listening.
    listen_address adopt(int fd, protocol proto);
    // The listening sockets, in the order they were added (for their accept queues in the
    // stats); valid until run() returns.
    std::vector<int> listener_fds() const;

    // Runs the io threads until shutdown; returns when every connection has ended.
    void run();
    // Starts a graceful shutdown: stop accepting, close idle connections, let busy ones finish
    // within limits.graceful_timeout, then close the rest. Safe from any thread and from a
    // signal-handling coroutine.
    void stop() noexcept;
    // True once stop() was called.
    bool stopping() const noexcept { return stopping_.load(std::memory_order_relaxed); }

    const server_limits& limits() const noexcept { return options_.limits; }
    const handler& app() const noexcept { return handler_; }
    std::size_t connection_count() const noexcept {
        return connections_.load(std::memory_order_relaxed);
    }
    // The io_context of io thread 0 (for tests and embedding programs that need an executor).
    net::io_context& main_context() noexcept { return *contexts_.front(); }
    std::size_t io_thread_count() const noexcept { return contexts_.size(); }
    net::io_context& io_context_of(std::size_t index) noexcept { return *contexts_[index]; }
    // What each io thread runs instead of its io_context's run() (set before run()): a loop that
    // runs that io_context until it stops, for a layer that shares the thread (the WSGI lanes
    // that run Python on the io threads). Called on the io thread itself; index 0 is the thread
    // that called run().
    using io_loop = std::function<void(std::size_t index, net::io_context&)>;
    void set_io_loop(io_loop loop) { io_loop_ = std::move(loop); }

  private:
    friend class connection;
    peer_trust trust_;
    struct listener;
    struct thread_slot;
    task<void> accept_loop(std::shared_ptr<listener> l, std::size_t index);
    void sweep_deadlines(std::size_t slot_index);
    void close_idle_and_wait(std::size_t slot_index);
    void finish_shutdown();

    server_options options_;
    handler handler_;
    std::vector<std::unique_ptr<net::io_context>> contexts_;
    std::vector<std::unique_ptr<thread_slot>> slots_;
    std::vector<std::shared_ptr<listener>> listeners_;
    std::atomic<bool> stopping_{false};
    std::atomic<std::size_t> connections_{0};
    // Signals, the graceful timeout and the shutdown's last step run here, on a thread of their
    // own, so that an io thread stuck in a handler cannot keep the process from hearing SIGTERM.
    net::io_context control_{1};
    std::weak_ptr<net::steady_timer> grace_timer_;  // control thread only
    std::function<void()> cancel_signals_;          // control thread only
    std::atomic<bool> threads_done_{false};         // every io thread has returned
    io_loop io_loop_;
};

}  // namespace corgi
