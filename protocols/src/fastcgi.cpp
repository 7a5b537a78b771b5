// FastCGI as nginx's fastcgi_pass speaks it: the responder role, one request at a time per
// connection, FCGI_KEEP_CONN honoured (several requests per connection), the response in STDOUT
// records ended by END_REQUEST. The record reader is pure (fastcgi_parser.hpp); the session below
// only moves bytes.
#include "cgi_vars.hpp"
#include "fastcgi_parser.hpp"
#include "response_writer.hpp"

#include <corgi/core/completion.hpp>
#include <corgi/core/http_error.hpp>
#include <corgi/core/log.hpp>
#include <corgi/protocols/protocols.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <cstring>

namespace corgi::protocols {

namespace {

namespace fcgi = detail::fastcgi;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::string peer_of(const connection& conn) {
    if (conn.remote_addr().empty()) return "a unix socket peer";
    return conn.remote_addr() + ":" + std::to_string(conn.remote_port());
}

// Response bytes as STDOUT records. Small responses are gathered with the END_REQUEST that follows
// them so that a whole answer is one write; streamed pieces go out as they come.
class fcgi_output final : public detail::output {
  public:
    explicit fcgi_output(connection& conn) : conn_(conn) {}

    void start(std::uint16_t request_id, bool defer) noexcept {
        id_ = request_id;
        defer_ = defer;
        pending_.clear();
    }

    task<void> write(std::span<const net::const_buffer> buffers) override {
        std::size_t total = 0;
        for (const auto& b : buffers) total += b.size();
        if (total == 0) co_return;
        if (defer_ &&
            pending_.size() + total + 8 * (buffers.size() + total / fcgi::max_content + 1) <=
                defer_bytes) {
            for (const auto& b : buffers) append_stdout(pending_, b);
            co_return;
        }
        // Gathered: what was deferred, then one record header before each (at most 65535-byte)
        // piece.
        headers_.clear();
        for (const auto& b : buffers)
            headers_.resize(headers_.size() + b.size() / fcgi::max_content + 1);
        bufs_.clear();
        if (!pending_.empty()) bufs_.push_back(net::buffer(pending_));
        std::size_t h = 0;
        for (const auto& b : buffers) {
            auto* p = static_cast<const char*>(b.data());
            std::size_t left = b.size();
            while (left > 0) {
                auto n = std::min(left, fcgi::max_content);
                fcgi::write_header(headers_[h].data(), fcgi::stdout_record, id_,
                                   static_cast<std::uint16_t>(n));
                bufs_.push_back(net::buffer(headers_[h++].data(), fcgi::header_size));
                bufs_.push_back(net::buffer(p, n));
                p += n;
                left -= n;
            }
        }
        co_await send(bufs_);
        pending_.clear();
    }

    // The end of the STDOUT stream and END_REQUEST, with whatever was deferred.
    task<void> finish(std::uint8_t status = fcgi::request_complete) {
        if (status == fcgi::request_complete)
            fcgi::append_record(pending_, fcgi::stdout_record, id_, {});
        fcgi::append_end_request(pending_, id_, 0, status);
        std::array<net::const_buffer, 1> b{net::buffer(pending_)};
        co_await send(b);
        pending_.clear();
    }

    // What was deferred, without ending the stream: a truncated response still reaches the web
    // server before the connection closes.
    task<void> flush() {
        if (pending_.empty()) co_return;
        std::array<net::const_buffer, 1> b{net::buffer(pending_)};
        co_await send(b);
        pending_.clear();
    }

    // Management replies the reader produced (GET_VALUES_RESULT, refusals).
    task<void> send_raw(std::string& bytes) {
        std::array<net::const_buffer, 1> b{net::buffer(bytes)};
        co_await send(b);
        bytes.clear();
    }

  private:
    static constexpr std::size_t defer_bytes = 64 * 1024;

