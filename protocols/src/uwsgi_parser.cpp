// The uwsgi head parser: pure, no I/O (see uwsgi_parser.hpp).
#include "uwsgi_parser.hpp"

namespace corgi::protocols::detail::uwsgi {

head_result parse_head(std::string_view in, std::size_t max_vars_bytes) noexcept {
    head_result r;
    if (in.size() < 4) return r;
    if (in[0] != 0) {
        r.status = parse_status::error;
        r.error = "unsupported modifier1 (only 0, WSGI/CGI variables, is served)";
        return r;
    }
    std::size_t size = read_u16le(in.data() + 1);
    if (size > max_vars_bytes) {
        r.status = parse_status::error;
        r.error = "vars block larger than the header limit";
        return r;
    }
    if (in.size() - 4 < size) return r;
    r.status = parse_status::complete;
    r.vars = in.substr(4, size);
    r.consumed = 4 + size;
    return r;
}

}  // namespace corgi::protocols::detail::uwsgi
