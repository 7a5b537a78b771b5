// One request per connection, as nginx's uwsgi_pass and scgi_pass use these protocols: read the
// head under the header limit and timeout, stream the body under the body limit and timeout,
// answer, close.
#include "cgi_session.hpp"

#include <corgi/core/completion.hpp>
#include <corgi/core/http_error.hpp>
#include <corgi/core/log.hpp>

#include <boost/asio/as_tuple.hpp>
#include <tuple>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace corgi::protocols::detail {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::string peer_of(const connection& conn) {
    if (conn.remote_addr().empty()) return "a unix socket peer";
    return conn.remote_addr() + ":" + std::to_string(conn.remote_port());
}

// The body: first what arrived along with the head, then reads from the socket, up to
// CONTENT_LENGTH.
class stream_body final : public body_source {
  public:
    stream_body(connection& conn, std::vector<char>& buffer, std::string_view leftover,
                std::uint64_t length)
        : conn_(conn), buffer_(buffer), leftover_(leftover), remaining_(length) {}

    task<std::string_view> read_some() override {
        if (failed_) throw bad_request("request body unavailable after an earlier error");
        if (remaining_ == 0) co_return std::string_view();
        if (!leftover_.empty()) {
            auto n =
                static_cast<std::size_t>(std::min<std::uint64_t>(leftover_.size(), remaining_));
            std::string_view piece = leftover_.substr(0, n);
            leftover_ = {};  // bytes past CONTENT_LENGTH are not ours to give
            remaining_ -= n;
            received_ += n;
            co_return piece;
        }
        conn_.expires_after(conn_.limits().body_timeout);
        auto want = static_cast<std::size_t>(std::min<std::uint64_t>(buffer_.size(), remaining_));
        auto [ec, n] =
            co_await conn_.socket().async_read_some(net::buffer(buffer_.data(), want), use_tuple);
        if (ec) {
            failed_ = true;
            if (conn_.timed_out()) throw http_error(408, "request body timed out");
            throw bad_request("the proxy closed the connection before the body was complete");
        }
        remaining_ -= n;
        received_ += n;
        co_return std::string_view(buffer_.data(), n);
    }

    bool complete() const noexcept { return remaining_ == 0; }
    bool failed() const noexcept { return failed_; }

  private:
    connection& conn_;
    std::vector<char>& buffer_;
    std::string_view leftover_;
    std::uint64_t remaining_;
    bool failed_ = false;
};

// What one request on one connection needs. These protocols open a connection per request, so the
// state is pooled per io thread: the buffer, the request's strings and the head scratch keep their
// capacity.
struct stream_state {
    std::vector<char> buffer;
    request req;
    cgi_request_builder builder;
    std::string head;
};

class stream_state_lease {
  public:
    stream_state_lease() {
        if (pool().empty()) {
            state_ = std::make_unique<stream_state>();
        } else {
            state_ = std::move(pool().back());
            pool().pop_back();
        }
    }
    ~stream_state_lease() {
        if (pool().size() >= max_pooled) return;
        if (state_->buffer.capacity() > 64 * 1024) std::vector<char>().swap(state_->buffer);
        pool().push_back(std::move(state_));
    }
    stream_state_lease(const stream_state_lease&) = delete;
    stream_state_lease& operator=(const stream_state_lease&) = delete;
    stream_state& operator*() noexcept { return *state_; }

  private:
    static constexpr std::size_t max_pooled = 256;
    static std::vector<std::unique_ptr<stream_state>>& pool() {
        thread_local std::vector<std::unique_ptr<stream_state>> states;
        return states;
    }
    std::unique_ptr<stream_state> state_;
};

// Sends the response and logs it; false when the connection cannot be closed cleanly (peer gone,
// aborted).
task<bool> respond(connection& conn, const stream_protocol& proto, stream_state& s, response& res) {
    response_framing framing;
    framing.style = proto.style;
    framing.version = s.req.version == 10 ? 10 : 11;
    framing.keep_alive = false;
    framing.head_request = s.req.method == "HEAD";
    framing.req = &s.req;
    framing.chunked_allowed = false;  // nginx reads these responses to the end of the connection
    if (s.req.method.empty()) s.req.method = "-";
    begin_request(s.req, conn.trusted_peer());  // refusals come here without having begun
    socket_output out(conn);
    try {
        send_result sent = co_await send_response(out, res, framing, s.head);
        request_done(s.req, {res.status, sent.body_bytes, sent.aborted});
        co_return !sent.aborted;
    } catch (const std::exception&) {
        request_done(s.req, {res.status, 0, true});  // the proxy went away mid-response
        co_return false;
    }
}

}  // namespace

