// HTTP/1.1 (and 1.0) sessions: corgi's http_parser feeding a reused corgi::request directly,
// keep-alive, pipelining (requests answered in order), chunked bodies both ways, Expect:
// 100-continue, limits and timeouts.
#include "http_parser.hpp"
#include "response_writer.hpp"

#include <corgi/core/completion.hpp>
#include <corgi/core/http_error.hpp>
#include <corgi/core/log.hpp>
#include <corgi/protocols/protocols.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <tuple>

#include <stdexcept>

namespace corgi::protocols {

namespace {

namespace http = boost::beast::http;
using boost::beast::error_code;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
// The first read of a request: enough for a typical header, and the flat buffer keeps its capacity.
constexpr std::size_t first_read_bytes = 16 * 1024;

using detail::http_parser;

// The state one HTTP connection keeps between requests.
struct http_session {
    connection& conn;
    boost::beast::flat_buffer buffer;
    request req;
    std::string head;  // response head, reused
    detail::socket_output out{conn};

    explicit http_session(connection& c)
        : conn(c), buffer(c.limits().max_header_bytes + 64 * 1024) {}
};

// Parses what is buffered, reading more until the parser makes progress or fails (what Beast's
// http::async_read_some does, but through http_parser::put). EOF mid-message is
// partial_message, EOF before any byte end_of_stream.
task<error_code> read_and_parse(http_session& s, http_parser& parser) {
    error_code ec;
    if (s.buffer.size() != 0) {
        s.buffer.consume(parser.put(s.buffer.data(), ec));
        if (ec != http::error::need_more) co_return ec;
    }
    for (;;) {
        const std::size_t room = s.buffer.max_size() - s.buffer.size();
        if (room == 0) co_return http::error::buffer_overflow;
        auto [read_ec, n] = co_await s.conn.socket().async_read_some(
            s.buffer.prepare(std::min<std::size_t>(room, 64 * 1024)), use_tuple);
        s.buffer.commit(n);
        if (read_ec == net::error::eof) {
            if (!parser.got_some()) co_return http::error::end_of_stream;
            ec = {};
            parser.put_eof(ec);
            co_return ec;
        }
        if (read_ec) co_return read_ec;
        s.buffer.consume(parser.put(s.buffer.data(), ec));
        if (ec != http::error::need_more) co_return ec;
    }
}

// The request body as the handler reads it: pieces straight out of the parser.
class http_body final : public body_source {
  public:
    http_body(http_session& s, http_parser& p) : s_(s), parser_(p) {}

    task<std::string_view> read_some() override {
        std::string& piece = parser_.body_piece();
        // Body bytes that arrived with the header were parsed with it (eager parsing): they come
        // first.
        if (!started_) {
            started_ = true;
            if (!piece.empty()) {
                received_ += piece.size();
                co_return std::string_view(piece);
            }
        }
        piece.clear();
        if (failed_) throw bad_request("request body unavailable after an earlier error");
        if (parser_.is_done()) co_return std::string_view();
        if (parser_.expects_continue() && !continue_sent_) {
            continue_sent_ = true;
            static constexpr std::string_view interim = "HTTP/1.1 100 Continue\r\n\r\n";
            std::array<net::const_buffer, 1> b{net::buffer(interim)};
            co_await s_.out.write(b);
        }
        // Bytes already buffered (pipelined with the header) are parsed before anything is read.
        while (piece.empty() && !parser_.is_done()) {
            s_.conn.expires_after(s_.conn.limits().body_timeout);
            error_code ec = co_await read_and_parse(s_, parser_);
            if (ec) {
                failed_ = true;
                if (ec == http::error::body_limit)
                    throw payload_too_large("request body exceeds " +
                                            std::to_string(s_.conn.limits().max_body_bytes) +
                                            " bytes");
                if (s_.conn.timed_out()) throw http_error(408, "request body timed out");
                if (ec == http::error::end_of_stream || ec == net::error::eof ||
                    ec == http::error::partial_message)
                    throw bad_request("client closed the connection before the body was complete");
                throw bad_request("malformed request body: " + parser_.reason(ec));
            }
        }
        received_ += piece.size();
        co_return std::string_view(piece);
    }

    bool failed() const noexcept { return failed_; }
    bool continue_sent() const noexcept { return continue_sent_; }

