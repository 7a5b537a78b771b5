// The response a handler returns: status, headers and one of three bodies (bytes in memory, a range
// of an open file, or a producer coroutine that writes chunks). The protocol adds Content-Length
// when the size is known, and otherwise frames the body by chunks (HTTP/1.1) or by closing the
// connection.
#pragma once

#include <corgi/core/header_map.hpp>
#include <corgi/core/task.hpp>

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace corgi {

// Given to a streaming body's producer; each write goes out as it is produced (a chunk on
// HTTP/1.1).
class body_writer {
  public:
    virtual ~body_writer() = default;
    virtual task<void> write(std::string_view data) = 0;
};

// A streaming body. If it throws after the headers have gone out, the connection is aborted so that
// the client sees a truncated response, never a false success.
using body_producer = std::function<task<void>(body_writer&)>;

// An owned file descriptor (closed on destruction), so a response can carry an open file across
// threads.
class file_descriptor {
  public:
    file_descriptor() = default;
    explicit file_descriptor(int fd) noexcept : fd_(fd) {}
    file_descriptor(file_descriptor&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    file_descriptor& operator=(file_descriptor&& o) noexcept;
    file_descriptor(const file_descriptor&) = delete;
    file_descriptor& operator=(const file_descriptor&) = delete;
    ~file_descriptor();
    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }

  private:
    int fd_ = -1;
};

// `length` bytes of `file` from `offset`: sent with sendfile where the transport allows it.
struct file_range {
    file_descriptor file;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
};

class response {
  public:
    using body_type = std::variant<std::string, file_range, body_producer>;

    int status = 200;
    // The status line's reason when it is not the standard one for `status` (a WSGI app's "299
    // Custom"); empty: the standard phrase.
    std::string reason;
    header_map headers;
    body_type body;
    // Who made the response, for error logs ("wsgi app hello:app"); empty: the route's handler. It
    // must outlive the sending of the response (a WSGI app's name lives as long as its handler).
    std::string_view origin;

    response() = default;
    explicit response(int status_code) : status(status_code) {}
    response(int status_code, std::string body_text, std::string_view content_type);

    static response text(std::string body, int status = 200);
    static response html(std::string body, int status = 200);
    static response json(const nlohmann::json& value, int status = 200);
    // 302 by default; 301, 303, 307 and 308 are the other sensible codes.
    static response redirect(std::string_view location, int status = 302);
    // "404 Not Found\n", or the detail when given, as text/plain.
    static response error(int status, std::string_view detail = {});
    static response stream(body_producer producer,
                           std::string_view content_type = "application/octet-stream",
                           int status = 200);
    // The whole file (throws not_found when it cannot be opened).
    static response file(const std::string& path,
                         std::string_view content_type = "application/octet-stream");

    // Bytes of the body when they are known up front (string or file), else nullopt.
    std::optional<std::uint64_t> known_length() const noexcept;
};

}  // namespace corgi
