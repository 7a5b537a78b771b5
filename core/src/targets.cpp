// The built-in targets of the URL map: a fixed response, a redirect with `<name>` placeholders, a
// static directory (realpath-confined, conditional and range requests, sent as an open file range)
// and `echo`.
#include <corgi/core/http_error.hpp>
#include <corgi/core/route_config.hpp>
#include <corgi/core/stats.hpp>

#include "targets_detail.hpp"
#include "url_map_detail.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace corgi {

namespace {

// ---------------------------------------------------------------- return

struct fixed_response {
    int status;
    std::string body;
    std::string content_type;
    std::vector<std::pair<std::string, std::string>> headers;
};

// Coroutines take their state by value (a shared_ptr), not through lambda captures: the frame then
// keeps it alive whatever happens to the handler object during the request.
task<response> answer_fixed(std::shared_ptr<const fixed_response> f) {
    response res(f->status, f->body, f->content_type);
    for (auto& [name, value] : f->headers) res.headers.set(name, value);
    co_return res;
}

// ---------------------------------------------------------------- redirect

struct redirect_spec {
    // Literal text and `<name>` placeholders, alternating; placeholders have is_arg set.
    struct piece {
        bool is_arg;
        std::string text;
    };
    std::vector<piece> pieces;
    int status;
};

void append_value(std::string& out, const route_value& v) {
    if (auto* s = std::get_if<std::string>(&v)) {
        detail::append_path_quoted(out, *s, true);
    } else if (auto* i = std::get_if<std::int64_t>(&v)) {
        out += std::to_string(*i);
    } else {
        char buf[400];
        auto res =
            std::to_chars(buf, buf + sizeof buf, std::get<double>(v), std::chars_format::fixed);
        std::string_view text(buf, static_cast<std::size_t>(res.ptr - buf));
        out += text;
        if (text.find('.') == std::string_view::npos) out += ".0";
    }
}

task<response> answer_redirect(std::shared_ptr<const redirect_spec> spec, request& req) {
    std::string location;
    // A location relative to the site root is relative to where the map is mounted, as in werkzeug.
    bool site_relative = !spec->pieces.empty() && !spec->pieces.front().is_arg &&
                         spec->pieces.front().text.starts_with('/') &&
                         !spec->pieces.front().text.starts_with("//");
    if (site_relative) detail::append_path_quoted(location, req.script_name, true);
    for (auto& p : spec->pieces) {
        if (!p.is_arg) {
            location += p.text;
            continue;
        }
        const route_value* v = req.find_arg(p.text);
        if (!v) throw internal_server_error("redirect target: no route argument '" + p.text + "'");
        append_value(location, *v);
    }
    co_return response::redirect(location, spec->status);
}

// ---------------------------------------------------------------- static

struct static_root {
    std::string root;  // realpath of the configured root
    bool is_file = false;
};

struct content_type_entry {
    std::string_view ext;
    std::string_view type;
};
constexpr content_type_entry content_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"txt", "text/plain; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"pdf", "application/pdf"},
    {"wasm", "application/wasm"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
    {"mp3", "audio/mpeg"},
    {"ogg", "audio/ogg"},
    {"wav", "audio/wav"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
    {"tar", "application/x-tar"},
};

std::string_view content_type_for(std::string_view path) {
    auto slash = path.rfind('/');
    auto dot = path.rfind('.');
    if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash)) {
        return "application/octet-stream";
    }
    auto ext = path.substr(dot + 1);
    for (auto& e : content_types) {
        if (iequals(e.ext, ext)) return e.type;
    }
    return "application/octet-stream";
}

