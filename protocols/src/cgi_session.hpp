// Internal to protocols: the session shared by the two proxy protocols that carry one request per
// connection (uwsgi and SCGI): read a head of CGI variables, rebuild the request, stream the body
// that follows it, answer, close. Only the head's framing and the response's first line differ
// between them.
#pragma once

#include "cgi_vars.hpp"
#include "response_writer.hpp"

#include <corgi/core/server.hpp>

#include <cstddef>
#include <string_view>

namespace corgi::protocols::detail {

struct stream_head {
    enum class status { need_more, complete, error } state = status::need_more;
    std::size_t consumed = 0;     // complete: bytes of the head; the body follows
    const char* error = nullptr;  // error: what is wrong, for the log
};

struct stream_protocol {
    std::string_view name;  // "uwsgi", "scgi": request.protocol_name and log prefix
    head_style style;       // the response's first line
    // Largest head the buffer must hold for a vars block of max_vars_bytes.
    std::size_t (*max_head_bytes)(std::size_t max_vars_bytes);
    // Looks at the front of `in`; once complete, has fed every variable to `builder` (which began
    // already).
    stream_head (*parse)(std::string_view in, std::size_t max_vars_bytes,
                         cgi_request_builder& builder);
};

task<void> serve_stream_request(connection& conn, const stream_protocol& proto);

}  // namespace corgi::protocols::detail
