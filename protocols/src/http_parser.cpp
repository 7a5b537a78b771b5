// corgi's HTTP/1.x request parser: Beast's grammar, corgi's limits and refusals.
#include "http_parser.hpp"

#include <corgi/core/header_map.hpp>

#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <cstring>
#include <functional>

namespace corgi::protocols::detail {

namespace http = boost::beast::http;

namespace {

// Fields that a request carries at most once: a second one is ambiguous (which Host, which
// length?), and front ends that pick a different one than we do are how requests get smuggled.
enum singleton : unsigned {
    seen_host = 1,
    seen_content_length = 2,
    seen_content_type = 4,
    seen_transfer_encoding = 8,
};

unsigned singleton_bit(http::field f) noexcept {
    switch (f) {
        case http::field::host:
            return seen_host;
        case http::field::content_length:
            return seen_content_length;
        case http::field::content_type:
            return seen_content_type;
        case http::field::transfer_encoding:
            return seen_transfer_encoding;
        default:
            return 0;
    }
}

std::string_view trim(std::string_view t) noexcept {
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
    return t;
}

}  // namespace

http_parser::http_parser(request& req, const server_limits& limits) : req_(req), limits_(limits) {
    eager(true);
    header_limit(
        static_cast<std::uint32_t>(std::min<std::size_t>(limits.max_header_bytes, UINT32_MAX)));
    body_limit(limits.max_body_bytes);
}

std::size_t http_parser::put(boost::asio::const_buffer bytes, error_code& ec) {
    in_begin_ = static_cast<const char*>(bytes.data());
    in_end_ = in_begin_ + bytes.size();
    const bool in_header = !is_header_done();
    // Beast consumes the complete lines of an unfinished header and applies its header limit to
    // what is left, so a header arriving in pieces could grow without bound: the limit given to
    // each put is what remains of max_header_bytes.
    if (in_header)
        header_limit(static_cast<std::uint32_t>(
            std::min<std::size_t>(limits_.max_header_bytes - header_used_, UINT32_MAX)));
    std::size_t used = basic_parser<true>::put(bytes, ec);
    if (in_header && !is_header_done()) header_used_ += used;
    const std::size_t line_limit = limits_.limit_request_line;
    if ((ec == http::error::need_more || ec == http::error::header_limit) && !line_checked_ &&
        line_limit != 0 && !is_header_done()) {
        // Beast parses the request line only once the whole header is in: a line too long is seen
        // here, so that it gets its 414 without waiting for the header's end (or a 431).
        const std::size_t window = std::min(bytes.size(), line_limit + 2);
        if (window != 0 && std::memchr(in_begin_, '\n', window)) {
            line_checked_ = true;
        } else if (bytes.size() >= line_limit + 2) {
            ec = http::error::bad_target;
            refuse(414, "request line longer than limit_request_line", ec);
        }
    }
    return used;
}

void http_parser::refuse(int status, const char* why, error_code& ec) noexcept {
    status_ = status;
    why_ = why;
    if (!ec) ec = http::error::bad_value;
}

int http_parser::status(const error_code& ec) const noexcept {
    if (status_) return status_;
    if (ec == http::error::header_limit) return 431;
    if (ec == http::error::body_limit) return 413;
    return 400;
}

std::string http_parser::reason(const error_code& ec) const {
    if (why_) return why_;
    return ec.message();
}

void http_parser::on_request_impl(http::verb, boost::beast::string_view method,
                                  boost::beast::string_view target, int version, error_code& ec) {
    // Beast has refused versions other than 1.0 and 1.1 (bad_version: 400).
    // Beast takes exactly "METHOD SP target SP HTTP/d.d": the line's length without CRLF.
    const std::size_t line = method.size() + target.size() + 10;
    if (limits_.limit_request_line != 0 && line > limits_.limit_request_line) {
        ec = http::error::bad_target;
        return refuse(414, "request line longer than limit_request_line", ec);
    }
    req_.method.assign(method.data(), method.size());
    req_.target.assign(target.data(), target.size());
    req_.version = version;
    std::string_view t(target.data(), target.size());
    auto q = t.find('?');
    std::string_view raw_path = t.substr(0, q);
    req_.query_string.assign(q == std::string_view::npos ? std::string_view() : t.substr(q + 1));
    if (raw_path.starts_with("http://") || raw_path.starts_with("https://")) {
        // absolute-form (RFC 9112 3.2.2): the path starts after the authority
        auto slash = raw_path.find('/', raw_path.find("//") + 2);
        raw_path = slash == std::string_view::npos ? std::string_view("/") : raw_path.substr(slash);
    } else if (raw_path.empty() ||
               (raw_path[0] != '/' && !(raw_path == "*" && method == "OPTIONS"))) {
        ec = http::error::bad_target;
        return refuse(400, "bad request target", ec);
    }
    percent_decode_into(raw_path, req_.path);
    req_.path_info.assign(req_.path);
}

void http_parser::on_field_impl(http::field f, boost::beast::string_view name,
                                boost::beast::string_view value, error_code& ec) {
    if (limits_.limit_request_fields != 0 && ++fields_ > limits_.limit_request_fields)
        return refuse(431, "more header fields than limit_request_fields", ec);

    // Obsolete line folding (RFC 9112 5.2): Beast joins the lines into a value of its own (outside
    // our input), or, when the first line is empty, the value starts past a line break.
    const char* v = value.data();
    const std::less<const char*> before;
    if (before(v, in_begin_) || !before(v, in_end_))
        return refuse(400, "obsolete line folding", ec);
    const char* after_colon = name.data() + name.size() + 1;
    for (const char* p = after_colon; p < v; ++p)
        if (*p == '\r' || *p == '\n') return refuse(400, "obsolete line folding", ec);
    if (limits_.limit_request_field_size != 0) {
        // The line ends at the CR after the value's trailing blanks (Beast checked it is there).
        const char* end = v + value.size();
        while (end < in_end_ && *end != '\r') ++end;
        if (static_cast<std::size_t>(end - name.data()) > limits_.limit_request_field_size)
            return refuse(431, "header field longer than limit_request_field_size", ec);
    }

    if (unsigned bit = singleton_bit(f)) {
        if (seen_ & bit) return refuse(400, "duplicate header field", ec);
        seen_ |= bit;
    }
    std::string_view text(value.data(), value.size());
    switch (f) {
        case http::field::content_length:
            // Beast takes a list of equal lengths ("5, 5"); only digits are unambiguous.
            if (text.empty() ||
                !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
                return refuse(400, "Content-Length is not a number", ec);
            if (seen_ & seen_transfer_encoding)
                return refuse(400, "Content-Length with Transfer-Encoding", ec);
            break;
        case http::field::transfer_encoding:
            if (req_.version == 10)  // RFC 9112 6.1: a 1.0 request's framing cannot be trusted
                return refuse(400, "Transfer-Encoding in an HTTP/1.0 request", ec);
            if (seen_ & seen_content_length)
                return refuse(400, "Content-Length with Transfer-Encoding", ec);
            // Only chunked is understood; anything else would make us misread where the body ends.
            if (!iequals(trim(text), "chunked"))
                return refuse(501, "unsupported Transfer-Encoding", ec);
            break;
        case http::field::expect:
            if (iequals(text, "100-continue")) expect_continue_ = true;
            break;
        default:
            break;
    }
    req_.headers.add(std::string_view(name.data(), name.size()), text);
}

void http_parser::on_header_impl(error_code& ec) {
    if (req_.version == 11 && !(seen_ & seen_host))
        return refuse(400, "HTTP/1.1 request without Host", ec);
    // Known once the header is parsed; on_body_init only comes with the first body byte, which
    // with eager parsing may arrive after the handler started.
    if (auto length = this->content_length()) req_.content_length = *length;
    req_.chunked = this->chunked();
}

void http_parser::on_body_init_impl(boost::optional<std::uint64_t> const& length, error_code&) {
    if (length) req_.content_length = *length;
    req_.chunked = this->chunked();
}

std::size_t http_parser::on_body_impl(boost::beast::string_view body, error_code&) {
    body_.append(body.data(), body.size());
    return body.size();
}

std::size_t http_parser::on_chunk_body_impl(std::uint64_t, boost::beast::string_view body,
                                            error_code&) {
    body_.append(body.data(), body.size());
    return body.size();
}

}  // namespace corgi::protocols::detail
