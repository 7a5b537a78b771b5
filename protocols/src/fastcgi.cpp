// FastCGI as nginx's fastcgi_pass speaks it: the responder role, one request at a time per connection,
// FCGI_KEEP_CONN honoured (several requests per connection), the response in STDOUT records ended by
// END_REQUEST. The record reader is pure (fastcgi_parser.hpp); the session below only moves bytes.
#include "cgi_vars.hpp"
#include "fastcgi_parser.hpp"
#include "response_writer.hpp"

#include <corgi/core/http_error.hpp>
#include <corgi/core/log.hpp>
#include <corgi/protocols/protocols.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <cstring>

namespace corgi::protocols {

namespace detail::fastcgi {

void write_header(char* out, std::uint8_t type, std::uint16_t request_id, std::uint16_t content_length,
                  std::uint8_t padding_length) noexcept {
    out[0] = char(version_1);
    out[1] = char(type);
    out[2] = char(request_id >> 8);
    out[3] = char(request_id & 0xff);
    out[4] = char(content_length >> 8);
    out[5] = char(content_length & 0xff);
    out[6] = char(padding_length);
    out[7] = 0;
}

void append_record(std::string& out, std::uint8_t type, std::uint16_t request_id, std::string_view content) {
    auto length = static_cast<std::uint16_t>(std::min(content.size(), max_content));
    auto padding = static_cast<std::uint8_t>((8 - length % 8) % 8);
    char h[header_size];
    write_header(h, type, request_id, length, padding);
    out.append(h, header_size);
    out.append(content.substr(0, length));
    out.append(padding, '\0');
}

void append_end_request(std::string& out, std::uint16_t request_id, std::uint32_t app_status,
                        std::uint8_t status) {
    char body[8] = {char(app_status >> 24), char((app_status >> 16) & 0xff), char((app_status >> 8) & 0xff),
                    char(app_status & 0xff),  char(status), 0, 0, 0};
    append_record(out, end_request, request_id, std::string_view(body, sizeof body));
}

void append_pair(std::string& out, std::string_view name, std::string_view value) {
    auto put_length = [&](std::size_t n) {
        if (n < 0x80) {
            out.push_back(char(n));
        } else {
            out.push_back(char(((n >> 24) & 0x7f) | 0x80));
            out.push_back(char((n >> 16) & 0xff));
            out.push_back(char((n >> 8) & 0xff));
            out.push_back(char(n & 0xff));
        }
    };
    put_length(name.size());
    put_length(value.size());
    out.append(name);
    out.append(value);
}

reader::reader(std::size_t max_params_bytes, server_values values, std::size_t buffer_bytes)
    : max_params_(max_params_bytes), values_(values), in_(std::max<std::size_t>(buffer_bytes, 64)) {}

std::span<char> reader::writable() {
    if (begin_ == end_) {
        begin_ = end_ = 0;
    } else if (begin_ > 0 && in_.size() - end_ < in_.size() / 2) {
        std::memmove(in_.data(), in_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
    }
    return {in_.data() + end_, in_.size() - end_};
}

void reader::feed(std::string_view bytes) {
    while (!bytes.empty()) {
        auto space = writable();
        if (space.empty()) {
            in_.resize(in_.size() * 2);
            continue;
        }
        std::size_t n = std::min(space.size(), bytes.size());
        std::memcpy(space.data(), bytes.data(), n);
        commit(n);
        bytes.remove_prefix(n);
    }
}

void reader::finish_request() noexcept {
    phase_ = phase::idle;
    params_.clear();
}

reader::event reader::fail(const char* why) noexcept {
    failed_ = true;
    failure_ = why;
    event e;
    e.kind = event_kind::error;
    e.error = why;
    return e;
}

// Decides where the record's content goes; refuses what can never be valid.
reader::event reader::on_header() {
    const bool ours = phase_ != phase::idle && id_ == request_id_;
    sink_ = sink::skip;
    switch (type_) {
        case begin_request:
            if (content_left_ != 8) return fail("BEGIN_REQUEST record of the wrong size");
            sink_ = sink::small;
            break;
        case abort_request:
            break;
        case params:
            if (ours) {
                if (phase_ != phase::params) return fail("PARAMS record after the end of PARAMS");
                sink_ = sink::params;
            }
            break;
        case stdin_record:
            if (ours) {
                if (phase_ == phase::params) return fail("STDIN record before the end of PARAMS");
                if (phase_ == phase::done) return fail("STDIN record after the end of STDIN");
                sink_ = sink::body;
            }
            break;
        case get_values:
            if (id_ == 0) sink_ = sink::small;
            break;
        default:
            break;  // DATA (filter role), records a web server never sends, unknown types: content skipped
    }
    small_.clear();
    return {};
}

// The content of a record is complete (its padding may still follow).
reader::event reader::on_content_complete() {
    event e;
    switch (type_) {
        case begin_request: {
            if (id_ == 0) return fail("BEGIN_REQUEST with request id 0");
            auto role = static_cast<std::uint16_t>((static_cast<unsigned char>(small_[0]) << 8) |
                                                   static_cast<unsigned char>(small_[1]));
            bool keep = (static_cast<unsigned char>(small_[2]) & keep_conn_flag) != 0;
            if (phase_ != phase::idle) {
                if (id_ == request_id_) return fail("BEGIN_REQUEST for the request in progress");
                append_end_request(replies_, id_, 0, cant_mpx_conn);  // records of that id are then skipped
                return e;
            }
            if (role != responder) {
                append_end_request(replies_, id_, 0, unknown_role);
                e.kind = event_kind::refused;
                e.request_id = id_;
                e.keep_conn = keep;
                return e;
            }
            phase_ = phase::params;
            request_id_ = id_;
            keep_conn_ = keep;
            params_.clear();
            e.kind = event_kind::begin_request;
            e.request_id = id_;
            e.keep_conn = keep;
            return e;
        }
        case abort_request:
            if (phase_ != phase::idle && id_ == request_id_) {
                e.kind = event_kind::abort_request;
                e.request_id = id_;
            }
            return e;
        case params:
            if (sink_ == sink::params && record_length_ == 0) {
                phase_ = phase::body;
                e.kind = event_kind::params_complete;
                e.request_id = id_;
                e.data = params_;
            }
            return e;
        case stdin_record:
            if (sink_ == sink::body && record_length_ == 0) {
                phase_ = phase::done;
                e.kind = event_kind::stdin_end;
                e.request_id = id_;
            }
            return e;
        case get_values:
            if (id_ == 0) {
                std::string content;
                const char* bad = for_each_pair(small_, [&](std::string_view name, std::string_view) {
                    if (name == "FCGI_MAX_CONNS")
                        append_pair(content, name, std::to_string(values_.max_conns));
                    else if (name == "FCGI_MAX_REQS")
                        append_pair(content, name, std::to_string(values_.max_reqs));
                    else if (name == "FCGI_MPXS_CONNS")
                        append_pair(content, name, "0");
                });
                if (bad) return fail(bad);
                append_record(replies_, get_values_result, 0, content);
            }
            return e;
        default:
            // A management record of a type we do not know (the web servers' extension point) is answered
            // with UNKNOWN_TYPE; the types a web server sends are all handled above.
            if (id_ == 0 && type_ > unknown_type) {
                char body[8] = {char(type_), 0, 0, 0, 0, 0, 0, 0};
                append_record(replies_, unknown_type, 0, std::string_view(body, sizeof body));
            }
            return e;
    }
}

reader::event reader::next() {
    if (failed_) return fail(failure_);
    for (;;) {
        std::size_t avail = end_ - begin_;
        switch (state_) {
            case state::header: {
                if (avail < header_size) return {};
                const auto* h = reinterpret_cast<const unsigned char*>(in_.data() + begin_);
                begin_ += header_size;
                if (h[0] != version_1) return fail("unsupported FastCGI version");
                type_ = h[1];
                id_ = static_cast<std::uint16_t>((h[2] << 8) | h[3]);
                record_length_ = static_cast<std::size_t>((h[4] << 8) | h[5]);
                content_left_ = record_length_;
                padding_left_ = h[6];
                event e = on_header();
                if (e.kind != event_kind::need_more) return e;
                state_ = state::content;
                break;
            }
            case state::content: {
                if (content_left_ > 0) {
                    if (avail == 0) return {};
                    std::size_t n = std::min(avail, content_left_);
                    std::string_view piece(in_.data() + begin_, n);
                    begin_ += n;
                    content_left_ -= n;
                    switch (sink_) {
                        case sink::skip:
                            break;
                        case sink::small:
                            small_.append(piece);
                            break;
                        case sink::params:
                            if (params_.size() + n > max_params_)
                                return fail("FastCGI PARAMS larger than the header limit");
                            params_.append(piece);
                            break;
                        case sink::body: {
                            event e;
                            e.kind = event_kind::stdin_data;
                            e.request_id = id_;
                            e.data = piece;
                            return e;
                        }
                    }
                    break;
                }
                state_ = state::padding;
                event e = on_content_complete();
                if (e.kind != event_kind::need_more) return e;
                break;
            }
            case state::padding: {
                std::size_t n = std::min(avail, padding_left_);
                begin_ += n;
                padding_left_ -= n;
                if (padding_left_ > 0) return {};
                state_ = state::header;
                break;
            }
        }
    }
}

}  // namespace detail::fastcgi

namespace {

namespace fcgi = detail::fastcgi;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::string peer_of(const connection& conn) {
    if (conn.remote_addr().empty()) return "a unix socket peer";
    return conn.remote_addr() + ":" + std::to_string(conn.remote_port());
}

// Response bytes as STDOUT records. Small responses are gathered with the END_REQUEST that follows them so
// that a whole answer is one write; streamed pieces go out as they come.
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
        if (defer_ && pending_.size() + total + 8 * (buffers.size() + total / fcgi::max_content + 1) <= defer_bytes) {
            for (const auto& b : buffers) append_stdout(pending_, b);
            co_return;
        }
        // Gathered: what was deferred, then one record header before each (at most 65535-byte) piece.
        headers_.clear();
        for (const auto& b : buffers) headers_.resize(headers_.size() + b.size() / fcgi::max_content + 1);
        bufs_.clear();
        if (!pending_.empty()) bufs_.push_back(net::buffer(pending_));
        std::size_t h = 0;
        for (const auto& b : buffers) {
            auto* p = static_cast<const char*>(b.data());
            std::size_t left = b.size();
            while (left > 0) {
                auto n = std::min(left, fcgi::max_content);
                fcgi::write_header(headers_[h].data(), fcgi::stdout_record, id_, static_cast<std::uint16_t>(n));
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
        if (status == fcgi::request_complete) fcgi::append_record(pending_, fcgi::stdout_record, id_, {});
        fcgi::append_end_request(pending_, id_, 0, status);
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
    bool over_limit = false;  // the body passed max_body_bytes: answered 413, then the connection closes

    explicit fcgi_session(connection& c)
        : conn(c),
          reader(c.limits().max_header_bytes, {c.limits().max_connections, c.limits().max_connections}),
          out(c) {}

    // The next event of the reader, reading as needed under `timeout`; management replies are written first.
    // need_more comes back only when the connection ended (EOF, timeout, error): `broken` is then set.
    task<fcgi::reader::event> next(std::chrono::steady_clock::duration timeout) {
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
                log::warning(std::string("fastcgi: ") + e.error + " from " + peer_of(conn) + "; connection closed");
                broken = true;
                co_return e;
            }
            if (e.kind != fcgi::reader::event_kind::need_more) co_return e;
            conn.expires_after(timeout);
            auto space = reader.writable();
            auto [ec, n] = co_await conn.socket().async_read_some(net::buffer(space.data(), space.size()), use_tuple);
            if (ec) {
                broken = true;
                if (reader.in_request() || reader.buffered() != 0)
                    log::warning(std::string("fastcgi: ") +
                                 (conn.timed_out() ? "request timed out" : "connection closed mid-request") +
                                 " from " + peer_of(conn));
                co_return fcgi::reader::event{};
            }
            reader.commit(n);
        }
    }
};

// The body: STDIN records of the current request until the empty one.
class fcgi_body final : public body_source {
public:
    explicit fcgi_body(fcgi_session& s) : s_(s) {}

