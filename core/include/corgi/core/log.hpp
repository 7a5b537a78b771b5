// Logging: the access log (common log format, stdout, buffered and flushed in the background so a
// request never waits on a write) and the error log (stderr, unbuffered; Gunicorn's levels, text or
// one JSON object per line).
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

// --- error log --------------------------------------------------------------------------------

// Gunicorn's levels (--log-level), least severe first.
enum class level { debug, info, warning, error, critical };

// Lines below `name` are dropped: "debug", "info" (the default), "warning", "error" or "critical",
// in any case (Gunicorn lowercases it). Throws std::invalid_argument naming the bad value and the
// valid ones.
void set_level(std::string_view name);
// Checks a level without installing it (for --check-config).
void validate_level(std::string_view name);
// Whether a line at `l` is written now: one relaxed atomic load. For callers that would build an
// expensive message only to have it dropped.
bool enabled(level l) noexcept;

// The error log's format: "text" (the default: "[corgi] <level>: message", then ":" and the
// traceback on the next lines) or "json" (one object per line: "time" (ISO 8601 UTC, milliseconds),
// "level", "pid", "message", and "request_id" and "traceback" when the line has them; every value
// escaped, invalid UTF-8 included, so no message can split or forge a line). Throws
// std::invalid_argument naming the bad value and the valid ones.
void set_error_format(std::string_view name);
// Checks a format without installing it (for --check-config).
void validate_error_format(std::string_view name);

// The request an error line is about, so the JSON format gives its id a field of its own (the
// text is the caller's message, unchanged). From the request, or from the id alone where the line
// is written after the request object has moved on.
struct for_request {
    for_request(const request& req) noexcept;  // implicit: log::error(req, "...")
    explicit for_request(std::string_view request_id) noexcept : id(request_id) {}
    std::string_view id;
};

// One line at each level; nothing is formatted when the level is below set_level's. `traceback`:
// a Python traceback (fetch_traceback()), kept out of the message so JSON has it as one field.
void debug(std::string_view message) noexcept;
void debug(std::string_view message, std::string_view traceback) noexcept;
void debug(const for_request& req, std::string_view message,
           std::string_view traceback = {}) noexcept;
void info(std::string_view message) noexcept;
void info(std::string_view message, std::string_view traceback) noexcept;
void info(const for_request& req, std::string_view message,
          std::string_view traceback = {}) noexcept;
void warning(std::string_view message) noexcept;
void warning(std::string_view message, std::string_view traceback) noexcept;
void warning(const for_request& req, std::string_view message,
             std::string_view traceback = {}) noexcept;
void error(std::string_view message) noexcept;
void error(std::string_view message, std::string_view traceback) noexcept;
void error(const for_request& req, std::string_view message,
           std::string_view traceback = {}) noexcept;
void critical(std::string_view message) noexcept;
void critical(std::string_view message, std::string_view traceback) noexcept;
void critical(const for_request& req, std::string_view message,
              std::string_view traceback = {}) noexcept;

}  // namespace log
}  // namespace corgi