constexpr const char* day_names[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr const char* month_names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// IMF-fixdate, built by hand: strftime's %a and %b follow the locale.
std::string http_date(std::time_t t) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", day_names[tm.tm_wday],
                  tm.tm_mday, month_names[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
    return buf;
}

// Parses an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"); nullopt for anything else, which RFC
// 9110 says to ignore.
std::optional<std::time_t> parse_http_date(std::string_view s) {
    if (s.size() != 29 || s[3] != ',' || s[4] != ' ' || s.substr(26) != "GMT") return std::nullopt;
    auto num = [&](std::size_t pos, std::size_t len) -> int {
        int v = 0;
        auto [end, ec] = std::from_chars(s.data() + pos, s.data() + pos + len, v);
        return ec == std::errc() && end == s.data() + pos + len ? v : -1;
    };
    std::tm tm{};
    tm.tm_mday = num(5, 2);
    auto month = s.substr(8, 3);
    tm.tm_mon = -1;
    for (int i = 0; i < 12; ++i) {
        if (month == month_names[i]) tm.tm_mon = i;
    }
    int year = num(12, 4);
    tm.tm_hour = num(17, 2);
    tm.tm_min = num(20, 2);
    tm.tm_sec = num(23, 2);
    if (tm.tm_mday < 1 || tm.tm_mon < 0 || year < 1970 || tm.tm_hour < 0 || tm.tm_min < 0 ||
        tm.tm_sec < 0 || s[16] != ' ' || s[19] != ':' || s[22] != ':') {
        return std::nullopt;
    }
    tm.tm_year = year - 1900;
    return timegm(&tm);
}

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// If-None-Match uses the weak comparison: W/ prefixes are ignored.
bool etag_list_matches(std::string_view list, std::string_view etag) {
    if (trim_ows(list) == "*") return true;
    while (!list.empty()) {
        auto comma = list.find(',');
        auto item = trim_ows(list.substr(0, comma));
        if (item.starts_with("W/")) item.remove_prefix(2);
        if (item == etag) return true;
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
    return false;
}

struct byte_range {
    std::uint64_t first = 0, last = 0;
};
enum class range_outcome { ignore, satisfiable, unsatisfiable };

bool parse_u64(std::string_view s, std::uint64_t& v) {
    if (s.empty()) return false;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    return ec == std::errc() && end == s.data() + s.size();
}

// One `bytes=` range (a-b, a-, -n). Several ranges are answered with the whole file (RFC 9110
// allows it), and syntax errors make the header ignored.
range_outcome parse_range(std::string_view header, std::uint64_t size, byte_range& out) {
    header = trim_ows(header);
    if (header.size() < 6 || !iequals(header.substr(0, 6), "bytes=")) return range_outcome::ignore;
    auto spec = trim_ows(header.substr(6));
    if (spec.find(',') != std::string_view::npos) return range_outcome::ignore;
    auto dash = spec.find('-');
    if (dash == std::string_view::npos) return range_outcome::ignore;
    auto a = trim_ows(spec.substr(0, dash));
    auto b = trim_ows(spec.substr(dash + 1));
    std::uint64_t first = 0, last = 0;
    if (a.empty()) {
        if (!parse_u64(b, last)) return range_outcome::ignore;
        if (last == 0 || size == 0) return range_outcome::unsatisfiable;
        out.first = last >= size ? 0 : size - last;
        out.last = size - 1;
        return range_outcome::satisfiable;
    }
    if (!parse_u64(a, first)) return range_outcome::ignore;
    if (b.empty()) {
        last = UINT64_MAX;
    } else if (!parse_u64(b, last) || last < first) {
        return range_outcome::ignore;
    }
    if (first >= size) return range_outcome::unsatisfiable;
    out.first = first;
    out.last = std::min(last, size - 1);
    return range_outcome::satisfiable;
}

bool under_root(const static_root& st, std::string_view real) {
    if (st.root == "/") return true;
    return real == st.root || (real.starts_with(st.root) && real[st.root.size()] == '/');
}

std::optional<std::string> real_path(const std::string& path) {
    char* real = ::realpath(path.c_str(), nullptr);
    if (!real) return std::nullopt;
    std::string out(real);
    std::free(real);
    return out;
}

// Opens a file resolved under the root. O_NONBLOCK so that a FIFO planted in the tree cannot block
// the io thread.
file_descriptor open_regular(const static_root& st, const std::string& path, struct stat& info,
                             std::string& resolved) {
    auto real = real_path(path);
    if (!real || !under_root(st, *real)) throw not_found();
    int fd = ::open(real->c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (errno == EACCES) throw forbidden();
        throw not_found();
    }
    file_descriptor file(fd);
    if (::fstat(fd, &info) != 0) throw not_found();
    resolved = std::move(*real);
    return file;
}

response serve_static(const static_root& st, request& req) {
    if (req.method != "GET" && req.method != "HEAD") {
        auto res = response::error(405);
        res.headers.set("Allow", "GET, HEAD");
        return res;
    }
    std::string path;
    if (st.is_file) {
        path = st.root;
    } else {
        // The rule's first string argument (its <path:...>), or what a mount left in path_info.
        std::string_view rel = req.path_info;
        for (auto& [name, value] : req.args) {
            if (auto* s = std::get_if<std::string>(&value)) {
                rel = *s;
                break;
            }
        }
        if (rel.find('\0') != std::string_view::npos) throw not_found();
        // `..` is refused outright, before realpath gets to resolve it; symlinks are checked after.
        for (std::string_view rest = rel; !rest.empty();) {
            auto slash = rest.find('/');
            if (rest.substr(0, slash) == "..") throw not_found();
            if (slash == std::string_view::npos) break;
            rest.remove_prefix(slash + 1);
        }
        while (rel.starts_with('/')) rel.remove_prefix(1);
        path = st.root;
        if (!rel.empty()) {
            path += '/';
            path += rel;
        }
    }
    struct stat info {};
    std::string resolved;
    file_descriptor file = open_regular(st, path, info, resolved);
    if (S_ISDIR(info.st_mode)) {
        file = open_regular(st, resolved + "/index.html", info, resolved);
    }
    if (!S_ISREG(info.st_mode)) throw not_found();

    auto size = static_cast<std::uint64_t>(info.st_size);
    auto mtime_ns = static_cast<std::uint64_t>(info.st_mtim.tv_sec) * 1000000000ull +
                    static_cast<std::uint64_t>(info.st_mtim.tv_nsec);
    char etag_buf[64];
    std::snprintf(etag_buf, sizeof etag_buf, "\"%llx-%llx\"", static_cast<unsigned long long>(size),
                  static_cast<unsigned long long>(mtime_ns));
    std::string_view etag = etag_buf;
    std::string last_modified = http_date(info.st_mtim.tv_sec);

    response res(200);
    res.headers.set("ETag", etag);
    res.headers.set("Last-Modified", last_modified);

    // Conditional requests: If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
    bool not_modified = false;
    if (auto inm = req.headers.get_joined("If-None-Match"); !inm.empty()) {
        not_modified = etag_list_matches(inm, etag);
    } else if (auto ims = parse_http_date(trim_ows(req.headers.get("If-Modified-Since")))) {
        not_modified = info.st_mtim.tv_sec <= *ims;
    }
    if (not_modified) {
        res.status = 304;
        return res;
    }

    res.headers.set("Content-Type", content_type_for(resolved));
    res.headers.set("Accept-Ranges", "bytes");
    std::uint64_t offset = 0, length = size;
    if (auto range = req.headers.get("Range"); !range.empty()) {
        // If-Range: the range applies only to the representation the client already has part of.
        auto if_range = trim_ows(req.headers.get("If-Range"));
        bool applies = if_range.empty() || if_range == etag || if_range == last_modified;
        byte_range r;
        auto outcome = applies ? parse_range(range, size, r) : range_outcome::ignore;
        if (outcome == range_outcome::unsatisfiable) {
            auto err = response::error(416);
            err.headers.set("Content-Range", "bytes */" + std::to_string(size));
            return err;
        }
        if (outcome == range_outcome::satisfiable) {
            res.status = 206;
            offset = r.first;
            length = r.last - r.first + 1;
            res.headers.set("Content-Range", "bytes " + std::to_string(r.first) + '-' +
                                                 std::to_string(r.last) + '/' +
                                                 std::to_string(size));
        }
    }
    res.body = file_range{std::move(file), offset, length};
    return res;
}

// 403/404/405 come back as responses rather than exceptions: a scanner probing for files is common
// traffic, and a handler composing this one gets a plain response to look at.
task<response> answer_static(std::shared_ptr<const static_root> st, request& req) {
    try {
        co_return serve_static(*st, req);
    } catch (const http_error& err) {
        co_return response::error(err.status());
    }
}

// ---------------------------------------------------------------- echo

constexpr std::size_t echo_body_limit = 1024 * 1024;

task<response> answer_echo(request& req) {
    std::size_t body_length = 0;
    try {
        body_length = (co_await req.read_all(echo_body_limit)).size();
    } catch (const payload_too_large&) {
        co_return response::error(413);
    }
    nlohmann::json args = nlohmann::json::object();
    for (auto& [name, value] : req.args) {
        std::visit([&, &key = name](const auto& v) { args[key] = v; }, value);
    }
    // Repeated query keys become an array of their values, in order; a key given once is a string.
    nlohmann::json query = nlohmann::json::object();
    for (auto& [key, value] : req.query()) {
        auto it = query.find(key);
        if (it == query.end()) {
            query[key] = value;
        } else if (it->is_array()) {
            it->push_back(value);
        } else {
            *it = nlohmann::json::array({*it, value});
        }
    }
    nlohmann::json headers = nlohmann::json::object();
    for (auto& [name, value] : req.headers) {
        std::string lower = name;
        std::transform(lower.begin(), lower.end(), lower.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (headers.contains(lower)) continue;
        headers[lower] = req.headers.get_joined(name);
    }
    nlohmann::json doc = {
        {"endpoint", req.endpoint},       {"args", std::move(args)},
        {"method", req.method},           {"path", req.path},
        {"script_name", req.script_name}, {"path_info", req.path_info},
        {"query", std::move(query)},      {"headers", std::move(headers)},
        {"protocol", req.protocol_name},  {"remote_addr", req.remote_addr},
        {"body_length", body_length},
    };
    // Paths are raw decoded bytes: invalid UTF-8 is replaced rather than failing the dump.
    std::string body = doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    body += '\n';
    co_return response(200, std::move(body), "application/json");
}

}  // namespace

namespace detail {

handler return_target_with_headers(int status, std::string body, std::string content_type,
                                   std::vector<std::pair<std::string, std::string>> headers) {
    auto f = std::make_shared<const fixed_response>(
        fixed_response{status, std::move(body), std::move(content_type), std::move(headers)});
    return [f](request&) { return answer_fixed(f); };
}

}  // namespace detail

handler return_target(int status, std::string body, std::string content_type) {
    return detail::return_target_with_headers(status, std::move(body), std::move(content_type), {});
}

handler redirect_target(std::string location, int status) {
    auto spec = std::make_shared<redirect_spec>();
    spec->status = status;
    // `<name>` placeholders, as werkzeug's redirect_to strings have them.
    std::string_view rest = location;
    while (!rest.empty()) {
        auto open = rest.find('<');
        auto close = open == std::string_view::npos ? open : rest.find('>', open);
        if (close == std::string_view::npos) {
            spec->pieces.push_back({false, std::string(rest)});
            break;
        }
        if (open > 0) spec->pieces.push_back({false, std::string(rest.substr(0, open))});
        spec->pieces.push_back({true, std::string(rest.substr(open + 1, close - open - 1))});
        rest.remove_prefix(close + 1);
    }
    std::shared_ptr<const redirect_spec> frozen = std::move(spec);
    return [frozen](request& req) { return answer_redirect(frozen, req); };
}

handler static_target(std::string root) {
    auto real = real_path(root);
    if (!real) {
        throw std::invalid_argument("static root '" + root + "': " + std::strerror(errno));
    }
    struct stat info {};
    if (::stat(real->c_str(), &info) != 0 || (!S_ISDIR(info.st_mode) && !S_ISREG(info.st_mode))) {
        throw std::invalid_argument("static root '" + root + "' is neither a directory nor a file");
    }
    auto st =
        std::make_shared<const static_root>(static_root{std::move(*real), S_ISREG(info.st_mode)});
    return [st](request& req) { return answer_static(st, req); };
}

handler echo_target() { return answer_echo; }

handler metrics_target() {
    return [](request&) -> task<response> {
        response r(200);
        r.headers.add("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
        r.headers.add("Cache-Control", "no-store");
        r.body = stats::exposition();
        co_return r;
    };
}

}  // namespace corgi
