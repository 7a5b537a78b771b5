// Access log (buffered, flushed in the background) and error log (stderr, immediate; a level and
// a text or JSON format).
#include <corgi/core/completion.hpp>
#include <corgi/core/log.hpp>
#include <corgi/core/request.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <unistd.h>

namespace corgi::log {

namespace {

std::atomic<bool> access_enabled{true};

// The access log buffer: appended under a mutex (cheap: no syscall), written by a background thread
// every 100 ms or when it grows past 64 KiB, so the request path never waits on stdout.
class access_buffer {
  public:
    access_buffer()
        : writer_([this] {
              ::pthread_setname_np(::pthread_self(), "corgi-log");
              run();
          }) {}
    ~access_buffer() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        cv_.notify_one();
        writer_.join();
    }
    void append(const char* data, std::size_t n) {
        bool wake = false;
        {
            std::lock_guard lock(mutex_);
            pending_.append(data, n);
            wake = pending_.size() > 64 * 1024;
        }
        if (wake) cv_.notify_one();
    }
    void flush() {
        std::string out;
        {
            std::lock_guard lock(mutex_);
            out.swap(pending_);
        }
        write_all(out);
    }

  private:
    static void write_all(const std::string& s) {
        std::size_t off = 0;
        while (off < s.size()) {
            ssize_t n = ::write(STDOUT_FILENO, s.data() + off, s.size() - off);
            if (n <= 0) return;  // stdout closed: the log is lost, the server is not
            off += static_cast<std::size_t>(n);
        }
    }
    void run() {
        std::unique_lock lock(mutex_);
        while (!stop_) {
            cv_.wait_for(lock, std::chrono::milliseconds(100));
            std::string out;
            out.swap(pending_);
            lock.unlock();
            write_all(out);
            lock.lock();
        }
        write_all(pending_);
        pending_.clear();
    }
    std::mutex mutex_;
    std::condition_variable cv_;
    std::string pending_;
    bool stop_ = false;
    std::thread writer_;
};

access_buffer& buffer() {
    static access_buffer b;
    return b;
}

// The current UTC time in `format`, recomputed once a second per thread and format.
template <const char* format>
const char* cached_time() {
    thread_local std::time_t cached_second = 0;
    thread_local char text[40];
    std::time_t now = std::time(nullptr);
    if (now != cached_second) {
        cached_second = now;
        std::tm tm{};
        ::gmtime_r(&now, &tm);
        std::strftime(text, sizeof text, format, &tm);
    }
    return text;
}
constexpr char clf_format[] = "[%d/%b/%Y:%H:%M:%S +0000]";  // [10/Oct/2000:13:55:36 +0000]
constexpr char iso_format[] = "%Y-%m-%dT%H:%M:%SZ";
const char* clf_time() { return cached_time<clf_format>(); }
const char* iso_time() { return cached_time<iso_format>(); }

}  // namespace

void set_access_log_enabled(bool enabled) noexcept { access_enabled.store(enabled); }
bool access_log_enabled() noexcept { return access_enabled.load(std::memory_order_relaxed); }