task<void> serve_stream_request(connection& conn, const stream_protocol& proto) {
    const server_limits& limits = conn.limits();
    const std::size_t max_vars = limits.max_header_bytes;
    const std::size_t max_head = proto.max_head_bytes(max_vars);
    stream_state_lease lease;
    stream_state& s = *lease;
    std::vector<char>& buffer = s.buffer;
    request& req = s.req;
    cgi_request_builder& builder = s.builder;
    if (buffer.size() < 16 * 1024) buffer.resize(std::min<std::size_t>(max_head, 16 * 1024));

    // The head, under the header timeout from the accept: a proxy writes its request as soon as it
    // connects. One request per connection, so the connection is never idle: a draining server
    // still serves the request its proxy is sending.
    conn.expires_after(limits.header_timeout);
    builder.begin(req, proto.name);
    std::size_t used = 0;
    stream_head head;
    for (;;) {
        if (used == buffer.size()) buffer.resize(std::min(buffer.size() * 2, max_head));
        const net::mutable_buffer space(buffer.data() + used, buffer.size() - used);
        // nginx writes its request as it connects: usually it is there, and no Asio socket (nor
        // its epoll registration) is needed for this connection at all.
        boost::system::error_code ec;
        std::size_t n = conn.try_read(space, ec);
        if (ec == net::error::would_block)
            std::tie(ec, n) = co_await conn.socket().async_read_some(space, use_tuple);
        if (ec) {
            if (used != 0)
                log::warning(
                    std::string(proto.name) + ": " +
                    (conn.timed_out() ? "request head timed out" : "request head truncated") +
                    " from " + peer_of(conn));
            co_return;
        }
        used += n;
        conn.received_first_bytes();
        head = proto.parse(std::string_view(buffer.data(), used), max_vars, builder);
        if (head.state == stream_head::status::complete) break;
        if (head.state == stream_head::status::error) {
            log::warning(std::string(proto.name) + ": " + head.error + " from " + peer_of(conn) +
                         "; connection closed");
            co_return;
        }
        if (used ==
            max_head) {  // the parser asks for more than the limit allows: it would have said so
            log::warning(std::string(proto.name) + ": request head too large from " +
                         peer_of(conn));
            co_return;
        }
    }

    if (const char* problem = builder.finish()) {
        log::warning(std::string(proto.name) + ": bad request from " + peer_of(conn) + ": " +
                     problem);
        response res = response::error(400, problem);
        // The proxy may still be writing the body: read and drop it rather than reset.
        if (co_await respond(conn, proto, s, res)) co_await conn.linger_close();
        co_return;
    }
    if (req.content_length && *req.content_length > limits.max_body_bytes) {
        response res = response::error(413);
        if (co_await respond(conn, proto, s, res)) co_await conn.linger_close();
        co_return;
    }

    begin_request(req, conn.trusted_peer());
    std::string_view leftover(buffer.data() + head.consumed, used - head.consumed);
    stream_body body(conn, buffer, leftover, req.content_length.value_or(0));
    if (!body.complete()) req.body = &body;

    response res;
    try {
        res = co_await conn.app()(req);
    } catch (...) {
        res = make_error_response(std::current_exception(), req);
    }

    // The proxy writes the whole request before it reads the answer: a body the handler left unread
    // is read and dropped first, or a large one would leave both sides waiting on each other.
    if (!body.complete() && !body.failed()) {
        try {
            while (!(co_await body.read_some()).empty()) {
            }
        } catch (const std::exception&) {
            co_return;  // the proxy is gone or stalled: nobody to answer
        }
    }
    // The server's close() ends the connection (its FIN follows the answer): a shutdown() first
    // would be one more system call per request, which behind nginx means per connection.
    (void)co_await respond(conn, proto, s, res);
}

}  // namespace corgi::protocols::detail