    void append_stdout(std::string& out, net::const_buffer b) {
        auto* p = static_cast<const char*>(b.data());
        std::size_t left = b.size();
        while (left > 0) {
            auto n = std::min(left, fcgi::max_content);
            char h[fcgi::header_size];
            fcgi::write_header(h, fcgi::stdout_record, id_, static_cast<std::uint16_t>(n));
            out.append(h, fcgi::header_size);
            out.append(p, n);
            p += n;
            left -= n;
        }
    }

    task<void> send(std::span<const net::const_buffer> buffers) {
        conn_.expires_after(conn_.limits().write_timeout);
        auto [ec, n] = co_await net::async_write(conn_.socket(), buffers, use_tuple);
        if (ec) throw boost::system::system_error(ec);
    }

    connection& conn_;
    std::uint16_t id_ = 0;
    bool defer_ = false;
    std::string pending_;
    std::vector<std::array<char, fcgi::header_size>> headers_;
    std::vector<net::const_buffer> bufs_;
};

// The state of one FastCGI connection, kept across the requests of a kept-alive connection.
struct fcgi_session {
    connection& conn;
    fcgi::reader reader;
    fcgi_output out;
    request req;
    detail::cgi_request_builder builder;
    std::string head;
    bool aborted = false;  // the web server sent ABORT_REQUEST for the current request
    bool broken = false;   // the connection cannot go on (error, peer gone, timeout)
    // More STDIN than CONTENT_LENGTH: the surplus never reaches the handler, and the connection
    // closes after the response instead of reading an unbounded surplus to find the next request.
    bool excess = false;

    explicit fcgi_session(connection& c)
        : conn(c),
          reader(c.limits().max_header_bytes,
                 {c.limits().max_connections, c.limits().max_connections}),
          out(c) {}

    // The next event of the reader, reading as needed until `deadline`; management replies are
    // written first. need_more comes back only when the connection ended (EOF, timeout, error):
    // `broken` is then set. A deadline for the whole wait, not a timeout per read: a peer that
    // trickles records (of another request id, or one byte at a time) cannot hold the connection
    // past it.
    task<fcgi::reader::event> next(std::chrono::steady_clock::time_point deadline) {
        for (;;) {
            auto e = reader.next();
            if (!reader.replies().empty()) {
                try {
                    co_await out.send_raw(reader.replies());
                } catch (const std::exception&) {
                    broken = true;
                    co_return fcgi::reader::event{};
                }
            }
            if (e.kind == fcgi::reader::event_kind::error) {
                log::warning(std::string("fastcgi: ") + e.error + " from " + peer_of(conn) +
                             "; connection closed");
                broken = true;
                co_return e;
            }
            if (e.kind != fcgi::reader::event_kind::need_more) co_return e;
            conn.expires_after(std::max(deadline - std::chrono::steady_clock::now(),
                                        std::chrono::steady_clock::duration::zero()));
            auto space = reader.writable();
            auto [ec, n] = co_await conn.socket().async_read_some(
                net::buffer(space.data(), space.size()), use_tuple);
            if (ec) {
                broken = true;
                if (reader.in_request() || reader.buffered() != 0)
                    log::warning(
                        std::string("fastcgi: ") +
                        (conn.timed_out() ? "request timed out" : "connection closed mid-request") +
                        " from " + peer_of(conn));
                co_return fcgi::reader::event{};
            }
            reader.commit(n);
            conn.received_first_bytes();
        }
    }
};

// The body: STDIN records of the current request until the empty one, holding CONTENT_LENGTH
// bytes. The handler gets exactly those: a surplus is cut off (as uwsgi and SCGI do, where bytes
// past CONTENT_LENGTH are not the body), and STDIN ending early fails the read, as a body cut
// short does over the other protocols.
class fcgi_body final : public body_source {
  public:
    explicit fcgi_body(fcgi_session& s) : s_(s) {}

    void reset(std::uint64_t expected) noexcept {
        received_ = 0;
        expected_ = expected;
        truncated_ = false;
    }