namespace {

// --- access log formats -----------------------------------------------------------------------

enum class field {
    literal,
    remote_addr,
    remote_port,
    time,
    time_iso,
    method,
    uri,
    path,
    query,
    protocol,
    status,
    bytes,
    bytes_in,
    msecs,
    usecs,
    request_id,
    route,
    scheme,
    listener,
    pid,
    header
};

struct segment {
    field what = field::literal;
    std::string text;  // the literal, or the header name
};

enum class format_kind { common, combined, json, custom };

struct access_format {
    format_kind kind = format_kind::common;
    std::vector<segment> segments;  // custom only
};

access_format parse_format(std::string_view spec) {
    access_format f;
    if (spec == "common") return f;
    if (spec == "combined") {
        f.kind = format_kind::combined;
        return f;
    }
    if (spec == "json") {
        f.kind = format_kind::json;
        return f;
    }
    f.kind = format_kind::custom;
    static const std::pair<std::string_view, field> names[] = {{"remote_addr", field::remote_addr},
                                                               {"remote_port", field::remote_port},
                                                               {"time", field::time},
                                                               {"time_iso", field::time_iso},
                                                               {"method", field::method},
                                                               {"uri", field::uri},
                                                               {"path", field::path},
                                                               {"query", field::query},
                                                               {"protocol", field::protocol},
                                                               {"status", field::status},
                                                               {"bytes", field::bytes},
                                                               {"bytes_in", field::bytes_in},
                                                               {"msecs", field::msecs},
                                                               {"usecs", field::usecs},
                                                               {"request_id", field::request_id},
                                                               {"route", field::route},
                                                               {"scheme", field::scheme},
                                                               {"listener", field::listener},
                                                               {"pid", field::pid}};
    std::string literal;
    for (std::size_t i = 0; i < spec.size(); ++i) {
        const char c = spec[i];
        if (c == '{' && i + 1 < spec.size() && spec[i + 1] == '{') {  // "{{" is a literal '{'
            literal += '{';
            ++i;
            continue;
        }
        if (c == '}' && i + 1 < spec.size() && spec[i + 1] == '}') {
            literal += '}';
            ++i;
            continue;
        }
        if (c != '{') {
            literal += c;
            continue;
        }
        const auto close = spec.find('}', i);
        if (close == std::string_view::npos)
            throw std::invalid_argument("access log format: '{' without '}' at offset " +
                                        std::to_string(i));
        const std::string_view name = spec.substr(i + 1, close - i - 1);
        if (!literal.empty()) f.segments.push_back({field::literal, std::move(literal)});
        literal.clear();
        if (name.starts_with("header:") && name.size() > 7) {
            f.segments.push_back({field::header, std::string(name.substr(7))});
        } else {
            bool known = false;
            for (const auto& [n, what] : names)
                if (n == name) {
                    f.segments.push_back({what, {}});
                    known = true;
                }
            if (!known)
                throw std::invalid_argument("access log format: unknown placeholder {" +
                                            std::string(name) + "}");
        }
        i = close;
    }
    if (!literal.empty()) f.segments.push_back({field::literal, std::move(literal)});
    return f;
}

access_format& current_format() {
    static access_format f;
    return f;
}

// As nginx's default escaping: '"', '\' and bytes outside printable ASCII become \xHH, so no
// value can end a quoted field or start a new line.
void append_escaped(std::string& out, std::string_view v) {
    static constexpr char hex[] = "0123456789ABCDEF";
    for (unsigned char c : v) {
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        } else {
            out += static_cast<char>(c);
        }
    }
}

// Length of the valid UTF-8 sequence at s[i], 0 when the byte does not start one.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
    const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = b(i);
    // 0xf5-0xff never start one (they would encode past U+10FFFF).
    std::size_t n = c >= 0xf0 && c <= 0xf4  ? 4
                    : c >= 0xe0 && c < 0xf0 ? 3
                    : c >= 0xc2 && c < 0xe0 ? 2
                                            : 0;
    if (n == 0 || i + n > s.size()) return 0;
    for (std::size_t k = 1; k < n; ++k)
        if ((b(i + k) & 0xc0) != 0x80) return 0;
    if (n == 3 && c == 0xe0 && b(i + 1) < 0xa0) return 0;   // overlong
    if (n == 3 && c == 0xed && b(i + 1) >= 0xa0) return 0;  // surrogates
    if (n == 4 && c == 0xf0 && b(i + 1) < 0x90) return 0;
    if (n == 4 && c == 0xf4 && b(i + 1) >= 0x90) return 0;
    return n;
}

// A JSON string's content: valid UTF-8 is kept, every other byte and every control character is
// a \u00XX escape, so each line stays one valid JSON document whatever a client sent.
void append_json(std::string& out, std::string_view v) {
    static constexpr char hex[] = "0123456789abcdef";
    for (std::size_t i = 0; i < v.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(v[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
        } else if (std::size_t n = c >= 0x80 ? utf8_sequence(v, i) : 0; n > 0) {
            out.append(v.substr(i, n));
            i += n - 1;
        } else {
            out += "\\u00";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        }
    }
}

// The serving process's pid, read once per thread (io threads start after a worker's fork).
int current_pid() {
    thread_local int pid = 0;
    if (pid == 0) pid = static_cast<int>(::getpid());
    return pid;
}

void append_number(std::string& out, std::uint64_t n) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
    out.append(buf, end);
}

