// Sends a corgi::response: the head and the first body bytes in one gathered write, files by
// sendfile, streaming bodies chunked (HTTP/1.1), length-delimited (when the handler set
// Content-Length) or close-delimited.
#include "response_writer.hpp"

#include <corgi/core/http_error.hpp>
#include <corgi/core/log.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/write.hpp>

#include <sys/sendfile.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <ctime>
#include <vector>

namespace corgi::protocols::detail {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// "Date: Tue, 15 Nov 1994 08:12:31 GMT\r\n", formatted once a second per thread.
std::string_view date_line() {
    thread_local std::time_t cached = 0;
    thread_local char text[64];
    thread_local std::size_t length = 0;
    std::time_t now = std::time(nullptr);
    if (now != cached) {
        cached = now;
        std::tm tm{};
        ::gmtime_r(&now, &tm);
        length = std::strftime(text, sizeof text, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    }
    return {text, length};
}

void append_number(std::string& out, std::uint64_t n) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
    out.append(buf, end);
}

bool status_has_no_body(int status) {
    return (status >= 100 && status < 200) || status == 204 || status == 304;
}

// The Content-Length a handler set. `valid` is false when it is not one decimal number, or when
// several such headers disagree: then it is ignored (logged), never passed on.
struct declared_length {
    bool present = false;
    bool valid = false;
    std::uint64_t value = 0;
    std::string_view text;  // the first one, for the log
};

declared_length declared_length_of(const response& res) {
    declared_length d;
    for (const auto& [name, value] : res.headers) {
        if (!iequals(name, "Content-Length")) continue;
        std::uint64_t n = 0;
        const char* first = value.data();
        const char* last = first + value.size();
        auto [end, ec] = std::from_chars(first, last, n);
        const bool number = !value.empty() && ec == std::errc() && end == last;
        if (!d.present) {
            d.present = true;
            d.valid = number;
            d.value = n;
            d.text = value;
        } else if (!number || n != d.value) {
            d.valid = false;
        }
    }
    return d;
}

// One error line naming who broke the framing and for which request.
void log_framing_error(const response& res, const response_framing& framing,
                       std::string_view what) {
    std::string line = "response framing: ";
    line += res.origin.empty() ? std::string_view("handler") : res.origin;
    if (const request* req = framing.req) {
        line += " (";
        line += log::request_context(*req);
        line += ')';
    }
    line += ": ";
    line += what;
    if (framing.req)
        log::error(*framing.req, line);
    else
        log::error(line);
}

// The handler's Content-Length when valid, else nullopt (an invalid one logged: it is replaced by
// the real length, or by chunked framing for a stream).
std::optional<std::uint64_t> valid_length(const declared_length& declared, const response& res,
                                          const response_framing& framing) {
    if (declared.present && !declared.valid) {
        log_framing_error(res, framing,
                          "ignored an invalid Content-Length '" + std::string(declared.text) +
                              "' (or several that disagree)");
    }
    if (!declared.valid) return std::nullopt;
    return declared.value;
}

// Thrown into a producer that writes past the Content-Length its handler set: what it would add
// is dropped, and the producer stops.
struct body_overflow : std::runtime_error {
    body_overflow() : std::runtime_error("response body longer than its Content-Length") {}
};

// Writes a producer's chunks; the first write carries the head along.
class stream_writer final : public body_writer {
  public:
    stream_writer(output& out, std::string& head, bool chunked, bool discard,
                  std::optional<std::uint64_t> limit)
        : out_(out), head_(head), chunked_(chunked), discard_(discard), limit_(limit) {}

    task<void> write(std::string_view data) override {
        if (data.empty() || discard_) co_return;
        if (limit_ && data.size() > *limit_ - body_bytes_) {
            // Past the declared length: the bytes that fit go out, the rest would be read by the
            // peer as the start of the next response (a desync), so they are dropped.
            overflowed_ = true;
            data = data.substr(0, static_cast<std::size_t>(*limit_ - body_bytes_));
            if (!data.empty()) {
                co_await write_piece(data);
            }
            throw body_overflow();
        }
        co_await write_piece(data);
    }

    // The end of the body: the head if nothing was written yet, and the last chunk.
    task<void> finish() {
        std::array<net::const_buffer, 2> bufs;
        std::size_t n = 0;
        if (!head_sent_) bufs[n++] = net::buffer(head_);
        if (chunked_ && !discard_) bufs[n++] = net::buffer("0\r\n\r\n", 5);
        if (n) co_await send(std::span(bufs.data(), n));
    }

