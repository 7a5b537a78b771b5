// The SCGI head parser: pure, no I/O (see scgi_parser.hpp).
#include "scgi_parser.hpp"

#include <cstdint>

namespace corgi::protocols::detail::scgi {

namespace {
constexpr std::size_t max_length_digits = 10;
}

head_result parse_head(std::string_view in, std::size_t max_vars_bytes) noexcept {
    head_result r;
    auto fail = [&](const char* why) {
        r.status = parse_status::error;
        r.error = why;
        return r;
    };
    std::size_t colon = 0;
    std::uint64_t length = 0;
    for (;; ++colon) {
        if (colon == in.size()) return r;  // need more
        char c = in[colon];
        if (c == ':') break;
        if (c < '0' || c > '9') return fail("malformed netstring length");
        if (colon == max_length_digits) return fail("netstring length too long");
        if (colon == 1 && in[0] == '0') return fail("netstring length with a leading zero");
        length = length * 10 + static_cast<std::uint64_t>(c - '0');
        if (length > max_vars_bytes) return fail("SCGI header larger than the header limit");
    }
    if (colon == 0) return fail("netstring without a length");
    std::size_t end = colon + 1 + static_cast<std::size_t>(length);
    if (in.size() <= end) return r;  // need the payload and its ','
    if (in[end] != ',') return fail("netstring not terminated by ','");
    r.status = parse_status::complete;
    r.vars = in.substr(colon + 1, static_cast<std::size_t>(length));
    r.consumed = end + 1;
    return r;
}

}  // namespace corgi::protocols::detail::scgi