void append_millis(std::string& out, std::chrono::nanoseconds d) {
    const std::uint64_t us = static_cast<std::uint64_t>(std::max<std::int64_t>(
        0, std::chrono::duration_cast<std::chrono::microseconds>(d).count()));
    append_number(out, us / 1000);
    out += '.';
    const unsigned frac = static_cast<unsigned>(us % 1000);
    out += static_cast<char>('0' + frac / 100);
    out += static_cast<char>('0' + frac / 10 % 10);
    out += static_cast<char>('0' + frac % 10);
}

std::string_view or_dash(std::string_view v) { return v.empty() ? std::string_view("-") : v; }

std::string_view protocol_text(const request& req) {
    return req.version == 10 ? "HTTP/1.0" : "HTTP/1.1";
}

void append_field(std::string& out, const segment& seg, const request& req,
                  const request_outcome& o, std::chrono::nanoseconds d) {
    switch (seg.what) {
        case field::literal:
            out += seg.text;
            break;
        case field::remote_addr:
            append_escaped(out, or_dash(req.remote_addr));
            break;
        case field::remote_port:
            append_number(out, req.remote_port);
            break;
        case field::time:
            out += clf_time();
            break;
        case field::time_iso:
            out += iso_time();
            break;
        case field::method:
            append_escaped(out, or_dash(req.method));
            break;
        case field::uri:
            append_escaped(out, or_dash(req.target));
            break;
        case field::path:
            append_escaped(out, or_dash(req.path));
            break;
        case field::query:
            append_escaped(out, or_dash(req.query_string));
            break;
        case field::protocol:
            out += protocol_text(req);
            break;
        case field::status:
            append_number(out, static_cast<std::uint64_t>(o.status));
            break;
        case field::bytes:
            append_number(out, o.bytes_out);
            break;
        case field::bytes_in:
            append_number(out, req.body ? req.body->received() : 0);
            break;
        case field::msecs:
            append_millis(out, d);
            break;
        case field::usecs:
            append_number(out,
                          static_cast<std::uint64_t>(
                              std::chrono::duration_cast<std::chrono::microseconds>(d).count()));
            break;
        case field::request_id:
            append_escaped(out, or_dash(req.id()));
            break;
        case field::route:
            append_escaped(out, or_dash(req.endpoint));
            break;
        case field::scheme:
            append_escaped(out, req.scheme);
            break;
        case field::listener:
            append_escaped(out, req.protocol_name);
            break;
        case field::pid:
            append_number(out, static_cast<std::uint64_t>(current_pid()));
            break;
        case field::header:
            append_escaped(out, or_dash(req.headers.get(seg.text)));
            break;
    }
}

void append_common(std::string& line, const request& req, const request_outcome& o) {
    append_escaped(line, or_dash(req.remote_addr));
    line += " - - ";
    line += clf_time();
    line += " \"";
    append_escaped(line, req.method);
    line += ' ';
    append_escaped(line, req.target);
    line += ' ';
    line += protocol_text(req);
    line += "\" ";
    append_number(line, static_cast<std::uint64_t>(o.status));
    line += ' ';
    if (o.bytes_out)
        append_number(line, o.bytes_out);
    else
        line += '-';
}

void append_json_line(std::string& line, const request& req, const request_outcome& o,
                      std::chrono::nanoseconds d) {
    auto str = [&](const char* key, std::string_view v, bool first = false) {
        if (!first) line += ',';
        line += '"';
        line += key;
        line += "\":\"";
        append_json(line, v);
        line += '"';
    };
    auto num = [&](const char* key, std::uint64_t v) {
        line += ",\"";
        line += key;
        line += "\":";
        append_number(line, v);
    };
    line += '{';
    str("time", iso_time(), true);
    str("remote_addr", req.remote_addr);
    str("method", req.method);
    str("uri", req.target);
    str("protocol", protocol_text(req));
    num("status", static_cast<std::uint64_t>(o.status));
    num("bytes_out", o.bytes_out);
    num("bytes_in", req.body ? req.body->received() : 0);
    line += ",\"msecs\":";
    append_millis(line, d);
    str("request_id", req.id());
    str("route", req.endpoint);
    str("listener", req.protocol_name);
    num("pid", static_cast<std::uint64_t>(current_pid()));
    str("referer", req.headers.get("Referer"));
    str("user_agent", req.headers.get("User-Agent"));
    if (o.aborted) line += ",\"aborted\":true";
    line += '}';
}

}  // namespace

