// HTTP/1.1 (and 1.0) sessions: Beast's request parser feeding a reused corgi::request directly,
// keep-alive, pipelining (requests answered in order), chunked bodies both ways, Expect:
// 100-continue, limits and timeouts.
#include "response_writer.hpp"

#include <corgi/core/http_error.hpp>
#include <corgi/core/log.hpp>
#include <corgi/protocols/protocols.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>

#include <stdexcept>

namespace corgi::protocols {

namespace {

namespace http = boost::beast::http;
using boost::beast::error_code;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
// The first read of a request: enough for a typical header, and the flat buffer keeps its capacity.
constexpr std::size_t first_read_bytes = 16 * 1024;

// Parses straight into corgi::request: no intermediate Beast fields object, and the request's
// strings keep their capacity from one request to the next.
class request_parser final : public http::basic_parser<true> {
  public:
    explicit request_parser(request& req) : req_(req) {}

    int reject_status() const noexcept { return reject_status_; }
    bool expects_continue() const noexcept { return expect_continue_; }
    bool has_host() const noexcept { return has_host_; }
    // Body bytes parsed since the last take_body().
    std::string& body_piece() noexcept { return body_; }

  private:
    void on_request_impl(http::verb, boost::beast::string_view method,
                         boost::beast::string_view target, int version, error_code& ec) override {
        if (version != 10 && version != 11) {
            reject_status_ = 505;
            ec = http::error::bad_version;
            return;
        }
        req_.method.assign(method.data(), method.size());
        req_.target.assign(target.data(), target.size());
        req_.version = version;
        std::string_view t(target.data(), target.size());
        auto q = t.find('?');
        std::string_view raw_path = t.substr(0, q);
        req_.query_string.assign(q == std::string_view::npos ? std::string_view()
                                                             : t.substr(q + 1));
        if (raw_path.starts_with("http://") || raw_path.starts_with("https://")) {
            // absolute-form (RFC 9112 3.2.2): the path starts after the authority
            auto slash = raw_path.find('/', raw_path.find("//") + 2);
            raw_path =
                slash == std::string_view::npos ? std::string_view("/") : raw_path.substr(slash);
        } else if (raw_path.empty() ||
                   (raw_path[0] != '/' && !(raw_path == "*" && method == "OPTIONS"))) {
            reject_status_ = 400;
            ec = http::error::bad_target;
            return;
        }
        percent_decode_into(raw_path, req_.path);
        req_.path_info.assign(req_.path);
    }

    void on_response_impl(int, boost::beast::string_view, int, error_code&) override {}

    void on_field_impl(http::field f, boost::beast::string_view name,
                       boost::beast::string_view value, error_code& ec) override {
        std::string_view v(value.data(), value.size());
        if (f == http::field::transfer_encoding) {
            // Only chunked is understood; anything else would make us misread where the body ends.
            std::string_view t = v;
            while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
            while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
            if (!iequals(t, "chunked")) {
                reject_status_ = 501;
                ec = http::error::bad_transfer_encoding;
                return;
            }
        } else if (f == http::field::expect) {
            if (iequals(v, "100-continue")) expect_continue_ = true;
        } else if (f == http::field::host) {
            if (has_host_) {  // two Host fields: ambiguous authority (RFC 9112 3.2)
                reject_status_ = 400;
                ec = http::error::bad_value;
                return;
            }
            has_host_ = true;
        }
        req_.headers.add(std::string_view(name.data(), name.size()), v);
    }

    void on_header_impl(error_code& ec) override {
        if (req_.version == 11 && !has_host_) {
            reject_status_ = 400;
            ec = http::error::bad_value;
            return;
        }
        // Known once the header is parsed; on_body_init only comes with the first body byte, which
        // with eager parsing may arrive after the handler started.
        if (auto length = this->content_length()) req_.content_length = *length;
        req_.chunked = this->chunked();
    }

    void on_body_init_impl(boost::optional<std::uint64_t> const& length, error_code&) override {
        if (length) req_.content_length = *length;
        req_.chunked = this->chunked();
    }

    std::size_t on_body_impl(boost::beast::string_view body, error_code&) override {
        body_.append(body.data(), body.size());
        return body.size();
    }

    void on_chunk_header_impl(std::uint64_t, boost::beast::string_view, error_code&) override {}

