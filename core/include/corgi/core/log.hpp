// Logging: the access log (common log format, stdout, buffered and flushed in the background so a
// request never waits on a write) and the error log (stderr, unbuffered).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace corgi {

class request;
struct request_outcome;

namespace log {

// Turns the access log on or off (--disable-logging); on by default.
void set_access_log_enabled(bool enabled) noexcept;
bool access_log_enabled() noexcept;
// The access log's format: "common" (the default: host - - [date] "METHOD target HTTP/x.y"
// status bytes, then the request id), "combined" (common + "referer" "user-agent", then the id),
// "json" (one object per line, every field escaped) or a template of literal text and
// {placeholders} (docs/observability.md lists them; {header:NAME} is any request header).
// Throws std::invalid_argument naming an unknown placeholder.
void set_access_log_format(std::string_view format);
// Checks a format without installing it (for --check-config).
void validate_access_log_format(std::string_view format);
// One line for a finished request (called by request_done only).
void access(const request& req, const request_outcome& outcome,
            std::chrono::nanoseconds duration) noexcept;
// Writes buffered access-log lines now (also done every 100 ms and at exit).
void flush() noexcept;

// What an error line about one request says of it: "GET /x, route 'name', request 4f09...".
std::string request_context(const request& req);

// "[corgi] <level>: message" on stderr.
void error(std::string_view message) noexcept;
void warning(std::string_view message) noexcept;
void info(std::string_view message) noexcept;

}  // namespace log
}  // namespace corgi
