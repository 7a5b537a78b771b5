// Rebuilding a request from CGI variables. The path rule (DESIGN.md, request flow point 6):
// PATH_INFO when the proxy sends it, SCRIPT_NAME being the prefix we are mounted under; otherwise
// the path of REQUEST_URI.
#include "cgi_vars.hpp"

#include <algorithm>

namespace corgi::protocols::detail {

namespace {

bool is_token_char(char c) noexcept {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    switch (c) {
        case '!':
        case '#':
        case '$':
        case '%':
        case '&':
        case '\'':
        case '*':
        case '+':
        case '-':
        case '.':
        case '^':
        case '_':
        case '`':
        case '|':
        case '~':
            return true;
        default:
            return false;
    }
}

bool is_token(std::string_view s) noexcept {
    return !s.empty() && std::all_of(s.begin(), s.end(), is_token_char);
}

// Header values must not smuggle line breaks into anything that re-serialises them (WSGI environ,
// logs).
bool is_safe_value(std::string_view s) noexcept {
    return std::none_of(s.begin(), s.end(),
                        [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

char ascii_upper(char c) noexcept { return c >= 'a' && c <= 'z' ? char(c - 32) : c; }
char ascii_lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? char(c + 32) : c; }

// "FOO_BAR" -> "Foo-Bar" into `out`.
void header_name_from_var(std::string_view var, std::string& out) {
    out.clear();
    bool word_start = true;
    for (char c : var) {
        if (c == '_') {
            out.push_back('-');
            word_start = true;
        } else {
            out.push_back(word_start ? ascii_upper(c) : ascii_lower(c));
            word_start = false;
        }
    }
}

std::uint16_t parse_port(std::string_view text) noexcept {
    auto v = parse_decimal(text);
    return v && *v <= 65535 ? static_cast<std::uint16_t>(*v) : 0;
}

// "/app/" and "/" name the same prefixes as "/app" and "".
std::string_view trim_trailing_slashes(std::string_view s) noexcept {
    while (!s.empty() && s.back() == '/') s.remove_suffix(1);
    return s;
}

// Whether `prefix` (no trailing slash, non-empty) is `path`'s leading run of whole segments.
bool is_segment_prefix(std::string_view prefix, std::string_view path) noexcept {
    return path.size() >= prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
           (path.size() == prefix.size() || path[prefix.size()] == '/');
}

}  // namespace

std::optional<std::uint64_t> parse_decimal(std::string_view text) noexcept {
    if (text.empty() || text.size() > 19) return std::nullopt;  // 19 digits always fit in 64 bits
    std::uint64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return v;
}

std::string_view target_path(std::string_view target) noexcept {
    std::string_view t = target.substr(0, target.find('?'));
    // Absolute form ("http://host/path"): skip the scheme and authority.
    if (!t.empty() && t.front() != '/') {
        auto scheme_end = t.find("://");
        if (scheme_end != std::string_view::npos) {
            auto slash = t.find('/', scheme_end + 3);
            t = slash == std::string_view::npos ? std::string_view() : t.substr(slash);
        }
    }
    return t;
}

void cgi_request_builder::begin(request& req, std::string_view protocol_name) {
    req.reset();
    req.protocol_name.assign(protocol_name);
    req_ = &req;
    request_uri_ = path_info_ = script_name_ = document_uri_ = query_string_ = {};
    http_content_length_ = http_content_type_ = {};
    has_request_uri_ = has_query_string_ = has_content_length_ = has_content_type_ = false;
    error_ = nullptr;
}

void cgi_request_builder::add(std::string_view name, std::string_view value) {
    request& r = *req_;
    if (name.size() > 5 && name.compare(0, 5, "HTTP_") == 0) {
        std::string_view field = name.substr(5);
        // CONTENT_LENGTH and CONTENT_TYPE are authoritative (nginx sends the client's headers a
        // second time as HTTP_CONTENT_*). Transfer-Encoding is dropped too: the proxy has already
        // de-chunked the body it forwards with a CONTENT_LENGTH, and an app that saw "chunked"
        // would wait for chunks or read nothing.
        if (field == "CONTENT_LENGTH") {
            http_content_length_ = value;
            return;
        }
        if (field == "CONTENT_TYPE") {
            http_content_type_ = value;
            return;
        }
        if (field == "TRANSFER_ENCODING") return;
        if (!is_token(field) || !is_safe_value(value)) {
            if (!error_) error_ = "malformed HTTP_ variable";
            return;
        }
        header_name_from_var(field, scratch_);
        r.headers.add(scratch_, value);
        return;
    }
    // The common CGI names, by length first: this runs for every variable of every request.
    switch (name.size()) {
        case 5:
            if (name == "HTTPS") {
                if (iequals(value, "on") || value == "1") r.scheme = "https";
                break;  // also kept in proxy_vars: some apps read it directly
            }
            break;
        case 9:
            if (name == "PATH_INFO") {
                path_info_ = value;
                return;
            }
            break;
        case 11:
            if (name == "REQUEST_URI") {
                // It becomes the request target, written verbatim to the access log (a proxy
                // never sends raw CR, LF or NUL in it: nginx refuses such request lines).
                if (!is_safe_value(value)) error_ = "malformed REQUEST_URI";
                request_uri_ = value;
                has_request_uri_ = true;
                return;
            }
            if (name == "REMOTE_ADDR") {
                if (!is_safe_value(value)) error_ = "malformed REMOTE_ADDR";  // logged verbatim too
                r.remote_addr.assign(value);
                return;
            }
            if (name == "REMOTE_PORT") {
                r.remote_port = parse_port(value);
                return;
            }
            if (name == "SCRIPT_NAME") {
                script_name_ = value;
                return;
            }
            if (name == "SERVER_NAME") {
                r.server_name.assign(value);
                return;
            }
            if (name == "SERVER_PORT") {
                r.server_port = parse_port(value);
                return;
            }
            break;
        case 12:
            if (name == "QUERY_STRING") {
                query_string_ = value;
                has_query_string_ = true;
                return;
            }
            if (name == "CONTENT_TYPE") {
                if (!value.empty()) r.headers.set("Content-Type", value);
                has_content_type_ = true;
                return;
            }
            if (name == "DOCUMENT_URI") document_uri_ = value;  // kept in proxy_vars too
            break;
        case 14:
            if (name == "REQUEST_METHOD") {
                if (!is_token(value)) error_ = "malformed REQUEST_METHOD";
                r.method.assign(value);
                return;
            }
            if (name == "CONTENT_LENGTH") {
                // nginx sends an empty CONTENT_LENGTH for a request without a body.
                has_content_length_ = true;
                set_content_length(value);
                return;
            }
            break;
        case 15:
            if (name == "SERVER_PROTOCOL") {
                // "HTTP/1.0" -> 10, "HTTP/1.1" -> 11, "HTTP/2.0" -> 20; anything else keeps 11.
                if (value.size() == 8 && value.compare(0, 5, "HTTP/") == 0 && value[6] == '.' &&
                    value[5] >= '0' && value[5] <= '9' && value[7] >= '0' && value[7] <= '9')
                    r.version = (value[5] - '0') * 10 + (value[7] - '0');
                return;
            }
            break;
        default:
            break;
    }
    r.proxy_vars.emplace_back(name, value);
}

void cgi_request_builder::set_content_length(std::string_view value) {
    if (value.empty()) return;
    auto n = parse_decimal(value);
    if (!n) {
        error_ = "malformed CONTENT_LENGTH";
        return;
    }
    req_->content_length = *n;
    req_->headers.set("Content-Length", value);
}

const char* cgi_request_builder::finish() {
    request& r = *req_;
    // A proxy configured without CONTENT_LENGTH / CONTENT_TYPE params still forwards the client's
    // headers.
    if (!has_content_length_ && !http_content_length_.empty())
        set_content_length(http_content_length_);
    if (!has_content_type_ && !http_content_type_.empty())
        r.headers.set("Content-Type", http_content_type_);
    if (error_) return error_;
    if (r.method.empty()) return "no REQUEST_METHOD";

    std::string_view uri_path = target_path(request_uri_);
    if (!has_request_uri_ && path_info_.empty()) return "neither REQUEST_URI nor PATH_INFO";

    std::string_view script = trim_trailing_slashes(script_name_);
    if (!path_info_.empty()) {
        // PATH_INFO (already decoded by the proxy) is the path below SCRIPT_NAME. nginx's stock
        // uwsgi_params sends the whole path as PATH_INFO; a user who adds `uwsgi_param SCRIPT_NAME
        // /app` then means "strip /app" (uWSGI's manage-script-name), unless REQUEST_URI shows that
        // SCRIPT_NAME + PATH_INFO is the path.
        r.path.assign(path_info_);
        if (!script.empty() && is_segment_prefix(script, path_info_)) {
            percent_decode_into(uri_path, scratch_);
            const std::string& decoded = scratch_;
            bool already_split = decoded.size() == script.size() + path_info_.size() &&
                                 decoded.compare(0, script.size(), script) == 0 &&
                                 decoded.compare(script.size(), std::string::npos, path_info_) == 0;
            if (!has_request_uri_ || !already_split) r.path.erase(0, script.size());
        }
    } else {
        percent_decode_into(uri_path, r.path);
        // No PATH_INFO: SCRIPT_NAME is a mount prefix only when it is a proper prefix of the path.
        // nginx's fastcgi_params sets it to the whole path ($fastcgi_script_name, a PHP habit):
        // that means "no prefix".
        if (!script.empty()) {
            if (script != document_uri_ && is_segment_prefix(script, r.path) &&
                r.path.size() > script.size())
                r.path.erase(0, script.size());
            else
                script = {};
        }
    }
    if (r.path.empty()) r.path.push_back('/');
    if (r.path.front() != '/' && r.path != "*") return "request path does not start with '/'";
    r.script_name.assign(script);
    r.path_info = r.path;

    if (has_query_string_)
        r.query_string.assign(query_string_);
    else if (auto q = request_uri_.find('?'); q != std::string_view::npos)
        r.query_string.assign(request_uri_.substr(q + 1));

    if (!request_uri_.empty()) {
        r.target.assign(request_uri_);
    } else {
        r.target = percent_encode(r.script_name);
        r.target += percent_encode(r.path);
        if (!r.query_string.empty()) {
            r.target.push_back('?');
            r.target += r.query_string;
        }
    }
    return nullptr;
}

}  // namespace corgi::protocols::detail