    task<std::string_view> read_some() override {
        using kind = fcgi::reader::event_kind;
        for (;;) {
            if (truncated_) throw bad_request("the web server ended STDIN before CONTENT_LENGTH");
            if (received_ == expected_) co_return std::string_view();
            if (s_.broken || s_.aborted || s_.reader.body_complete())
                throw bad_request("request body unavailable: the web server went away");
            auto e = co_await s_.next(deadline());
            switch (e.kind) {
                case kind::stdin_data: {
                    std::string_view piece = e.data;
                    if (piece.size() > expected_ - received_) {
                        piece = piece.substr(0, static_cast<std::size_t>(expected_ - received_));
                        note_excess();
                    }
                    received_ += piece.size();
                    co_return piece;
                }
                case kind::stdin_end:
                    truncated_ = true;  // received_ < expected_ here
                    break;
                case kind::abort_request:
                    s_.aborted = true;
                    break;
                case kind::need_more:
                    if (s_.conn.timed_out()) throw http_error(408, "request body timed out");
                    break;
                default:  // error (already logged), or nothing that can happen mid-body
                    s_.broken = true;
                    break;
            }
        }
    }

    // After the handler: reads and drops what it left of STDIN, so that neither side waits on
    // the other and a kept connection's next request starts clean. Stops at a surplus.
    task<void> drain() {
        using kind = fcgi::reader::event_kind;
        while (!s_.reader.body_complete() && !s_.broken && !s_.aborted && !s_.excess) {
            auto e = co_await s_.next(deadline());
            switch (e.kind) {
                case kind::stdin_data:
                    if (e.data.size() > expected_ - received_)
                        note_excess();
                    else
                        received_ += e.data.size();
                    break;
                case kind::stdin_end:
                    break;
                case kind::abort_request:
                    s_.aborted = true;
                    break;
                case kind::need_more:
                    break;  // the connection ended: `broken` is set
                default:
                    s_.broken = true;
                    break;
            }
        }
    }

  private:
    // The body timeout applies to each wait for more of the body.
    std::chrono::steady_clock::time_point deadline() const {
        return std::chrono::steady_clock::now() + s_.conn.limits().body_timeout;
    }

    void note_excess() {
        if (!s_.excess)
            log::warning("fastcgi: STDIN longer than CONTENT_LENGTH from " + peer_of(s_.conn) +
                         "; the surplus is dropped and the connection closed after the response");
        s_.excess = true;
    }

