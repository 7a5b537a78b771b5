// Request helpers: route arguments, query parsing on demand, body reading, percent coding.
#include <corgi/core/http_error.hpp>
#include <corgi/core/request.hpp>

namespace corgi {

namespace {
int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
}  // namespace

std::string percent_decode(std::string_view in, bool plus_as_space) {
    std::string out;
    percent_decode_into(in, out, plus_as_space);
    return out;
}

void percent_decode_into(std::string_view in, std::string& out, bool plus_as_space) {
    out.clear();
    if (in.find('%') == std::string_view::npos &&
        (!plus_as_space || in.find('+') == std::string_view::npos)) {
        out.assign(in);
        return;
    }
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (c == '%' && i + 2 < in.size()) {
            int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
            if (hi >= 0 && lo >= 0) {
                out.push_back(char(hi * 16 + lo));
                i += 2;
                continue;
            }
        }
        out.push_back(plus_as_space && c == '+' ? ' ' : c);
    }
}

std::string percent_encode(std::string_view in, std::string_view safe) {
    static constexpr char digits[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(in.size());
    for (unsigned char c : in) {
        bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved || (c != 0 && safe.find(char(c)) != std::string_view::npos)) {
            out.push_back(char(c));
        } else {
            out.push_back('%');
            out.push_back(digits[c >> 4]);
            out.push_back(digits[c & 15]);
        }
    }
    return out;
}

const route_value* request::find_arg(std::string_view name) const noexcept {
    for (const auto& a : args)
        if (a.first == name) return &a.second;
    return nullptr;
}

const std::vector<std::pair<std::string, std::string>>& request::query() const {
    if (query_parsed_) return query_;
    query_parsed_ = true;
    std::string_view q = query_string;
    while (!q.empty()) {
        auto amp = q.find('&');
        std::string_view part = q.substr(0, amp);
        q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
        if (part.empty()) continue;
        auto eq = part.find('=');
        if (eq == std::string_view::npos)
            query_.emplace_back(percent_decode(part, true), std::string());
        else
            query_.emplace_back(percent_decode(part.substr(0, eq), true),
                                percent_decode(part.substr(eq + 1), true));
    }
    return query_;
}

std::optional<std::string_view> request::query_param(std::string_view name) const {
    for (const auto& [k, v] : query())
        if (k == name) return std::string_view(v);
    return std::nullopt;
}

task<std::string_view> request::read_some() {
    if (!body) co_return std::string_view();
    co_return co_await body->read_some();
}

task<std::string> request::read_all(std::size_t limit) {
    std::string out;
    if (!body) co_return out;
    if (content_length && *content_length > limit)
        throw payload_too_large("request body exceeds " + std::to_string(limit) + " bytes");
    if (content_length) out.reserve(static_cast<std::size_t>(*content_length));
    for (;;) {
        std::string_view piece = co_await body->read_some();
        if (piece.empty()) break;
        if (out.size() + piece.size() > limit)
            throw payload_too_large("request body exceeds " + std::to_string(limit) + " bytes");
        out.append(piece);
    }
    co_return out;
}

void request::reset() noexcept {
    method.clear();
    target.clear();
    path.clear();
    query_string.clear();
    version = 11;
    headers.clear();
    scheme = "http";
    remote_addr.clear();
    remote_port = 0;
    server_name.clear();
    server_port = 0;
    proxy_vars.clear();
    script_name.clear();
    path_info.clear();
    endpoint.clear();
    args.clear();
    time_limit = std::chrono::milliseconds(0);
    content_length.reset();
    chunked = false;
    body = nullptr;
    query_.clear();
    query_parsed_ = false;
    id_.clear();
    started_ = {};
}

}  // namespace corgi
