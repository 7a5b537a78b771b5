// SCGI as nginx's scgi_pass speaks it: a netstring of NUL-separated variables (CONTENT_LENGTH
// first, SCGI=1), the body after it, a CGI-style response ("Status: 200 OK") read until the
// connection closes.
#include "cgi_session.hpp"
#include "scgi_parser.hpp"

#include <corgi/protocols/protocols.hpp>

namespace corgi::protocols {

namespace {

detail::stream_head parse(std::string_view in, std::size_t max_vars_bytes,
                          detail::cgi_request_builder& b) {
    detail::stream_head out;
    auto head = detail::scgi::parse_head(in, max_vars_bytes);
    if (head.status == detail::scgi::parse_status::need_more) return out;
    if (head.status == detail::scgi::parse_status::error) {
        out.state = detail::stream_head::status::error;
        out.error = head.error;
        return out;
    }
    if (const char* bad =
            detail::scgi::for_each_var(head.vars, [&](auto k, auto v) { b.add(k, v); })) {
        out.state = detail::stream_head::status::error;
        out.error = bad;
        return out;
    }
    out.state = detail::stream_head::status::complete;
    out.consumed = head.consumed;
    return out;
}

std::size_t max_head_bytes(std::size_t max_vars_bytes) {
    return max_vars_bytes + 12;
}  // "<10 digits>:" ","

const detail::stream_protocol scgi_protocol{"scgi", detail::head_style::cgi, max_head_bytes, parse};

task<void> serve_scgi(connection& conn) {
    return detail::serve_stream_request(conn, scgi_protocol);
}

}  // namespace

protocol scgi() { return protocol{"scgi", serve_scgi}; }

}  // namespace corgi::protocols