    bool head_sent() const noexcept { return head_sent_; }
    bool write_failed() const noexcept { return write_failed_; }
    bool overflowed() const noexcept { return overflowed_; }
    std::uint64_t body_bytes() const noexcept { return body_bytes_; }

  private:
    task<void> write_piece(std::string_view data) {
        std::array<net::const_buffer, 4> bufs;
        std::size_t n = 0;
        if (!head_sent_) bufs[n++] = net::buffer(head_);
        if (chunked_) {
            char hex[20];
            auto [end, ec] = std::to_chars(hex, hex + 16, data.size(), 16);
            std::size_t len = static_cast<std::size_t>(end - hex);
            hex[len++] = '\r';
            hex[len++] = '\n';
            bufs[n++] = net::buffer(hex, len);
            bufs[n++] = net::buffer(data);
            bufs[n++] = net::buffer("\r\n", 2);
            co_await send(std::span(bufs.data(), n));
        } else {
            bufs[n++] = net::buffer(data);
            co_await send(std::span(bufs.data(), n));
        }
        body_bytes_ += data.size();
    }

    task<void> send(std::span<const net::const_buffer> bufs) {
        try {
            head_sent_ = true;
            co_await out_.write(bufs);
        } catch (...) {
            write_failed_ = true;
            throw;
        }
    }

    output& out_;
    std::string& head_;
    bool chunked_;
    bool discard_;
    std::optional<std::uint64_t> limit_;
    bool overflowed_ = false;
    bool head_sent_ = false;
    bool write_failed_ = false;
    std::uint64_t body_bytes_ = 0;
};

// Sends the head, then `length` bytes of the file from its offset: sendfile(2) straight from the
// page cache when the output is the socket, else pread + write. Returns the body bytes sent: fewer
// than `length` when the file shrank (or could not be read) meanwhile. Throws system_error when the
// peer is gone.
task<std::uint64_t> send_file(output& out, const file_range& file, std::uint64_t length,
                              std::string& head) {
    std::array<net::const_buffer, 1> head_buf{net::buffer(head)};
    co_await out.write(head_buf);
    std::uint64_t sent = 0;
    if (auto* sock = dynamic_cast<socket_output*>(&out)) {
        connection& conn = sock->conn();
        int fd = conn.socket().native_handle();
        off_t offset = static_cast<off_t>(file.offset);
        conn.socket().non_blocking(true);
        while (sent < length) {
            std::size_t want =
                static_cast<std::size_t>(std::min<std::uint64_t>(length - sent, 1 << 20));
            ssize_t n = ::sendfile(fd, file.file.get(), &offset, want);
            if (n > 0) {
                sent += static_cast<std::uint64_t>(n);
                continue;
            }
            if (n == 0) co_return sent;  // the end of the file came early: it shrank
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                conn.expires_after(conn.limits().write_timeout);
                auto [ec] =
                    co_await conn.socket().async_wait(net::socket_base::wait_write, use_tuple);
                if (ec) throw boost::system::system_error(ec);
                continue;
            }
            // The file cannot be read (any more): the body ends short, as when it shrank.
            if (errno == EIO || errno == EINVAL || errno == ENXIO) co_return sent;
            throw boost::system::system_error(errno, boost::system::system_category());
        }
        co_return sent;
    }
    std::string block(64 * 1024, '\0');
    while (sent < length) {
        std::size_t want =
            static_cast<std::size_t>(std::min<std::uint64_t>(length - sent, block.size()));
        ssize_t n =
            ::pread(file.file.get(), block.data(), want, static_cast<off_t>(file.offset + sent));
        if (n <= 0) co_return sent;  // shrank, or unreadable
        std::array<net::const_buffer, 1> b{net::buffer(block.data(), static_cast<std::size_t>(n))};
        co_await out.write(b);
        sent += static_cast<std::uint64_t>(n);
    }
    co_return sent;
}

}  // namespace

task<void> socket_output::write(std::span<const net::const_buffer> buffers) {
    // What the socket takes at once goes without an Asio socket (see connection::try_write): a
    // whole response, usually. The rest, if any, is written on the socket, waiting as needed.
    conn_.expires_after(conn_.limits().write_timeout);
    boost::system::error_code ec;
    std::size_t done = conn_.try_write(buffers, ec);
    if (ec && ec != net::error::would_block) throw boost::system::system_error(ec);
    std::size_t total = 0;
    for (const auto& b : buffers) total += b.size();
    if (done == total) co_return;
    std::vector<net::const_buffer> rest;
    for (const auto& b : buffers) {
        if (done >= b.size()) {
            done -= b.size();
            continue;
        }
        rest.push_back(b + done);
        done = 0;
    }
    auto [write_ec, n] = co_await net::async_write(conn_.socket(), rest, use_tuple);
    if (write_ec) throw boost::system::system_error(write_ec);
}