std::string request_context(const request& req) {
    std::string out;
    append_escaped(out, req.method);
    out += ' ';
    append_escaped(out, req.target);
    if (!req.endpoint.empty()) {
        out += ", route '";
        append_escaped(out, req.endpoint);
        out += '\'';
    }
    if (!req.id().empty()) {
        out += ", request ";
        out += req.id();
    }
    return out;
}

void set_access_log_format(std::string_view format) { current_format() = parse_format(format); }
void validate_access_log_format(std::string_view format) { parse_format(format); }

void access(const request& req, const request_outcome& outcome,
            std::chrono::nanoseconds duration) noexcept {
    if (!access_log_enabled()) return;
    try {
        thread_local std::string line;
        line.clear();
        const access_format& f = current_format();
        switch (f.kind) {
            case format_kind::common:
                append_common(line, req, outcome);
                line += ' ';
                append_escaped(line, or_dash(req.id()));
                break;
            case format_kind::combined:
                append_common(line, req, outcome);
                line += " \"";
                append_escaped(line, or_dash(req.headers.get("Referer")));
                line += "\" \"";
                append_escaped(line, or_dash(req.headers.get("User-Agent")));
                line += "\" ";
                append_escaped(line, or_dash(req.id()));
                break;
            case format_kind::json:
                append_json_line(line, req, outcome, duration);
                break;
            case format_kind::custom:
                for (const auto& seg : f.segments) append_field(line, seg, req, outcome, duration);
                break;
        }
        line += '\n';
        buffer().append(line.data(), line.size());
    } catch (...) {
        // Logging must never fail a request.
    }
}

void flush() noexcept {
    try {
        buffer().flush();
    } catch (...) {
    }
}

// --- error log --------------------------------------------------------------------------------

namespace {

constexpr std::string_view level_names[] = {"debug", "info", "warning", "error", "critical"};

std::atomic<int> threshold{static_cast<int>(level::info)};
std::atomic<bool> error_json{false};

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return (x >= 'A' && x <= 'Z' ? x - 'A' + 'a' : x) == y;
           });
}

level parse_level(std::string_view name) {
    for (std::size_t i = 0; i < std::size(level_names); ++i)
        if (iequals(name, level_names[i])) return static_cast<level>(i);
    throw std::invalid_argument("log level: unknown level '" + std::string(name) +
                                "' (expected debug, info, warning, error or critical)");
}

bool parse_error_format(std::string_view name) {
    if (name == "text") return false;
    if (name == "json") return true;
    throw std::invalid_argument("error log format: unknown format '" + std::string(name) +
                                "' (expected text or json)");
}

std::string_view without_trailing_newlines(std::string_view s) {
    while (!s.empty() && s.back() == '\n') s.remove_suffix(1);
    return s;
}

// "2024-05-01T12:00:00.123Z", from one clock reading (seconds and milliseconds agree).
void append_iso_millis(std::string& out) {
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now).count();
    const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    ::gmtime_r(&seconds, &tm);
    char text[32];
    const std::size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
    out.append(text, n);
    const unsigned frac = static_cast<unsigned>(ms % 1000);
    out += '.';
    out += static_cast<char>('0' + frac / 100);
    out += static_cast<char>('0' + frac / 10 % 10);
    out += static_cast<char>('0' + frac % 10);
    out += 'Z';
}