    fcgi_session& s_;
    std::uint64_t expected_ = 0;
    bool truncated_ = false;
};

task<void> serve_fastcgi(connection& conn) {
    using kind = fcgi::reader::event_kind;
    fcgi_session s(conn);
    fcgi_body body(s);
    const server_limits& limits = conn.limits();

    using clock = std::chrono::steady_clock;
    for (std::size_t served = 0;; ++served) {
        // Between requests: idle (a graceful shutdown may close us) until a BEGIN_REQUEST arrives.
        // The first request's head is due within the header timeout of the accept, a later one's
        // BEGIN_REQUEST within the idle timeout and its PARAMS within the header timeout after it.
        // A fresh connection is not idle: the proxy writes its first request as it connects, and
        // a draining server still serves it.
        conn.set_idle(served > 0);
        if (served > 0 && conn.draining() && s.reader.buffered() == 0 && !conn.has_pending_input())
            co_return;
        const clock::time_point wait_deadline =
            clock::now() + (served == 0 ? limits.header_timeout : limits.idle_timeout);
        auto e = co_await s.next(wait_deadline);
        if (s.broken) co_return;
        if (e.kind == kind::refused) {
            if (!e.keep_conn) co_return;
            continue;
        }
        if (e.kind != kind::begin_request) {
            log::warning("fastcgi: unexpected record before BEGIN_REQUEST from " + peer_of(conn));
            co_return;
        }
        conn.set_idle(false);
        const std::uint16_t id = e.request_id;
        bool keep_conn = e.keep_conn;
        s.aborted = false;
        s.excess = false;
        body.reset(0);

        // PARAMS, under the header timeout.
        const clock::time_point params_deadline =
            served == 0 ? wait_deadline : clock::now() + limits.header_timeout;
        do {
            e = co_await s.next(params_deadline);
            if (s.broken) co_return;
        } while (e.kind != kind::params_complete && e.kind != kind::abort_request);
        if (e.kind == kind::abort_request) {
            s.reader.finish_request();
            try {
                s.out.start(id, true);
                co_await s.out.finish();
            } catch (const std::exception&) {
                co_return;
            }
            if (!keep_conn) co_return;
            continue;
        }

        s.builder.begin(s.req, "fastcgi");
        if (const char* bad =
                fcgi::for_each_pair(e.data, [&](auto k, auto v) { s.builder.add(k, v); })) {
            log::warning(std::string("fastcgi: ") + bad + " from " + peer_of(conn) +
                         "; connection closed");
            co_return;
        }
        response res;
        bool body_unread = false;
        const char* problem = s.builder.finish();
        begin_request(s.req, conn.trusted_peer());
        if (problem) {
            log::warning(std::string("fastcgi: bad request from ") + peer_of(conn) + ": " +
                         problem);
            res = response::error(400, problem);
        } else if (s.req.content_length && *s.req.content_length > limits.max_body_bytes) {
            res = response::error(413);
            keep_conn = false;  // the body is not read: the connection cannot be reused
            body_unread = true;
        } else {
            body.reset(s.req.content_length.value_or(0));
            if (s.req.content_length.value_or(0) > 0) s.req.body = &body;
            try {
                res = co_await conn.app()(s.req);
            } catch (...) {
                res = make_error_response(std::current_exception(), s.req);
            }
            // The web server writes the whole request before it reads the answer.
            co_await body.drain();
            if (s.broken) co_return;
            if (s.excess) keep_conn = false;
        }
        if (s.req.method.empty()) s.req.method = "-";

        if (s.aborted) {
            // The client is gone: no response, only the end of the request.
            s.reader.finish_request();
            request_done(s.req, {499, 0, true});
            try {
                s.out.start(id, true);
                co_await s.out.finish();
            } catch (const std::exception&) {
                co_return;
            }
        } else {
            detail::response_framing framing;
            framing.style = detail::head_style::cgi;
            framing.version = s.req.version == 10 ? 10 : 11;
            framing.keep_alive =
                true;  // records frame the body: the response head says nothing about it
            framing.head_request = s.req.method == "HEAD";
            framing.req = &s.req;
            framing.chunked_allowed = false;
            framing.length_needed_for_keep_alive = false;
            s.out.start(id, !std::holds_alternative<body_producer>(res.body));
            detail::send_result sent;
            try {
                sent = co_await detail::send_response(s.out, res, framing, s.head);
                if (sent.aborted) {
                    // The body ended short (a producer failed, a file shrank, fewer bytes than the
                    // Content-Length): no END_REQUEST, so the web server sees a truncated
                    // response.
                    co_await s.out.flush();
                    request_done(s.req, {res.status, sent.body_bytes, true});
                    co_return;
                }
                co_await s.out.finish();
            } catch (const std::exception&) {
                request_done(s.req, {res.status, 0, true});
                co_return;
            }
            // A response the writer had to cut to its Content-Length ends the connection too, as
            // on every protocol.
            if (!sent.keep_alive) keep_conn = false;
            request_done(s.req, {res.status, sent.body_bytes, false});
            s.reader.finish_request();
        }
        if (!keep_conn || conn.draining() || s.broken ||
            (limits.max_requests_per_connection != 0 &&
             served + 1 >= limits.max_requests_per_connection)) {
            // The web server may still be writing the refused body: read and drop it, or the
            // close would reset the connection under the answer.
            if (body_unread) {
                co_await conn.linger_close();
                co_return;
            }
            co_return;  // the server's close() sends the FIN
        }
    }
}

}  // namespace

protocol fastcgi() { return protocol{"fastcgi", serve_fastcgi}; }

}  // namespace corgi::protocols