    std::size_t on_chunk_body_impl(std::uint64_t, boost::beast::string_view body,
                                   error_code&) override {
        body_.append(body.data(), body.size());
        return body.size();
    }

    void on_finish_impl(error_code&) override {}

    request& req_;
    std::string body_;
    int reject_status_ = 0;
    bool expect_continue_ = false;
    bool has_host_ = false;
};

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

// The request body as the handler reads it: pieces straight out of the parser.
class http_body final : public body_source {
  public:
    http_body(http_session& s, request_parser& p) : s_(s), parser_(p) {}

    task<std::string_view> read_some() override {
        std::string& piece = parser_.body_piece();
        // Body bytes that arrived with the header were parsed with it (eager parsing): they come
        // first.
        if (!started_) {
            started_ = true;
            if (!piece.empty()) co_return std::string_view(piece);
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
            auto [ec, n] =
                co_await http::async_read_some(s_.conn.socket(), s_.buffer, parser_, use_tuple);
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
                throw bad_request("malformed request body: " + ec.message());
            }
        }
        co_return std::string_view(piece);
    }

    bool failed() const noexcept { return failed_; }
    bool continue_sent() const noexcept { return continue_sent_; }

  private:
    http_session& s_;
    request_parser& parser_;
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
    try {
        auto sent = co_await detail::send_response(s.conn, s.out, res, framing, s.head);
        log::access(s.req, status, sent.body_bytes);
    } catch (const std::exception&) {
        // The client is gone; nothing more to tell it.
    }
}

int status_for(const error_code& ec) {
    if (ec == http::error::header_limit) return 431;
    if (ec == http::error::body_limit) return 413;
    return 400;
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
        request_parser parser(s.req);
        parser.eager(true);
        parser.header_limit(
            static_cast<std::uint32_t>(std::min<std::size_t>(limits.max_header_bytes, UINT32_MAX)));
        parser.body_limit(limits.max_body_bytes);

        // The header: idle timeout until its first byte, then the header timeout for all of it
        // (slowloris).
        conn.set_idle(s.buffer.size() == 0);
        if (conn.draining() && s.buffer.size() == 0) co_return;
        conn.expires_after(s.buffer.size() == 0 ? limits.idle_timeout : limits.header_timeout);
        if (s.buffer.size() == 0) {
            // Beast's read completes only once its parser consumes bytes, i.e. a whole header, so
            // the first bytes of a request are read here: they end the idle wait and start the
            // header timeout (slowloris).
            auto [ec, n] = co_await conn.socket().async_read_some(
                s.buffer.prepare(first_read_bytes), use_tuple);
            if (ec || n == 0)
                co_return;  // closed, or idle past the keep-alive timeout, between requests: normal
            s.buffer.commit(n);
            conn.set_idle(false);
            conn.expires_after(limits.header_timeout);
        }
        while (!parser.is_header_done()) {
            auto [ec, n] =
                co_await http::async_read_some(conn.socket(), s.buffer, parser, use_tuple);
            if (!ec) continue;
            if (conn.timed_out()) {
                co_await reject(s, 408, "request header timed out");
                co_return;
            }
            if (ec == http::error::end_of_stream || ec == net::error::eof ||
                ec == net::error::connection_reset || ec == net::error::operation_aborted ||
                ec == net::error::bad_descriptor)
                co_return;  // the client went away mid-header
            int status = parser.reject_status() ? parser.reject_status() : status_for(ec);
            // Named, not a temporary inside the co_await: g++ 12 destroys temporaries of a `?:` in
            // a co_await expression twice (munmap_chunk crash seen in the bad-input tests).
            const std::string detail =
                status == 501 ? std::string("unsupported Transfer-Encoding") : ec.message();
            co_await reject(s, status, detail);
            co_return;
        }
        conn.set_idle(false);

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
            sent = co_await detail::send_response(conn, s.out, res, framing, s.head);
        } catch (const std::exception&) {
            log::access(s.req, res.status, 0);
            co_return;  // the client went away mid-response
        }
        log::access(s.req, res.status, sent.body_bytes);
        if (sent.aborted || !sent.keep_alive) {
            boost::system::error_code ignored;
            conn.socket().shutdown(net::socket_base::shutdown_send, ignored);
            co_return;
        }
    }
}

}  // namespace

protocol http() { return protocol{"http", serve_http}; }

}  // namespace corgi::protocols