void append_error_json(std::string& line, level l, std::string_view request_id,
                       std::string_view message, std::string_view traceback) {
    auto str = [&](const char* key, std::string_view v) {
        line += ",\"";
        line += key;
        line += "\":\"";
        append_json(line, v);
        line += '"';
    };
    line += "{\"time\":\"";
    append_iso_millis(line);
    line += '"';
    str("level", level_names[static_cast<int>(l)]);
    // getpid() each time, not current_pid()'s per-thread cache: the main thread logs before the
    // master forks a worker and after, in both processes.
    line += ",\"pid\":";
    append_number(line, static_cast<std::uint64_t>(::getpid()));
    str("message", without_trailing_newlines(message));
    if (!request_id.empty()) str("request_id", request_id);
    traceback = without_trailing_newlines(traceback);
    if (!traceback.empty()) str("traceback", traceback);
    line += "}\n";
}

void append_error_text(std::string& line, level l, std::string_view message,
                       std::string_view traceback) {
    line += "[corgi] ";
    line += level_names[static_cast<int>(l)];
    line += ": ";
    line += message;
    if (!traceback.empty()) {
        line += ":\n";
        line += traceback;
    }
    if (line.back() != '\n') line += '\n';
}

// One write() per line, so lines of concurrent threads and processes do not interleave.
void write_error(level l, std::string_view request_id, std::string_view message,
                 std::string_view traceback) noexcept {
    if (!enabled(l)) return;
    try {
        std::string line;
        line.reserve(message.size() + traceback.size() + 96);
        if (error_json.load(std::memory_order_relaxed))
            append_error_json(line, l, request_id, message, traceback);
        else
            append_error_text(line, l, message, traceback);
        std::size_t off = 0;
        while (off < line.size()) {
            ssize_t n = ::write(STDERR_FILENO, line.data() + off, line.size() - off);
            if (n <= 0) return;  // stderr closed: the line is lost, the server is not
            off += static_cast<std::size_t>(n);
        }
    } catch (...) {
        // Logging must never fail its caller.
    }
}

}  // namespace

void set_level(std::string_view name) {
    threshold.store(static_cast<int>(parse_level(name)), std::memory_order_relaxed);
}
void validate_level(std::string_view name) { parse_level(name); }
bool enabled(level l) noexcept {
    return static_cast<int>(l) >= threshold.load(std::memory_order_relaxed);
}

void set_error_format(std::string_view name) {
    error_json.store(parse_error_format(name), std::memory_order_relaxed);
}
void validate_error_format(std::string_view name) { parse_error_format(name); }

for_request::for_request(const request& req) noexcept : id(req.id()) {}

void debug(std::string_view message) noexcept { write_error(level::debug, {}, message, {}); }
void debug(std::string_view message, std::string_view traceback) noexcept {
    write_error(level::debug, {}, message, traceback);
}
void debug(const for_request& req, std::string_view message, std::string_view traceback) noexcept {
    write_error(level::debug, req.id, message, traceback);
}
void info(std::string_view message) noexcept { write_error(level::info, {}, message, {}); }
void info(std::string_view message, std::string_view traceback) noexcept {
    write_error(level::info, {}, message, traceback);
}
void info(const for_request& req, std::string_view message, std::string_view traceback) noexcept {
    write_error(level::info, req.id, message, traceback);
}
void warning(std::string_view message) noexcept { write_error(level::warning, {}, message, {}); }
void warning(std::string_view message, std::string_view traceback) noexcept {
    write_error(level::warning, {}, message, traceback);
}
void warning(const for_request& req, std::string_view message,
             std::string_view traceback) noexcept {
    write_error(level::warning, req.id, message, traceback);
}
void error(std::string_view message) noexcept { write_error(level::error, {}, message, {}); }
void error(std::string_view message, std::string_view traceback) noexcept {
    write_error(level::error, {}, message, traceback);
}
void error(const for_request& req, std::string_view message, std::string_view traceback) noexcept {
    write_error(level::error, req.id, message, traceback);
}
void critical(std::string_view message) noexcept { write_error(level::critical, {}, message, {}); }
void critical(std::string_view message, std::string_view traceback) noexcept {
    write_error(level::critical, {}, message, traceback);
}
void critical(const for_request& req, std::string_view message,
              std::string_view traceback) noexcept {
    write_error(level::critical, req.id, message, traceback);
}

}  // namespace corgi::log
