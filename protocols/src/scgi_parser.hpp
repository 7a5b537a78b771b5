// Internal to protocols: the SCGI request head as pure functions over bytes (no socket), shared by
// the session, the unit tests and the fuzzer. Head: a netstring "<len>:<vars>," whose vars are
// NUL-terminated name/value strings, CONTENT_LENGTH first and SCGI=1 among them; the body follows.
#pragma once

#include <cstddef>
#include <string_view>

namespace corgi::protocols::detail::scgi {

enum class parse_status { need_more, complete, error };

struct head_result {
    parse_status status = parse_status::need_more;
    std::string_view vars;     // complete: the netstring's payload
    std::size_t consumed = 0;  // complete: the whole netstring; what follows is body
    const char* error = nullptr;
};

head_result parse_head(std::string_view in, std::size_t max_vars_bytes) noexcept;

// Calls on_var(name, value) for each variable; returns nullptr or what is malformed (an
// unterminated string, a name without value, an empty name, CONTENT_LENGTH not first, SCGI missing
// or not "1").
template <class F>
const char* for_each_var(std::string_view block, F&& on_var) {
    std::size_t i = 0;
    bool first = true, scgi_seen = false;
    while (i < block.size()) {
        auto name_end = block.find('\0', i);
        if (name_end == std::string_view::npos) return "unterminated variable name";
        auto value_end = block.find('\0', name_end + 1);
        if (value_end == std::string_view::npos) return "variable without a terminated value";
        std::string_view name = block.substr(i, name_end - i);
        std::string_view value = block.substr(name_end + 1, value_end - name_end - 1);
        if (name.empty()) return "empty variable name";
        if (first && name != "CONTENT_LENGTH") return "CONTENT_LENGTH is not the first variable";
        if (name == "SCGI") {
            if (value != "1") return "SCGI is not 1";
            scgi_seen = true;
        }
        first = false;
        on_var(name, value);
        i = value_end + 1;
    }
    if (first) return "empty SCGI header";
    if (!scgi_seen) return "no SCGI variable";
    return nullptr;
}

}  // namespace corgi::protocols::detail::scgi
