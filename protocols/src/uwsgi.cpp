// The uwsgi protocol as nginx's uwsgi_pass speaks it: one request per connection, a 4-byte header
// and a vars block, the body after it, a raw HTTP/1.x response read until the connection closes.
#include "cgi_session.hpp"
#include "uwsgi_parser.hpp"

#include <corgi/protocols/protocols.hpp>

#include <algorithm>

namespace corgi::protocols {

namespace {

detail::stream_head parse(std::string_view in, std::size_t max_vars_bytes,
                          detail::cgi_request_builder& b) {
    detail::stream_head out;
    auto head = detail::uwsgi::parse_head(in, max_vars_bytes);
    if (head.status == detail::uwsgi::parse_status::need_more) return out;
    if (head.status == detail::uwsgi::parse_status::error) {
        out.state = detail::stream_head::status::error;
        out.error = head.error;
        return out;
    }
    if (const char* bad =
            detail::uwsgi::for_each_var(head.vars, [&](auto k, auto v) { b.add(k, v); })) {
        out.state = detail::stream_head::status::error;
        out.error = bad;
        return out;
    }
    out.state = detail::stream_head::status::complete;
    out.consumed = head.consumed;
    return out;
}

// The size field is 16 bits: a vars block never exceeds 65535 bytes, whatever the limit says.
std::size_t max_head_bytes(std::size_t max_vars_bytes) {
    return 4 + std::min<std::size_t>(max_vars_bytes, 65535);
}

const detail::stream_protocol uwsgi_protocol{"uwsgi", detail::head_style::http, max_head_bytes,
                                             parse};

task<void> serve_uwsgi(connection& conn) {
    return detail::serve_stream_request(conn, uwsgi_protocol);
}

}  // namespace

protocol uwsgi() { return protocol{"uwsgi", serve_uwsgi}; }

}  // namespace corgi::protocols