  private:
    http_session& s_;
    http_parser& parser_;
    bool failed_ = false;
    bool continue_sent_ = false;
    bool started_ = false;
};

// Answers a request we refuse before the handler, then the connection closes.
task<void> reject(http_session& s, int status, std::string_view detail) {
    response res = response::error(status, detail);
    detail::response_framing framing;
    framing.version = s.req.version == 10 ? 10 : 11;
    framing.keep_alive = false;
    if (s.req.method.empty()) s.req.method = "-";
    begin_request(s.req, s.conn.trusted_peer());
    try {
        auto sent = co_await detail::send_response(s.out, res, framing, s.head);
        request_done(s.req, {status, sent.body_bytes, sent.aborted});
    } catch (const std::exception&) {
        request_done(s.req, {status, 0, true});  // the client is gone; nothing more to tell it
    }
}

task<void> serve_http(connection& conn) {
    http_session s(conn);
    const server_limits& limits = conn.limits();
    for (std::size_t served = 0;; ++served) {
        s.req.reset();
        s.req.protocol_name = "http";
        s.req.remote_addr = conn.remote_addr();
        s.req.remote_port = conn.remote_port();
        s.req.server_name = conn.local_addr();
        s.req.server_port = conn.local_port();
        http_parser parser(s.req, limits);

        // The header: idle timeout until its first byte, then the header timeout for all of it
        // (slowloris).
        // Idle only between requests: a fresh connection was accepted before any shutdown began,
        // so its client has sent or is sending its first request, which a draining server still
        // serves (as nginx does) within the header timeout and the grace period.
        const bool between_requests = served > 0 && s.buffer.size() == 0;
        conn.set_idle(between_requests);
        if (conn.draining() && between_requests && !conn.has_pending_input()) co_return;
        conn.expires_after(s.buffer.size() == 0 ? limits.idle_timeout : limits.header_timeout);
        if (s.buffer.size() == 0) {
            // Beast's read completes only once its parser consumes bytes, i.e. a whole header, so
            // the first bytes of a request are read here: they end the idle wait and start the
            // header timeout (slowloris).
            const net::mutable_buffer space = s.buffer.prepare(first_read_bytes);
            // On a fresh connection the request is usually there already (TCP_DEFER_ACCEPT): read
            // without making the descriptor an Asio socket (see connection::try_read).
            error_code ec;
            std::size_t n = conn.try_read(space, ec);
            if (ec == net::error::would_block)
                std::tie(ec, n) = co_await conn.socket().async_read_some(space, use_tuple);
            if (ec || n == 0)
                co_return;  // closed, or idle past the keep-alive timeout, between requests: normal
            s.buffer.commit(n);
            conn.received_first_bytes();
            conn.set_idle(false);
            conn.expires_after(limits.header_timeout);
        }
        while (!parser.is_header_done()) {
            error_code ec = co_await read_and_parse(s, parser);
            if (!ec) continue;
            if (conn.timed_out()) {
                co_await reject(s, 408, "request header timed out");
                co_await conn.linger_close();
                co_return;
            }
            if (ec == http::error::end_of_stream || ec == net::error::eof ||
                ec == net::error::connection_reset || ec == net::error::operation_aborted ||
                ec == net::error::bad_descriptor)
                co_return;  // the client went away mid-header
            // Named, not temporaries inside the co_await: g++ 12 destroys temporaries of a `?:`
            // in a co_await expression twice (munmap_chunk crash seen in the bad-input tests).
            const int status = parser.status(ec);
            const std::string detail = parser.reason(ec);
            co_await reject(s, status, detail);
            // The rest of the request may still be on its way: closing now would reset the
            // connection and could destroy the answer before the client reads it.
            co_await conn.linger_close();
            co_return;
        }
        conn.set_idle(false);
        begin_request(s.req, conn.trusted_peer());

        http_body body(s, parser);
        if (!parser.is_done() || !parser.body_piece().empty()) s.req.body = &body;
        const bool head_request = s.req.method == "HEAD";
        bool keep_alive = parser.keep_alive() && !conn.draining() &&
                          (limits.max_requests_per_connection == 0 ||
                           served + 1 < limits.max_requests_per_connection);

        response res;
        try {
            res = co_await conn.app()(s.req);
        } catch (...) {
            res = make_error_response(std::current_exception(), s.req);
        }

        // A body the handler did not read must be consumed before the next request can be parsed; a
        // large one, or one whose 100-continue was never sent (the client may not send it), ends
        // the connection instead.
        if (!parser.is_done()) {
            if (body.failed() || (parser.expects_continue() && !body.continue_sent())) {
                keep_alive = false;
            } else if (keep_alive) {
                std::uint64_t drained = 0;
                try {
                    while (!parser.is_done() && drained < 1024 * 1024) {
                        auto piece = co_await body.read_some();
                        drained += piece.size();
                    }
                } catch (...) {
                    keep_alive = false;
                }
                if (!parser.is_done()) keep_alive = false;
            }
        }
        if (conn.draining()) keep_alive = false;

        detail::response_framing framing;
        framing.version = s.req.version;
        framing.keep_alive = keep_alive;
        framing.head_request = head_request;
        framing.req = &s.req;
        framing.chunked_allowed = s.req.version == 11;
        detail::send_result sent;
        try {
            sent = co_await detail::send_response(s.out, res, framing, s.head);
        } catch (const std::exception&) {
            request_done(s.req, {res.status, 0, true});
            co_return;  // the client went away mid-response
        }
        request_done(s.req, {res.status, sent.body_bytes, sent.aborted});
        if (sent.aborted || !sent.keep_alive) {
            if (!parser.is_done() && !sent.aborted) {
                // The body is still arriving (refused, failed or too large to drain).
                co_await conn.linger_close();
                co_return;
            }
            co_return;  // the server's close() sends the FIN
        }
    }
}

}  // namespace

protocol http() { return protocol{"http", serve_http}; }

}  // namespace corgi::protocols
