// Internal to protocols: the uwsgi request head as pure functions over bytes (no socket), so that
// unit tests and the fuzzer drive exactly the code the session runs. Packet: modifier1,
// little-endian u16 size, modifier2, then `size` bytes of vars (u16 key length, key, u16 value
// length, value, ...), then the body.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace corgi::protocols::detail::uwsgi {

enum class parse_status { need_more, complete, error };

struct head_result {
    parse_status status = parse_status::need_more;
    std::string_view vars;     // complete: the vars block
    std::size_t consumed = 0;  // complete: header + vars; what follows is body
    const char* error = nullptr;
};

// Looks at the front of `in`. Only modifier1 0 (WSGI/CGI vars) is accepted: the other modifiers of
// uWSGI (loading code, changing configuration, signals...) must never be reachable through a corgi
// socket.
head_result parse_head(std::string_view in, std::size_t max_vars_bytes) noexcept;

inline std::uint16_t read_u16le(const char* p) noexcept {
    return static_cast<std::uint16_t>(
        static_cast<unsigned char>(p[0]) |
        (static_cast<unsigned>(static_cast<unsigned char>(p[1])) << 8));
}

// Calls on_var(name, value) for each variable of a vars block; returns nullptr, or what is
// malformed (a length past the end, an empty name). Variables before the error have been delivered.
template <class F>
const char* for_each_var(std::string_view block, F&& on_var) {
    std::size_t i = 0;
    while (i < block.size()) {
        if (block.size() - i < 2) return "truncated variable name length";
        std::size_t klen = read_u16le(block.data() + i);
        i += 2;
        if (klen == 0) return "empty variable name";
        if (block.size() - i < klen + 2) return "variable name past the end of the vars block";
        std::string_view key = block.substr(i, klen);
        i += klen;
        std::size_t vlen = read_u16le(block.data() + i);
        i += 2;
        if (block.size() - i < vlen) return "variable value past the end of the vars block";
        on_var(key, block.substr(i, vlen));
        i += vlen;
    }
    return nullptr;
}

}  // namespace corgi::protocols::detail::uwsgi
