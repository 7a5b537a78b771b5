// Logging: the access log (common log format, stdout, buffered and flushed in the background so a
// request never waits on a write) and the error log (stderr, unbuffered).
#pragma once

#include <cstdint>
#include <string_view>

namespace corgi {

class request;

namespace log {

// Turns the access log on or off (--disable-logging); on by default.
void set_access_log_enabled(bool enabled) noexcept;
bool access_log_enabled() noexcept;
// One line in the common log format: host - - [date] "METHOD target HTTP/x.y" status bytes
void access(const request& req, int status, std::uint64_t body_bytes) noexcept;
// Writes buffered access-log lines now (also done every 100 ms and at exit).
void flush() noexcept;

// "[corgi] <level>: message" on stderr.
void error(std::string_view message) noexcept;
void warning(std::string_view message) noexcept;
void info(std::string_view message) noexcept;

}  // namespace log
}  // namespace corgi