    task<std::string_view> read_some() override {
        using kind = fcgi::reader::event_kind;
        for (;;) {
            if (s_.over_limit) throw payload_too_large();
            if (s_.broken || s_.aborted) throw bad_request("request body unavailable: the web server went away");
            if (s_.reader.body_complete()) co_return std::string_view();
            auto e = co_await s_.next(s_.conn.limits().body_timeout);
            switch (e.kind) {
                case kind::stdin_data:
                    received_ += e.data.size();
                    if (received_ > s_.conn.limits().max_body_bytes) {
                        s_.over_limit = true;  // the rest is never read: the connection cannot go on
                        throw payload_too_large("request body exceeds " +
                                                std::to_string(s_.conn.limits().max_body_bytes) + " bytes");
                    }
                    co_return e.data;
                case kind::stdin_end:
                    co_return std::string_view();
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

    void reset() noexcept { received_ = 0; }

private:
    fcgi_session& s_;
    std::uint64_t received_ = 0;
};

task<void> serve_fastcgi(connection& conn) {
    using kind = fcgi::reader::event_kind;
    fcgi_session s(conn);
    fcgi_body body(s);
    const server_limits& limits = conn.limits();

    for (std::size_t served = 0;; ++served) {
        // Between requests: idle (a graceful shutdown may close us) until a BEGIN_REQUEST arrives.
        conn.set_idle(true);
        if (conn.draining() && s.reader.buffered() == 0) co_return;
        auto e = co_await s.next(served == 0 ? limits.header_timeout : limits.idle_timeout);
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
        s.over_limit = false;
        body.reset();

        // PARAMS, under the header timeout.
        do {
            e = co_await s.next(limits.header_timeout);
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
        if (const char* bad = fcgi::for_each_pair(e.data, [&](auto k, auto v) { s.builder.add(k, v); })) {
            log::warning(std::string("fastcgi: ") + bad + " from " + peer_of(conn) + "; connection closed");
            co_return;
        }
        response res;
        const char* problem = s.builder.finish();
        if (problem) {
            log::warning(std::string("fastcgi: bad request from ") + peer_of(conn) + ": " + problem);
            res = response::error(400, problem);
        } else if (s.req.content_length && *s.req.content_length > limits.max_body_bytes) {
            res = response::error(413);
            keep_conn = false;  // the body is not read: the connection cannot be reused
        } else {
            if (s.req.content_length.value_or(0) > 0) s.req.body = &body;
            try {
                res = co_await conn.app()(s.req);
            } catch (...) {
                res = make_error_response(std::current_exception(), s.req);
            }
            // The web server writes the whole request before it reads the answer: read and drop what the
            // handler left, so that neither side waits on the other and the next request starts clean.
            try {
                while (!s.reader.body_complete() && !s.broken && !s.aborted && !s.over_limit)
                    co_await body.read_some();
            } catch (const std::exception&) {
            }
            if (s.broken) co_return;
            if (s.over_limit) keep_conn = false;
        }
        if (s.req.method.empty()) s.req.method = "-";

        if (s.aborted) {
            // The client is gone: no response, only the end of the request.
            s.reader.finish_request();
            log::access(s.req, 499, 0);
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
            framing.keep_alive = true;  // records frame the body: the response head says nothing about it
            framing.head_request = s.req.method == "HEAD";
            framing.chunked_allowed = false;
            framing.length_needed_for_keep_alive = false;
            s.out.start(id, !std::holds_alternative<body_producer>(res.body));
            detail::send_result sent;
            try {
                sent = co_await detail::send_response(conn, s.out, res, framing, s.head);
                if (sent.aborted) {
                    // A streaming body failed: no END_REQUEST, so the web server sees a truncated response.
                    log::access(s.req, res.status, sent.body_bytes);
                    co_return;
                }
                co_await s.out.finish();
            } catch (const std::exception&) {
                log::access(s.req, res.status, 0);
                co_return;
            }
            log::access(s.req, res.status, sent.body_bytes);
            s.reader.finish_request();
        }
        if (!keep_conn || conn.draining() || s.broken ||
            (limits.max_requests_per_connection != 0 && served + 1 >= limits.max_requests_per_connection)) {
            boost::system::error_code ignored;
            conn.socket().shutdown(net::socket_base::shutdown_send, ignored);
            co_return;
        }
    }
}

}  // namespace

protocol fastcgi() { return protocol{"fastcgi", serve_fastcgi}; }

}  // namespace corgi::protocols