void append_head(std::string& out, const response& res, const response_framing& framing,
                 std::optional<std::uint64_t> body_length, bool chunked, bool keep_alive) {
    if (framing.style == head_style::http) {
        out += framing.version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    } else {
        out += "Status: ";
    }
    append_number(out, static_cast<std::uint64_t>(res.status));
    out += ' ';
    // A reason with CR or LF would split the head (response splitting): the standard phrase
    // instead.
    if (res.reason.empty() || res.reason.find_first_of("\r\n") != std::string::npos)
        out += reason_phrase(res.status);
    else
        out += res.reason;
    out += "\r\n";
    bool has_date = false, has_server = false, has_request_id = false;
    for (const auto& [name, value] : res.headers) {
        // Framing is ours to decide: a handler's Transfer-Encoding or Connection would contradict
        // it.
        if (iequals(name, "Transfer-Encoding") || iequals(name, "Connection") ||
            iequals(name, "Keep-Alive"))
            continue;
        // The length is ours too: send_response decides it (from the handler's, when valid).
        if (iequals(name, "Content-Length")) continue;
        has_date = has_date || iequals(name, "Date");
        has_server = has_server || iequals(name, "Server");
        has_request_id = has_request_id || iequals(name, "X-Request-Id");
        out += name;
        out += ": ";
        out += value;
        out += "\r\n";
    }
    if (framing.style == head_style::http) {
        if (!has_date) out += date_line();
        if (!has_server) out += "Server: corgi\r\n";
    }
    // The id the access log line carries, so a client's report can be matched to it.
    if (!has_request_id && framing.req && !framing.req->id().empty()) {
        out += "X-Request-Id: ";
        out += framing.req->id();
        out += "\r\n";
    }
    if (body_length && !status_has_no_body(res.status)) {
        out += "Content-Length: ";
        append_number(out, *body_length);
        out += "\r\n";
    }
    if (chunked) out += "Transfer-Encoding: chunked\r\n";
    if (framing.style == head_style::http) {
        if (!keep_alive && framing.version == 11) out += "Connection: close\r\n";
        if (keep_alive && framing.version == 10) out += "Connection: keep-alive\r\n";
    }
    out += "\r\n";
}

