// Internal to protocols: sends a corgi::response over a connection, shared by every protocol. HTTP
// and uwsgi answer with an HTTP status line, SCGI and FastCGI with a CGI "Status:" header; FastCGI
// also wraps the bytes in STDOUT records, which is why the bytes go through an `output`.
#pragma once

#include <corgi/core/response.hpp>
#include <corgi/core/server.hpp>

#include <boost/asio/buffer.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace corgi::protocols::detail {

enum class head_style { http, cgi };

struct response_framing {
    head_style style = head_style::http;
    int version = 11;  // of the request: 11 or 10
    bool keep_alive =
        true;  // in: what the request allows; the response says Connection: close otherwise
    bool head_request = false;  // HEAD: headers (with the length a GET would get), no body
    bool chunked_allowed =
        true;  // HTTP/1.1 to the client; false: close-delimited (or length-delimited by the proxy)
    // An unknown-length body ends by closing the connection (HTTP, uwsgi, SCGI); FastCGI ends it
    // with END_REQUEST.
    bool length_needed_for_keep_alive = true;
    // The request answered: named in the error log when the response breaks its own framing.
    const request* req = nullptr;
};

// Where the response bytes go. The default writes to the connection's socket under its write
// deadline.
class output {
  public:
    virtual ~output() = default;
    // Writes all the buffers (a gathered write); throws boost::system::system_error when the peer
    // is gone.
    virtual task<void> write(std::span<const net::const_buffer> buffers) = 0;
    // Whether file bodies may be sent with sendfile(2) straight to the socket.
    virtual bool can_sendfile() const noexcept { return false; }
};

class socket_output final : public output {
  public:
    explicit socket_output(connection& conn) noexcept : conn_(conn) {}
    task<void> write(std::span<const net::const_buffer> buffers) override;
    bool can_sendfile() const noexcept override { return true; }
    connection& conn() noexcept { return conn_; }

  private:
    connection& conn_;
};

struct send_result {
    // The connection may serve another request.
    bool keep_alive = false;
    // For the access log.
    std::uint64_t body_bytes = 0;
    // The body ended short of what the head announced (a producer failed after the headers went
    // out, a body shorter than its Content-Length, a file that shrank): close at once, without
    // ending the response, so that the peer sees a truncated response and never a false success.
    bool aborted = false;
};

// Sends `res` (headers and first body bytes in one write when possible). `scratch` is the
// connection's reusable buffer for the head. Whatever the handler does, the bytes on the wire
// match the head: a body longer than the Content-Length the handler set is cut to it (the rest is
// dropped, a streaming producer is stopped, the error is logged and result.keep_alive is false);
// a shorter one ends in result.aborted. Never throws for a failing producer or file; throws
// system_error when writing fails.
task<send_result> send_response(output& out, response& res, const response_framing& framing,
                                std::string& scratch);

// Appends the head ("HTTP/1.1 200 OK\r\n" or "Status: 200 OK\r\n", headers, Date/Server for HTTP,
// framing headers, blank line) to `out`. `body_length` nullopt means unknown (chunked or
// close-delimited).
void append_head(std::string& out, const response& res, const response_framing& framing,
                 std::optional<std::uint64_t> body_length, bool chunked, bool keep_alive);

}  // namespace corgi::protocols::detail
