// The URL map: werkzeug's routing model without regular expressions. Rules are parsed into parts
// (one per path segment, or one "final" part swallowing the rest of the path once a `path`
// converter appears) and put in a tree matched like werkzeug's StateMachineMatcher: static children
// first, then dynamic ones by weight, with backtracking. Converters validate while matching
// (werkzeug validates after the match and gives up with a 404 when, say, an int is out of range;
// here the next candidate rule is tried instead).
#include <corgi/core/http_error.hpp>
#include <corgi/core/log.hpp>
#include <corgi/core/stats.hpp>
#include <corgi/core/supervision.hpp>
#include <corgi/core/url_map.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "url_map_detail.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <system_error>
#include <type_traits>

namespace corgi {

namespace detail {

namespace {

[[noreturn]] void fail(std::string_view pattern, std::string_view message) {
    std::string text = "rule '";
    text += pattern;
    text += "': ";
    text += message;
    throw routing_error(text);
}

bool is_ident_start(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_ident_char(char c) noexcept { return is_ident_start(c) || (c >= '0' && c <= '9'); }
bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_hex(char c) noexcept {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

// Unicode code points in UTF-8 text: werkzeug's length limits count characters, not bytes.
std::size_t code_points(std::string_view s) noexcept {
    std::size_t n = 0;
    for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
}

void set_string(route_value& slot, std::string_view value) {
    if (auto* s = std::get_if<std::string>(&slot)) {
        s->assign(value.data(), value.size());  // keeps the capacity of a reused match_result
    } else {
        slot.emplace<std::string>(value);
    }
}

// One converter argument as written: `name=value` or a positional value, quoted or bare.
struct conv_arg {
    std::string name;
    std::string value;
    bool quoted = false;
};

// werkzeug's converter argument syntax: comma-separated values, optionally `name=`, values being
// True/False, numbers, identifiers or quoted strings (' or ", with an optional u/r prefix).
std::vector<conv_arg> parse_converter_args(std::string_view pattern, std::string_view text) {
    std::vector<conv_arg> args;
    std::size_t i = 0;
    auto skip_space = [&] {
        while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    };
    for (;;) {
        skip_space();
        if (i == text.size()) break;
        conv_arg arg;
        // name=
        std::size_t j = i;
        while (j < text.size() && is_ident_char(text[j])) ++j;
        if (j > i && is_ident_start(text[i])) {
            std::size_t k = j;
            while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
            if (k < text.size() && text[k] == '=') {
                arg.name.assign(text.substr(i, j - i));
                i = k + 1;
                skip_space();
            }
        }
        // value
        std::size_t start = i;
        if (i < text.size() &&
            (text[i] == 'u' || text[i] == 'r' || text[i] == 'U' || text[i] == 'R') &&
            i + 1 < text.size() && (text[i + 1] == '"' || text[i + 1] == '\'')) {
            ++i;
        }
        if (i < text.size() && (text[i] == '"' || text[i] == '\'')) {
            char quote = text[i];
            std::size_t end = text.find(quote, i + 1);
            if (end == std::string_view::npos)
                fail(pattern, "unterminated string in converter arguments");
            arg.value.assign(text.substr(i + 1, end - i - 1));
            arg.quoted = true;
            i = end + 1;
        } else {
            i = start;
            while (i < text.size() && text[i] != ',') ++i;
            auto value = trim(text.substr(start, i - start));
            if (value.empty()) fail(pattern, "empty converter argument");
            for (char c : value) {
                if (!is_ident_char(c) && c != '.' && c != '-' && c != '+') {
                    fail(pattern, "bad converter argument '" + std::string(value) + "'");
                }
            }
            arg.value.assign(value);
        }
        skip_space();
        if (i < text.size()) {
            if (text[i] != ',') fail(pattern, "expected ',' between converter arguments");
            ++i;
        }
        args.push_back(std::move(arg));
    }
    return args;
}

enum class conv_kind { string, integer, floating, path, uuid, any };

struct converter {
    conv_kind kind = conv_kind::string;
    std::size_t minlength = 1;             // string
    std::optional<std::size_t> maxlength;  // string
    std::size_t fixed_digits = 0;          // int
    std::optional<std::int64_t> int_min, int_max;
    std::optional<double> float_min, float_max;
    bool is_signed = false;          // int, float
    std::vector<std::string> items;  // any

    bool operator==(const converter&) const = default;

    // werkzeug's weights: numbers before strings, paths last.
    int weight() const noexcept {
        switch (kind) {
            case conv_kind::integer:
            case conv_kind::floating:
                return 50;
            case conv_kind::path:
                return 200;
            default:
                return 100;
        }
    }
    bool part_isolating() const noexcept { return kind != conv_kind::path; }

    // The longest run of `text` from `pos` this converter could possibly take.
    std::size_t max_run(std::string_view text, std::size_t pos) const noexcept {
        std::size_t end = pos;
        switch (kind) {
            case conv_kind::path:
                return text.size() - pos;
            case conv_kind::integer:
            case conv_kind::floating:
                while (end < text.size() &&
                       (is_digit(text[end]) || text[end] == '.' || text[end] == '-')) {
                    ++end;
                }
                return end - pos;
            default:
                while (end < text.size() && text[end] != '/') ++end;
                return end - pos;
        }
    }

    // Validates a matched piece of the path and stores its typed value.
    bool convert(std::string_view v, route_value& slot) const {
        if (v.empty()) return false;
        switch (kind) {
            case conv_kind::string: {
                if (v.find('/') != std::string_view::npos) return false;
                std::size_t n = code_points(v);
                if (n < minlength || (maxlength && n > *maxlength)) return false;
                set_string(slot, v);
                return true;
            }
            case conv_kind::path:
                if (v.front() == '/') return false;
                set_string(slot, v);
                return true;
            case conv_kind::any:
                if (std::find(items.begin(), items.end(), v) == items.end()) return false;
                set_string(slot, v);
                return true;
            case conv_kind::uuid: {
                if (!valid_uuid(v)) return false;
                set_string(slot, v);
                auto& s = std::get<std::string>(slot);
                for (char& c : s)
                    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                return true;
            }
            case conv_kind::integer: {
                std::string_view digits = v;
                if (is_signed && digits.front() == '-') digits.remove_prefix(1);
                if (digits.empty() || !std::all_of(digits.begin(), digits.end(), is_digit))
                    return false;
                if (fixed_digits && v.size() != fixed_digits) return false;
                std::int64_t value = 0;
                auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
                if (ec != std::errc() || end != v.data() + v.size()) return false;
                if ((int_min && value < *int_min) || (int_max && value > *int_max)) return false;
                slot = value;
                return true;
            }
            case conv_kind::floating: {
                std::string_view body = v;
                if (is_signed && body.front() == '-') body.remove_prefix(1);
                auto dot = body.find('.');
                if (dot == std::string_view::npos || dot == 0 || dot + 1 == body.size())
                    return false;
                auto digits = [](std::string_view s) {
                    return std::all_of(s.begin(), s.end(), is_digit);
                };
                if (!digits(body.substr(0, dot)) || !digits(body.substr(dot + 1))) return false;
                double value = 0;
                auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
                if (ec != std::errc() || end != v.data() + v.size()) return false;
                if ((float_min && value < *float_min) || (float_max && value > *float_max))
                    return false;
                slot = value;
                return true;
            }
        }
        return false;
    }

    static bool valid_uuid(std::string_view v) noexcept {
        if (v.size() != 36) return false;
        for (std::size_t i = 0; i < 36; ++i) {
            bool dash = i == 8 || i == 13 || i == 18 || i == 23;
            if (dash ? v[i] != '-' : !is_hex(v[i])) return false;
        }
        return true;
    }

    // Formats a value given to build() (as text) the way the URL carries it; false with `why` when
    // the value cannot be produced by this converter.
    bool to_url(std::string_view v, std::string& out, std::string& why) const {
        switch (kind) {
            case conv_kind::string: {
                std::size_t n = code_points(v);
                if (n < minlength || (maxlength && n > *maxlength)) {
                    why = "has the wrong length";
                    return false;
                }
                out.assign(v);
                return true;
            }
            case conv_kind::path:
                if (v.empty() || v.front() == '/') {
                    why = "is empty or starts with '/'";
                    return false;
                }
                out.assign(v);
                return true;
            case conv_kind::any:
                if (std::find(items.begin(), items.end(), v) == items.end()) {
                    why = "is not one of the allowed values";
                    return false;
                }
                out.assign(v);
                return true;
            case conv_kind::uuid:
                if (!valid_uuid(v)) {
                    why = "is not a UUID";
                    return false;
                }
                out.assign(v);
                for (char& c : out)
                    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                return true;
            case conv_kind::integer: {
                std::int64_t value = 0;
                auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
                if (v.empty() || ec != std::errc() || end != v.data() + v.size()) {
                    why = "is not an integer";
                    return false;
                }
                if ((value < 0 && !is_signed) || (int_min && value < *int_min) ||
                    (int_max && value > *int_max)) {
                    why = "is out of range";
                    return false;
                }
                char buf[32];
                auto res = std::to_chars(buf, buf + sizeof buf, value);
                std::string_view text(buf, static_cast<std::size_t>(res.ptr - buf));
                out.clear();
                if (text.front() == '-') {
                    out += '-';
                    text.remove_prefix(1);
                }
                // Python's zfill: the sign counts in the width.
                std::size_t width = out.size() + text.size();
                if (fixed_digits > width) out.append(fixed_digits - width, '0');
                out += text;
                if (fixed_digits && out.size() != fixed_digits) {
                    why = "has more digits than fixed_digits";
                    return false;
                }
                return true;
            }
            case conv_kind::floating: {
                double value = 0;
                auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
                if (v.empty() || ec != std::errc() || end != v.data() + v.size() ||
                    !std::isfinite(value)) {
                    why = "is not a number";
                    return false;
                }
                if ((std::signbit(value) && !is_signed) || (float_min && value < *float_min) ||
                    (float_max && value > *float_max)) {
                    why = "is out of range";
                    return false;
                }
                char buf[400];
                auto res = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::fixed);
                out.assign(buf, res.ptr);
                if (out.find('.') == std::string::npos)
                    out += ".0";  // the matcher wants digits.digits
                return true;
            }
        }
        return false;
    }

    // Canonical text for rule keys and messages.
    std::string describe() const {
        std::string s;
        auto opt = [&](const char* name, const auto& value) {
            if (value) {
                s += ',';
                s += name;
                s += '=';
                if constexpr (std::is_same_v<std::decay_t<decltype(*value)>, double>) {
                    char buf[64];
                    auto res = std::to_chars(buf, buf + sizeof buf, *value);
                    s.append(buf, res.ptr);
                } else {
                    s += std::to_string(*value);
                }
            }
        };
        switch (kind) {
            case conv_kind::string:
                s = "string(minlength=" + std::to_string(minlength);
                opt("maxlength", maxlength);
                break;
            case conv_kind::path:
                s = "path(";
                break;
            case conv_kind::uuid:
                s = "uuid(";
                break;
            case conv_kind::any:
                s = "any(";
                for (auto& item : items) s += std::to_string(item.size()) + ':' + item + ',';
                break;
            case conv_kind::integer:
                s = "int(fixed_digits=" + std::to_string(fixed_digits) +
                    ",signed=" + (is_signed ? "1" : "0");
                opt("min", int_min);
                opt("max", int_max);
                break;
            case conv_kind::floating:
                s = std::string("float(signed=") + (is_signed ? "1" : "0");
                opt("min", float_min);
                opt("max", float_max);
                break;
        }
        s += ')';
        return s;
    }
};

// Builds a converter from its name and arguments, checking them as werkzeug's constructors would.
converter make_converter(std::string_view pattern, std::string_view name,
                         std::string_view args_text) {
    converter c;
    auto args = parse_converter_args(pattern, args_text);
    std::string conv_name(name);
    auto bad = [&](const std::string& what) {
        fail(pattern, "converter '" + conv_name + "': " + what);
    };
    // Assigns positional then keyword arguments to the parameters, in werkzeug's order.
    auto bind = [&](std::vector<std::string_view> params) {
        std::vector<const conv_arg*> bound(params.size(), nullptr);
        std::size_t positional = 0;
        bool seen_keyword = false;
        for (auto& a : args) {
            if (a.name.empty()) {
                if (seen_keyword) bad("positional argument after keyword argument");
                if (positional >= params.size()) bad("too many arguments");
                bound[positional++] = &a;
            } else {
                seen_keyword = true;
                auto it = std::find(params.begin(), params.end(), a.name);
                if (it == params.end()) bad("unknown argument '" + a.name + "'");
                auto idx = static_cast<std::size_t>(it - params.begin());
                if (bound[idx]) bad("argument '" + a.name + "' given twice");
                bound[idx] = &a;
            }
        }
        return bound;
    };
    auto as_int = [&](const conv_arg* a, std::string_view param) -> std::int64_t {
        std::int64_t v = 0;
        auto [end, ec] = std::from_chars(a->value.data(), a->value.data() + a->value.size(), v);
        if (a->quoted || ec != std::errc() || end != a->value.data() + a->value.size()) {
            bad("argument '" + std::string(param) + "' must be an integer, not '" + a->value + "'");
        }
        return v;
    };
    auto as_size = [&](const conv_arg* a, std::string_view param) -> std::size_t {
        auto v = as_int(a, param);
        if (v < 0) bad("argument '" + std::string(param) + "' must not be negative");
        return static_cast<std::size_t>(v);
    };
    auto as_double = [&](const conv_arg* a, std::string_view param) -> double {
        double v = 0;
        auto [end, ec] = std::from_chars(a->value.data(), a->value.data() + a->value.size(), v);
        if (a->quoted || ec != std::errc() || end != a->value.data() + a->value.size()) {
            bad("argument '" + std::string(param) + "' must be a number, not '" + a->value + "'");
        }
        return v;
    };
    auto as_bool = [&](const conv_arg* a, std::string_view param) -> bool {
        if (!a->quoted && (a->value == "True" || a->value == "true" || a->value == "1"))
            return true;
        if (!a->quoted && (a->value == "False" || a->value == "false" || a->value == "0"))
            return false;
        bad("argument '" + std::string(param) + "' must be True or False, not '" + a->value + "'");
        return false;
    };

    if (name == "string" || name == "default") {
        c.kind = conv_kind::string;
        auto b = bind({"minlength", "maxlength", "length"});
        if (b[0]) c.minlength = as_size(b[0], "minlength");
        if (b[1]) c.maxlength = as_size(b[1], "maxlength");
        if (b[2]) {
            if (b[0] || b[1]) bad("length excludes minlength and maxlength");
            c.minlength = as_size(b[2], "length");
            c.maxlength = c.minlength;
        }
        if (c.minlength < 1) bad("lengths must be at least 1");
        if (c.maxlength && *c.maxlength < c.minlength) bad("maxlength is below minlength");
    } else if (name == "int") {
        c.kind = conv_kind::integer;
        auto b = bind({"fixed_digits", "min", "max", "signed"});
        if (b[0]) c.fixed_digits = as_size(b[0], "fixed_digits");
        if (b[1]) c.int_min = as_int(b[1], "min");
        if (b[2]) c.int_max = as_int(b[2], "max");
        if (b[3]) c.is_signed = as_bool(b[3], "signed");
        if (c.int_min && c.int_max && *c.int_min > *c.int_max) bad("min is above max");
    } else if (name == "float") {
        c.kind = conv_kind::floating;
        auto b = bind({"min", "max", "signed"});
        if (b[0]) c.float_min = as_double(b[0], "min");
        if (b[1]) c.float_max = as_double(b[1], "max");
        if (b[2]) c.is_signed = as_bool(b[2], "signed");
        if (c.float_min && c.float_max && *c.float_min > *c.float_max) bad("min is above max");
    } else if (name == "path" || name == "uuid") {
        c.kind = name == "path" ? conv_kind::path : conv_kind::uuid;
        if (!args.empty()) bad("takes no arguments");
    } else if (name == "any") {
        c.kind = conv_kind::any;
        for (auto& a : args) {
            if (!a.name.empty()) bad("takes no keyword arguments");
            if (a.value.empty() || a.value.find('/') != std::string::npos) {
                bad("items must be non-empty and without '/'");
            }
            c.items.push_back(a.value);
        }
        if (c.items.empty()) bad("needs at least one item");
    } else {
        fail(pattern, "unknown converter '" + conv_name + "'");
    }
    return c;
}

// werkzeug's Weighting: more static pieces first, longer static pieces first, more arguments first,
// then lighter converters first.
struct weighting {
    int neg_static_count = 0;
    std::vector<std::pair<int, int>> static_weights;
    int neg_arg_count = 0;
    std::vector<int> arg_weights;

    bool operator<(const weighting& o) const {
        return std::tie(neg_static_count, static_weights, neg_arg_count, arg_weights) <
               std::tie(o.neg_static_count, o.static_weights, o.neg_arg_count, o.arg_weights);
    }
};

struct piece {
    bool is_literal = true;
    std::string literal;
    converter conv;
    bool operator==(const piece& o) const {
        return is_literal == o.is_literal && (is_literal ? literal == o.literal : conv == o.conv);
    }
};

struct part {
    bool is_static = true;
    bool final = false;         // swallows the rest of the path (a path converter is in it)
    std::string content;        // static part: the segment
    std::vector<piece> pieces;  // dynamic part
    weighting weight;

    bool same_as(const part& o) const {
        if (is_static != o.is_static) return false;
        return is_static ? content == o.content : final == o.final && pieces == o.pieces;
    }
};

struct build_op {
    bool is_arg = false;
    std::string literal;  // already percent-encoded
    std::size_t arg = 0;
};

struct parsed_pattern {
    std::vector<part> parts;
    std::vector<std::string> arg_names;
    std::vector<const converter*> arg_convs;  // into parts' pieces
    std::vector<build_op> build;
};

// Splits a pattern into werkzeug's parts: `/` ends a part unless a path converter made it final.
parsed_pattern parse_pattern(std::string_view pattern) {
    if (pattern.empty() || pattern.front() != '/') fail(pattern, "must start with '/'");
    parsed_pattern out;
    part cur;
    auto finish_part = [&] {
        out.parts.push_back(std::move(cur));
        cur = part{};
    };
    auto add_literal = [&](std::string_view text) {
        if (!cur.pieces.empty() && cur.pieces.back().is_literal) {
            cur.pieces.back().literal += text;
        } else {
            piece p;
            p.literal.assign(text);
            cur.pieces.push_back(std::move(p));
        }
        if (cur.is_static) cur.content += text;
    };
    auto add_build_literal = [&](std::string_view text) {
        if (out.build.empty() || out.build.back().is_arg) out.build.push_back(build_op{});
        append_path_quoted(out.build.back().literal, text, true);
    };

    std::size_t i = 0;
    while (i < pattern.size()) {
        char c = pattern[i];
        if (c == '/') {
            add_build_literal("/");
            if (cur.final) {
                add_literal("/");
            } else {
                finish_part();
            }
            ++i;
        } else if (c == '<') {
            std::size_t start = i++;
            std::size_t id = i;
            while (i < pattern.size() && is_ident_char(pattern[i])) ++i;
            if (i == id || !is_ident_start(pattern[id])) fail(pattern, "expected a name after '<'");
            std::string_view first = pattern.substr(id, i - id);
            std::string_view conv_name = "default", args, var = first;
            if (i < pattern.size() && (pattern[i] == '(' || pattern[i] == ':')) {
                conv_name = first;
                if (pattern[i] == '(') {
                    std::size_t a = ++i;
                    char quote = 0;
                    while (i < pattern.size() && (quote || pattern[i] != ')')) {
                        if (quote) {
                            if (pattern[i] == quote) quote = 0;
                        } else if (pattern[i] == '"' || pattern[i] == '\'') {
                            quote = pattern[i];
                        }
                        ++i;
                    }
                    if (i == pattern.size())
                        fail(pattern, "unclosed '(' or quote in converter arguments");
                    args = pattern.substr(a, i - a);
                    ++i;
                }
                if (i == pattern.size() || pattern[i] != ':')
                    fail(pattern, "expected ':' after converter");
                std::size_t v = ++i;
                while (i < pattern.size() && is_ident_char(pattern[i])) ++i;
                if (i == v || !is_ident_start(pattern[v]))
                    fail(pattern, "expected a variable name");
                var = pattern.substr(v, i - v);
            }
            if (i == pattern.size() || pattern[i] != '>') {
                fail(pattern, "malformed variable at offset " + std::to_string(start));
            }
            ++i;
            if (std::find(out.arg_names.begin(), out.arg_names.end(), var) != out.arg_names.end()) {
                fail(pattern, "variable '" + std::string(var) + "' appears twice");
            }
            converter conv = make_converter(pattern, conv_name, args);
            if (cur.is_static) {
                cur.is_static = false;
                cur.content.clear();
            }
            if (!conv.part_isolating()) cur.final = true;
            cur.weight.arg_weights.push_back(conv.weight());
            piece p;
            p.is_literal = false;
            p.conv = std::move(conv);
            cur.pieces.push_back(std::move(p));
            out.arg_names.emplace_back(var);
            out.build.push_back(build_op{true, {}, out.arg_names.size() - 1});
        } else {
            std::size_t start = i;
            while (i < pattern.size() && pattern[i] != '/' && pattern[i] != '<') ++i;
            auto text = pattern.substr(start, i - start);
            cur.weight.static_weights.emplace_back(
                static_cast<int>(cur.weight.static_weights.size()), -static_cast<int>(text.size()));
            add_literal(text);
            add_build_literal(text);
        }
    }
    finish_part();
    // Rule arguments in order, pointing at the converters now that the parts no longer move.
    for (auto& p : out.parts) {
        p.weight.neg_static_count = -static_cast<int>(p.weight.static_weights.size());
        p.weight.neg_arg_count = -static_cast<int>(p.weight.arg_weights.size());
        for (auto& pc : p.pieces) {
            if (!pc.is_literal) out.arg_convs.push_back(&pc.conv);
        }
    }
    return out;
}

}  // namespace

std::string rule_key(std::string_view pattern) {
    auto parsed = parse_pattern(pattern);
    std::string key;
    for (auto& p : parsed.parts) {
        if (p.is_static) {
            key += "S" + std::to_string(p.content.size()) + ':' + p.content;
        } else {
            key += p.final ? "F" : "D";
            for (auto& pc : p.pieces) {
                if (pc.is_literal) {
                    key += "L" + std::to_string(pc.literal.size()) + ':' + pc.literal;
                } else {
                    key += "C" + pc.conv.describe();
                }
            }
        }
        key += '|';
    }
    return key;
}

std::vector<std::string> rule_arguments(std::string_view pattern) {
    return parse_pattern(pattern).arg_names;
}

std::vector<std::string> normalize_methods(const std::vector<std::string>& methods) {
    std::vector<std::string> out;
    for (auto& m : methods) {
        if (m.empty()) throw routing_error("empty method name");
        std::string up = m;
        for (char& c : up) {
            if (!std::isalpha(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
                throw routing_error("bad method name '" + m + "'");
            }
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        out.push_back(std::move(up));
    }
    if (std::find(out.begin(), out.end(), "GET") != out.end()) out.emplace_back("HEAD");
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

bool methods_overlap(const std::vector<std::string>& a, const std::vector<std::string>& b) {
    if (a.empty() || b.empty()) return true;
    for (auto& m : a) {
        if (std::binary_search(b.begin(), b.end(), m)) return true;
    }
    return false;
}

std::string join_prefix(std::string_view prefix, std::string_view pattern) {
    while (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
    std::string out(prefix);
    out += pattern;
    return out;
}

namespace {
// RFC 3986 pchar minus '%': unreserved, sub-delims, ':' and '@'.
bool path_safe(unsigned char c) noexcept {
    if (std::isalnum(c)) return true;
    switch (c) {
        case '-':
        case '.':
        case '_':
        case '~':
        case '!':
        case '$':
        case '&':
        case '\'':
        case '(':
        case ')':
        case '*':
        case '+':
        case ',':
        case ';':
        case '=':
        case ':':
        case '@':
            return true;
        default:
            return false;
    }
}
void append_escape(std::string& out, unsigned char c) {
    static constexpr char hex[] = "0123456789ABCDEF";
    out += '%';
    out += hex[c >> 4];
    out += hex[c & 15];
}
}  // namespace

void append_path_quoted(std::string& out, std::string_view in, bool keep_slash) {
    for (char ch : in) {
        auto c = static_cast<unsigned char>(ch);
        if (path_safe(c) || (keep_slash && c == '/')) {
            out += ch;
        } else {
            append_escape(out, c);
        }
    }
}

void append_query_quoted(std::string& out, std::string_view in) {
    for (char ch : in) {
        auto c = static_cast<unsigned char>(ch);
        if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out += ch;
        } else if (c == ' ') {
            out += '+';
        } else {
            append_escape(out, c);
        }
    }
}

struct rule_data;

// A state of the matcher: rules ending here, and transitions on the next part.
struct route_node {
    std::map<std::string, std::unique_ptr<route_node>, std::less<>> static_children;
    std::vector<std::pair<const part*, std::unique_ptr<route_node>>> dynamic;
    std::vector<const rule_data*> rules;
};

struct rule_data {
    std::string pattern;
    std::string endpoint;
    handler target;
    std::vector<std::string> methods;  // normalized; empty: any
    bool strict_slashes = true;
    std::chrono::milliseconds timeout = inherit_timeout;
    route_entry::kind type = route_entry::kind::rule;
    parsed_pattern parsed;  // rules only
    std::string prefix;     // mounts only: "" for a mount at "/"
};

}  // namespace detail

route_entry rule(std::string pattern, std::string endpoint, handler target, rule_options options) {
    route_entry e;
    e.type = route_entry::kind::rule;
    e.pattern = std::move(pattern);
    e.endpoint = std::move(endpoint);
    e.target = std::move(target);
    e.options = std::move(options);
    return e;
}

route_entry submount(std::string prefix, std::vector<route_entry> entries) {
    route_entry e;
    e.type = route_entry::kind::submount;
    e.pattern = std::move(prefix);
    e.children = std::move(entries);
    return e;
}

route_entry mount(std::string prefix, handler target, std::string endpoint,
                  std::chrono::milliseconds timeout) {
    route_entry e;
    e.type = route_entry::kind::mount;
    e.pattern = std::move(prefix);
    e.target = std::move(target);
    e.endpoint = std::move(endpoint);
    e.options.timeout = timeout;
    return e;
}

struct url_map::impl {
    std::vector<std::unique_ptr<detail::rule_data>> rules;  // declaration order
    detail::route_node root;
    std::vector<const detail::rule_data*> mounts;  // longest prefix first

    void add_entries(const std::vector<route_entry>& entries, const std::string& prefix) {
        for (auto& e : entries) {
            switch (e.type) {
                case route_entry::kind::submount:
                    if (!e.pattern.empty() && e.pattern.front() != '/') {
                        throw routing_error("submount '" + e.pattern +
                                            "': prefix must start with '/'");
                    }
                    add_entries(e.children, detail::join_prefix(prefix, e.pattern));
                    break;
                case route_entry::kind::rule:
                    add_rule(e, detail::join_prefix(prefix, e.pattern));
                    break;
                case route_entry::kind::mount:
                    add_mount(e, detail::join_prefix(prefix, e.pattern));
                    break;
            }
        }
    }

    void add_rule(const route_entry& e, std::string pattern) {
        auto r = std::make_unique<detail::rule_data>();
        r->parsed = detail::parse_pattern(pattern);
        r->pattern = std::move(pattern);
        r->endpoint = e.endpoint.empty() ? r->pattern : e.endpoint;
        r->target = e.target;
        r->timeout = e.options.timeout;
        try {
            r->methods = detail::normalize_methods(e.options.methods);
        } catch (const routing_error& err) {
            throw routing_error("rule '" + r->pattern + "': " + err.what());
        }
        r->strict_slashes = e.options.strict_slashes;
        if (!r->target) throw routing_error("rule '" + r->pattern + "': no handler");

        detail::route_node* node = &root;
        for (auto& p : r->parsed.parts) {
            if (p.is_static) {
                auto& child = node->static_children[p.content];
                if (!child) child = std::make_unique<detail::route_node>();
                node = child.get();
            } else {
                auto it = std::find_if(node->dynamic.begin(), node->dynamic.end(),
                                       [&](auto& d) { return d.first->same_as(p); });
                if (it == node->dynamic.end()) {
                    node->dynamic.emplace_back(&p, std::make_unique<detail::route_node>());
                    it = std::prev(node->dynamic.end());
                }
                node = it->second.get();
            }
        }
        for (auto* other : node->rules) {
            if (detail::methods_overlap(other->methods, r->methods)) {
                throw routing_error("rule '" + r->pattern + "' (endpoint '" + r->endpoint +
                                    "') duplicates rule '" + other->pattern + "' (endpoint '" +
                                    other->endpoint + "') for the same methods");
            }
        }
        node->rules.push_back(r.get());
        rules.push_back(std::move(r));
    }

    void add_mount(const route_entry& e, std::string prefix) {
        if (!prefix.empty() && prefix.front() != '/') {
            throw routing_error("mount '" + prefix + "': prefix must start with '/'");
        }
        if (prefix.find('<') != std::string::npos) {
            throw routing_error("mount '" + prefix + "': the prefix must be static");
        }
        while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
        for (auto* m : mounts) {
            if (m->prefix == prefix) {
                throw routing_error("mount '" + (prefix.empty() ? "/" : prefix) +
                                    "' is declared twice");
            }
        }
        auto r = std::make_unique<detail::rule_data>();
        r->type = route_entry::kind::mount;
        r->prefix = prefix;
        r->pattern = prefix.empty() ? "/" : prefix;
        r->endpoint = e.endpoint.empty() ? r->pattern : e.endpoint;
        r->target = e.target;
        r->timeout = e.options.timeout;
        if (!r->target) throw routing_error("mount '" + r->pattern + "': no handler");
        mounts.push_back(r.get());
        rules.push_back(std::move(r));
    }

    void finish() {
        sort_node(root);
        std::stable_sort(mounts.begin(), mounts.end(),
                         [](auto* a, auto* b) { return a->prefix.size() > b->prefix.size(); });
    }

    static void sort_node(detail::route_node& n) {
        std::stable_sort(n.dynamic.begin(), n.dynamic.end(),
                         [](auto& a, auto& b) { return a.first->weight < b.first->weight; });
        for (auto& [_, child] : n.static_children) sort_node(*child);
        for (auto& [_, child] : n.dynamic) sort_node(*child);
    }

    // --- matching ---
    enum class step { none, found, slash };

    struct context {
        std::string_view method;
        std::string_view path;
        match_result& out;
        const detail::rule_data* found = nullptr;
        std::size_t arg_count = 0;
    };

    static bool method_ok(const detail::rule_data* r, std::string_view method) {
        return r->methods.empty() ||
               std::binary_search(r->methods.begin(), r->methods.end(), method);
    }

    static void note_methods(const detail::rule_data* r, context& ctx) {
        for (auto& m : r->methods) {
            if (std::find(ctx.out.allow.begin(), ctx.out.allow.end(), m) == ctx.out.allow.end()) {
                ctx.out.allow.push_back(m);
            }
        }
    }

    static step accept(const detail::rule_data* r, std::size_t depth, context& ctx) {
        ctx.found = r;
        ctx.arg_count = depth;
        return step::found;
    }

    static constexpr std::size_t no_parts = std::string_view::npos;

    // `pos` is where the next part of the path starts (no_parts when every part is consumed).
    static step match_node(const detail::route_node& n, std::size_t pos, std::size_t depth,
                           context& ctx) {
        if (pos == no_parts) {
            for (auto* r : n.rules) {
                if (method_ok(r, ctx.method)) return accept(r, depth, ctx);
                note_methods(r, ctx);
            }
            // The path would match with a trailing slash.
            if (auto it = n.static_children.find(std::string_view());
                it != n.static_children.end()) {
                for (auto* r : it->second->rules) {
                    if (!method_ok(r, ctx.method)) continue;
                    if (r->strict_slashes) return step::slash;
                    return accept(r, depth, ctx);
                }
            }
            return step::none;
        }
        auto path = ctx.path;
        std::size_t slash = path.find('/', pos);
        std::string_view segment = path.substr(
            pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
        std::size_t next = slash == std::string_view::npos ? no_parts : slash + 1;

        if (auto it = n.static_children.find(segment); it != n.static_children.end()) {
            if (auto rv = match_node(*it->second, next, depth, ctx); rv != step::none) return rv;
        }
        for (auto& [p, child] : n.dynamic) {
            std::string_view target = p->final ? path.substr(pos) : segment;
            std::size_t after = p->final ? no_parts : next;
            if (auto rv = match_pieces(*p, 0, target, 0, depth, *child, after, ctx);
                rv != step::none) {
                return rv;
            }
        }
        // Only a trailing slash is left: rules without strict slashes match it.
        if (pos == path.size()) {
            for (auto* r : n.rules) {
                if (r->strict_slashes) continue;
                if (method_ok(r, ctx.method)) return accept(r, depth, ctx);
                note_methods(r, ctx);
            }
        }
        return step::none;
    }

    static step match_pieces(const detail::part& p, std::size_t index, std::string_view target,
                             std::size_t tpos, std::size_t depth, const detail::route_node& child,
                             std::size_t after, context& ctx) {
        if (index == p.pieces.size()) {
            return tpos == target.size() ? match_node(child, after, depth, ctx) : step::none;
        }
        auto& pc = p.pieces[index];
        if (pc.is_literal) {
            if (target.substr(tpos).starts_with(pc.literal)) {
                return match_pieces(p, index + 1, target, tpos + pc.literal.size(), depth, child,
                                    after, ctx);
            }
            return step::none;
        }
        auto& args = ctx.out.args;
        if (depth == args.size()) args.emplace_back();
        auto& slot = args[depth].second;
        bool last = index + 1 == p.pieces.size();
        std::size_t rest = target.size() - tpos;
        if (last) {
            if (rest == 0 || !pc.conv.convert(target.substr(tpos), slot)) return step::none;
            return match_pieces(p, index + 1, target, target.size(), depth + 1, child, after, ctx);
        }
        const std::string* next_literal =
            p.pieces[index + 1].is_literal ? &p.pieces[index + 1].literal : nullptr;
        std::size_t max = pc.conv.max_run(target, tpos);
        // Regex semantics: converters are greedy, but path is `[^/].*?` (shortest first).
        bool greedy = pc.conv.kind != detail::conv_kind::path;
        for (std::size_t k = 0; k < max; ++k) {
            std::size_t len = greedy ? max - k : k + 1;
            if (next_literal && !target.substr(tpos + len).starts_with(*next_literal)) continue;
            if (!pc.conv.convert(target.substr(tpos, len), args[depth].second)) continue;
            if (auto rv =
                    match_pieces(p, index + 1, target, tpos + len, depth + 1, child, after, ctx);
                rv != step::none) {
                return rv;
            }
        }
        return step::none;
    }
};

url_map::url_map(std::initializer_list<route_entry> entries)
    : url_map(std::vector<route_entry>(entries)) {}

url_map::url_map(std::vector<route_entry> entries) : impl_(std::make_unique<impl>()) {
    impl_->add_entries(entries, {});
    impl_->finish();
}

url_map::url_map(url_map&&) noexcept = default;
url_map& url_map::operator=(url_map&&) noexcept = default;
url_map::~url_map() = default;

match_result url_map::match(std::string_view method, std::string_view path) const {
    match_result out;
    match(method, path, out);
    return out;
}

void url_map::match(std::string_view method, std::string_view path, match_result& out) const {
    out.status = 404;
    out.target = nullptr;
    out.endpoint = {};
    out.allow.clear();
    out.location.clear();
    out.is_mount = false;
    out.mount_prefix.clear();

    impl::context ctx{method, path, out};
    auto rv = impl::match_node(impl_->root, 0, 0, ctx);
    if (rv == impl::step::found) {
        auto* r = ctx.found;
        out.status = 200;
        out.target = &r->target;
        out.endpoint = r->endpoint;
        out.timeout = r->timeout;
        out.args.resize(ctx.arg_count);
        for (std::size_t i = 0; i < ctx.arg_count; ++i)
            out.args[i].first.assign(r->parsed.arg_names[i]);
        out.allow.clear();
        if (method == "OPTIONS" && !r->methods.empty()) {
            out.allow = r->methods;
            out.allow.emplace_back("OPTIONS");
            std::sort(out.allow.begin(), out.allow.end());
            out.allow.erase(std::unique(out.allow.begin(), out.allow.end()), out.allow.end());
        }
        return;
    }
    out.args.clear();
    if (rv == impl::step::slash) {
        out.status = 308;
        out.location.assign(path);
        out.location += '/';
        out.allow.clear();
        return;
    }
    if (!out.allow.empty()) {
        // The path exists, not for this method: rules take precedence over mounts.
        out.status = 405;
        out.allow.emplace_back("OPTIONS");
        std::sort(out.allow.begin(), out.allow.end());
        out.allow.erase(std::unique(out.allow.begin(), out.allow.end()), out.allow.end());
        return;
    }
    for (auto* m : impl_->mounts) {
        auto& prefix = m->prefix;
        if (path.starts_with(prefix) &&
            (path.size() == prefix.size() || path[prefix.size()] == '/')) {
            out.status = 200;
            out.target = &m->target;
            out.endpoint = m->endpoint;
            out.timeout = m->timeout;
            out.is_mount = true;
            out.mount_prefix.assign(prefix);
            return;
        }
    }
}

std::string url_map::build(std::string_view endpoint,
                           const std::vector<std::pair<std::string, std::string>>& values) const {
    std::string reasons;
    std::string url, formatted, why;
    // werkzeug's build order: among the rules of the endpoint, those with more arguments first, so
    // that build("page", {{"n", "2"}}) picks "/page/<int:n>" over "/page/" plus a query string.
    std::vector<const detail::rule_data*> candidates;
    for (auto& r : impl_->rules) {
        if (r->endpoint == endpoint) candidates.push_back(r.get());
    }
    std::stable_sort(candidates.begin(), candidates.end(), [](auto* a, auto* b) {
        return a->parsed.arg_names.size() > b->parsed.arg_names.size();
    });
    for (auto* r : candidates) {
        auto find_value = [&](std::string_view name) -> const std::string* {
            for (auto& [k, v] : values) {
                if (k == name) return &v;
            }
            return nullptr;
        };
        url.clear();
        bool ok = true;
        if (r->type == route_entry::kind::mount) {
            url = r->prefix.empty() ? "/" : "";
            detail::append_path_quoted(url, r->prefix, true);
        } else {
            for (auto& op : r->parsed.build) {
                if (!op.is_arg) {
                    url += op.literal;
                    continue;
                }
                auto& name = r->parsed.arg_names[op.arg];
                const std::string* v = find_value(name);
                if (!v) {
                    reasons += "; rule '" + r->pattern + "' needs '" + name + "'";
                    ok = false;
                    break;
                }
                auto* conv = r->parsed.arg_convs[op.arg];
                if (!conv->to_url(*v, formatted, why)) {
                    reasons += "; rule '" + r->pattern + "': " + name + "='" + *v + "' " + why;
                    ok = false;
                    break;
                }
                detail::append_path_quoted(url, formatted, conv->kind == detail::conv_kind::path);
            }
        }
        if (!ok) continue;
        char sep = '?';
        for (auto& [k, v] : values) {
            auto& names = r->parsed.arg_names;
            if (std::find(names.begin(), names.end(), k) != names.end()) continue;
            url += sep;
            sep = '&';
            detail::append_query_quoted(url, k);
            url += '=';
            detail::append_query_quoted(url, v);
        }
        return url;
    }
    if (candidates.empty())
        throw routing_error("cannot build a URL: no rule has the endpoint '" +
                            std::string(endpoint) + "'");
    throw routing_error("cannot build a URL for endpoint '" + std::string(endpoint) + "'" +
                        reasons);
}

std::vector<url_map::rule_info> url_map::rules() const {
    std::vector<rule_info> out;
    auto add = [&](const detail::rule_data* r) {
        out.push_back(rule_info{r->pattern, r->endpoint, r->methods, r->type, r->timeout});
    };
    // Depth first in the matcher's order: rules ending here, static transitions, then dynamic ones
    // by weight.
    auto walk = [&](auto& self, const detail::route_node& n) -> void {
        for (auto* r : n.rules) add(r);
        for (auto& [_, child] : n.static_children) self(self, *child);
        for (auto& [_, child] : n.dynamic) self(self, *child);
    };
    walk(walk, impl_->root);
    for (auto* m : impl_->mounts) add(m);
    return out;
}

namespace {

// The match result of the request being dispatched on this thread: its vectors and strings keep
// their capacity from one request to the next. It is not used across a suspension.
match_result& dispatch_scratch() {
    thread_local match_result scratch;
    return scratch;
}

std::string join_allow(const std::vector<std::string>& allow) {
    std::string s;
    for (auto& m : allow) {
        if (!s.empty()) s += ", ";
        s += m;
    }
    return s;
}

// A free function rather than a capturing coroutine lambda: the frame owns its copy of the map, so
// the matched handler stays alive even if the dispatcher object goes away while a request is in
// flight.
// Counts the request for the supervising master (in flight while the handler runs, then one more
// served), whatever way the coroutine ends.
struct supervised_request {
    supervised_request() noexcept {
        supervision::request_started();
        stats::request_started();
    }
    ~supervised_request() {
        stats::request_finished();
        supervision::request_finished();
    }
    supervised_request(const supervised_request&) = delete;
    supervised_request& operator=(const supervised_request&) = delete;
};

// --- deadlines (--harakiri, a route's "timeout") ------------------------------------------------

using steady = std::chrono::steady_clock;

std::string seconds_text(steady::duration d) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3g s", std::chrono::duration<double>(d).count());
    return text;
}

// "GET /slow?x=1 (route 'slow')", for the log lines of a request past its deadline.
std::string describe(const request& req) {
    std::string s = req.method + ' ' + req.target;
    if (!req.endpoint.empty()) s += " (route '" + req.endpoint + "')";
    return s;
}

// A handler cancelled at its deadline that has not ended `grace` later is stuck (it waits on
// something that ignores cancellation): logged, and the process asks its master to replace it.
// Made only once a deadline has passed; the handler's end cancels it.
struct stuck_watch {
    net::steady_timer timer;
    std::string what;
    std::string request_id;  // the request object has moved on by the time the watch fires
    steady::time_point started;
    stuck_watch(const net::any_io_executor& ex, std::string w, std::string_view id,
                steady::time_point s)
        : timer(ex), what(std::move(w)), request_id(id), started(s) {}
};

void watch_for_stuck(const std::shared_ptr<stuck_watch>& watch, std::chrono::milliseconds grace) {
    watch->timer.expires_after(grace);
    watch->timer.async_wait([watch](boost::system::error_code ec) {
        if (ec) return;  // the handler ended in time
        log::error(log::for_request(watch->request_id),
                   "request deadline: " + watch->what + " is stuck: still running " +
                       seconds_text(steady::now() - watch->started) +
                       " after it started, ignoring its cancellation");
        if (!supervision::request_replacement(supervision::replacement_reason::stuck_request,
                                              watch->what))
            log::error(
                "request deadline: no master supervises this process, so it cannot be "
                "recycled; the stuck request keeps its resources");
    });
}

// Waits for the deadline; then, while the parallel group cancels the handler, watches that it
// ends within the grace.
task<void> expire_at(steady::time_point deadline, std::shared_ptr<stuck_watch>& watch,
                     const request& req, std::chrono::milliseconds grace) {
    auto ex = co_await net::this_coro::executor;
    net::steady_timer timer(ex, deadline);
    co_await timer.async_wait(net::use_awaitable);
    watch = std::make_shared<stuck_watch>(ex, describe(req), req.id(), req.handler_started);
    watch_for_stuck(watch, grace);
}

// A streamed body still being produced at the deadline: the producer is cancelled and the
// connection ends (the head has gone out, so the client sees a truncated response). If nothing
// had gone out yet, the writer answers with this error's 504.
task<void> produce_before(const body_producer& inner, body_writer& writer,
                          steady::time_point deadline, const std::string& what) {
    auto ex = co_await net::this_coro::executor;
    net::steady_timer timer(ex, deadline);
    auto [order, error, timer_error] =
        co_await net::experimental::make_parallel_group(
            net::co_spawn(ex, inner(writer), net::deferred), timer.async_wait(net::deferred))
            .async_wait(net::experimental::wait_for_one(), net::deferred);
    (void)timer_error;
    if (order[0] == 0) {
        if (error) std::rethrow_exception(error);
        co_return;
    }
    throw http_error(504, what +
                              " ran past its deadline while its response body was being "
                              "sent: body cut off, connection closed");
}

task<response> run_with_deadline(const handler& target, request& req,
                                 std::chrono::milliseconds limit, std::chrono::milliseconds grace) {
    auto ex = co_await net::this_coro::executor;
    req.handler_started = steady::now();
    req.time_limit = limit;
    const steady::time_point deadline = req.handler_started + limit;
    std::shared_ptr<stuck_watch> watch;
    auto [order, error, res, expired_error] =
        co_await net::experimental::make_parallel_group(
            net::co_spawn(ex, target(req), net::deferred),
            net::co_spawn(ex, expire_at(deadline, watch, req, grace), net::deferred))
            .async_wait(net::experimental::wait_for_one(), net::deferred);
    (void)expired_error;
    if (watch) watch->timer.cancel();  // the handler has ended
    if (order[0] == 0) {
        if (error) std::rethrow_exception(error);
        if (auto* producer = std::get_if<body_producer>(&res.body); producer && *producer) {
            res.body = body_producer(
                [inner = std::move(*producer), deadline, what = describe(req)](body_writer& w) {
                    return produce_before(inner, w, deadline, what);
                });
        }
        co_return std::move(res);
    }
    log::warning(req, "request deadline: " + describe(req) + " ran past its " +
                          seconds_text(limit) + ": cancelled, answered 504 Gateway Timeout");
    co_return response::error(504);
}

task<response> dispatch(std::shared_ptr<const url_map> map, dispatch_options options,
                        request& req) {
    supervised_request counted;
    auto& m = dispatch_scratch();
    map->match(req.method, req.path_info, m);
    switch (m.status) {
        case 200: {
            const handler* target = m.target;
            req.endpoint.assign(m.endpoint);
            req.args.swap(m.args);  // both keep their storage for the next requests
            if (m.is_mount) {
                req.script_name += m.mount_prefix;
                req.path_info.erase(0, m.mount_prefix.size());
            }
            const std::chrono::milliseconds limit =
                m.timeout >= std::chrono::milliseconds(0) ? m.timeout : options.request_timeout;
            // No deadline: the handler is awaited directly (no timer, no extra coroutine).
            if (limit <= std::chrono::milliseconds(0)) co_return co_await (*target)(req);
            co_return co_await run_with_deadline(*target, req, limit, options.stuck_grace);
        }
        case 405: {
            // OPTIONS on a path whose rules do not list it: answered here, as werkzeug/Flask do.
            if (req.method == "OPTIONS") {
                response res(204);
                res.headers.set("Allow", join_allow(m.allow));
                co_return res;
            }
            auto res = response::error(405);
            res.headers.set("Allow", join_allow(m.allow));
            co_return res;
        }
        case 308: {
            std::string location;
            detail::append_path_quoted(location, req.script_name, true);
            detail::append_path_quoted(location, m.location, true);
            if (!req.query_string.empty()) {
                location += '?';
                location += req.query_string;
            }
            co_return response::redirect(location, 308);
        }
        default:
            co_return response::error(m.status);
    }
}

}  // namespace

handler make_dispatcher(std::shared_ptr<const url_map> map, dispatch_options options) {
    if (!map) throw std::invalid_argument("make_dispatcher: null url_map");
    return [map = std::move(map), options](request& req) { return dispatch(map, options, req); };
}

}  // namespace corgi