task<send_result> send_response(output& out, response& res, const response_framing& framing,
                                std::string& scratch) {
    send_result result;
    result.keep_alive = framing.keep_alive;
    scratch.clear();
    const bool no_body = status_has_no_body(res.status);
    // The handler's Content-Length is a promise about the body. The head carries it (never a second
    // one), and the body sent is made to keep it: cut when longer, the connection closed after the
    // response; when shorter, the connection is closed at once so that the peer sees the
    // truncation.
    const declared_length declared = no_body ? declared_length{} : declared_length_of(res);

    if (auto* text = std::get_if<std::string>(&res.body)) {
        std::string_view body = *text;
        std::optional<std::uint64_t> announced;
        if (!no_body) announced = valid_length(declared, res, framing).value_or(body.size());
        const bool with_body = !framing.head_request && !no_body && !body.empty();
        if (announced && with_body && *announced != body.size()) {
            result.keep_alive = false;
            if (*announced < body.size()) {
                log_framing_error(res, framing,
                                  "Content-Length " + std::to_string(*announced) +
                                      " but a body of " + std::to_string(body.size()) +
                                      " bytes: sent " + std::to_string(*announced) +
                                      ", dropped the rest, closing the connection");
                body = body.substr(0, static_cast<std::size_t>(*announced));
            } else {
                log_framing_error(res, framing,
                                  "Content-Length " + std::to_string(*announced) +
                                      " but a body of only " + std::to_string(body.size()) +
                                      " bytes: sent them and closed the connection");
                result.aborted = true;
            }
        } else if (announced && !with_body && !framing.head_request && *announced != 0) {
            // An empty body that promised bytes.
            log_framing_error(res, framing,
                              "Content-Length " + std::to_string(*announced) +
                                  " but an empty body: closed the connection");
            result.keep_alive = false;
            result.aborted = true;
        }
        append_head(scratch, res, framing, announced, false, result.keep_alive);
        std::array<net::const_buffer, 2> bufs{net::buffer(scratch), net::buffer(body)};
        co_await out.write(std::span(bufs.data(), with_body ? 2 : 1));
        result.body_bytes = with_body ? body.size() : 0;
        co_return result;
    }

    if (auto* file = std::get_if<file_range>(&res.body)) {
        const std::uint64_t announced =
            no_body ? file->length : valid_length(declared, res, framing).value_or(file->length);
        std::uint64_t to_send = std::min(announced, file->length);
        if (announced < file->length && !framing.head_request && !no_body) {
            log_framing_error(res, framing,
                              "Content-Length " + std::to_string(announced) + " but a file of " +
                                  std::to_string(file->length) + " bytes: sent " +
                                  std::to_string(announced) + ", closing the connection");
            result.keep_alive = false;
        }
        append_head(scratch, res, framing, announced, false, result.keep_alive);
        if (framing.head_request || no_body) {
            std::array<net::const_buffer, 1> head{net::buffer(scratch)};
            co_await out.write(head);
            co_return result;
        }
        result.body_bytes = co_await send_file(out, *file, to_send, scratch);
        if (result.body_bytes < announced) {
            log_framing_error(res, framing,
                              "Content-Length " + std::to_string(announced) +
                                  " but the file gave " + std::to_string(result.body_bytes) +
                                  " bytes (shorter than declared, or it shrank while being "
                                  "sent): closed the connection");
            result.keep_alive = false;
            result.aborted = true;
        }
        co_return result;
    }

    // A producer: length-delimited if the handler declared one, else chunked (HTTP/1.1) or
    // close-delimited.
    auto& producer = std::get<body_producer>(res.body);
    const std::optional<std::uint64_t> length = valid_length(declared, res, framing);
    bool chunked = !length && framing.chunked_allowed && !no_body;
    if (!length && !chunked && framing.length_needed_for_keep_alive) result.keep_alive = false;
    append_head(scratch, res, framing, length, chunked, result.keep_alive);
    bool discard = framing.head_request || no_body;
    stream_writer writer(out, scratch, chunked, discard, length);
    std::exception_ptr failure;
    if (!discard && producer) {
        try {
            co_await producer(writer);
        } catch (...) {
            failure = std::current_exception();
        }
    }
    if (writer.overflowed() && !writer.write_failed()) {
        // Whatever the producer did with the exception it got: the declared bytes went out (or
        // go out now, with the head), nothing more, and the connection ends after them.
        log_framing_error(res, framing,
                          "Content-Length " + std::to_string(*length) +
                              " but the body went on past it: sent " + std::to_string(*length) +
                              ", dropped the rest, closing the connection");
        result.keep_alive = false;
        co_await writer.finish();
        result.body_bytes = writer.body_bytes();
        co_return result;
    }
    if (failure) {
        if (!writer.write_failed()) {
            try {
                std::rethrow_exception(failure);
            } catch (const std::exception& e) {
                log::error(std::string("streaming response body failed: ") + e.what());
            } catch (...) {
                log::error("streaming response body failed");
            }
        }
        result.keep_alive = false;
        if (writer.head_sent() || writer.write_failed()) {
            result.aborted = true;  // the client must see a truncated response, not a complete one
            result.body_bytes = writer.body_bytes();
            co_return result;
        }
        // Nothing went out yet: an error response is still possible (the status of an
        // http_error, such as the 504 of a deadline, else 500).
        int status = 500;
        try {
            std::rethrow_exception(failure);
        } catch (const http_error& e) {
            status = e.status();
        } catch (...) {
        }
        response err = response::error(status);
        response_framing f = framing;
        f.keep_alive = false;
        co_return co_await send_response(out, err, f, scratch);
    }
    if (length && writer.body_bytes() < *length && !discard) {
        log_framing_error(res, framing,
                          "Content-Length " + std::to_string(*length) +
                              " but the body ended after " + std::to_string(writer.body_bytes()) +
                              " bytes: closed the connection");
        result.keep_alive = false;
        result.aborted = true;
        if (!writer.head_sent()) co_await writer.finish();  // the head, so the peer sees why
        result.body_bytes = writer.body_bytes();
        co_return result;
    }
    co_await writer.finish();
    result.body_bytes = writer.body_bytes();
    co_return result;
}

}  // namespace corgi::protocols::detail
