// The request a handler sees, the same whatever protocol carried it (HTTP/1.1, uwsgi, FastCGI,
// SCGI). A connection owns one request object and reuses it, so its strings and vectors keep their
// capacity.
#pragma once

#include <corgi/core/header_map.hpp>
#include <corgi/core/task.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace corgi {

// A route argument, typed by its converter: int -> int64, float -> double, every other converter ->
// string.
using route_value = std::variant<std::string, std::int64_t, double>;
using route_args = std::vector<std::pair<std::string, route_value>>;

// Supplies a request body as it arrives; each protocol implements it. Reading is lazy: a body
// nobody reads is discarded by the protocol after the handler returns (and `Expect: 100-continue`
// is answered on the first read).
class body_source {
  public:
    virtual ~body_source() = default;
    // The next piece of the body, valid until the next call; an empty view once the body is
    // complete. Throws http_error: 413 past the body limit, 400 for a malformed or truncated body
    // (client gone), 408 on timeout.
    virtual task<std::string_view> read_some() = 0;

    // Body bytes handed out so far (the request's bytes in, for logs and metrics).
    std::uint64_t received() const noexcept { return received_; }

  protected:
    std::uint64_t received_ = 0;  // implementations add each piece they return
};

class request {
  public:
    // --- the request line, as parsed ---
    std::string method;        // "GET"
    std::string target;        // raw request target: "/a%20b?x=1"
    std::string path;          // percent-decoded path, raw bytes: "/a b"
    std::string query_string;  // raw, undecoded: "x=1"
    int version = 11;          // 11 for HTTP/1.1, 10 for HTTP/1.0
    header_map headers;

    // --- where it came from ---
    std::string scheme = "http";  // "https" when a proxy says so (HTTPS var)
    std::string remote_addr;      // "127.0.0.1", "::1", or "" on a unix socket
    std::uint16_t remote_port = 0;
    std::string server_name;  // local address, or SERVER_NAME from a proxy
    std::uint16_t server_port = 0;
    std::string protocol_name =
        "http";  // which listener protocol carried it: http, uwsgi, fastcgi, scgi
    // Variables a proxy sent that have no field above (uwsgi_param, fastcgi_param...): WSGI copies
    // them to environ.
    std::vector<std::pair<std::string, std::string>> proxy_vars;

    // --- routing: set by the URL map ---
    // Mounts move the matched prefix from path_info to script_name (WSGI's split). Start:
    // script_name from the proxy ("" on direct HTTP), path_info = path.
    std::string script_name;
    std::string path_info;
    std::string endpoint;
    route_args args;
    // Set by the dispatcher when a deadline applies (--harakiri, the route's "timeout"): when the
    // handler started and how long it may run. time_limit is 0 when the request has no deadline.
    std::chrono::steady_clock::time_point handler_started{};
    std::chrono::milliseconds time_limit{0};

    // --- body ---
    std::optional<std::uint64_t> content_length;  // declared length; nullopt when chunked or absent
    bool chunked = false;         // body framed by chunks; length unknown until the end
    body_source* body = nullptr;  // null when the request has no body

    // A route argument converted to T (integral, floating point, std::string or std::string_view).
    // Throws std::out_of_range when absent, std::invalid_argument when the converter produced
    // another type.
    template <class T>
    T arg(std::string_view name) const;
    const route_value* find_arg(std::string_view name) const noexcept;

    // Query parameters, decoded (+ as space), parsed on first use.
    const std::vector<std::pair<std::string, std::string>>& query() const;
    std::optional<std::string_view> query_param(std::string_view name) const;

    bool has_body() const noexcept { return body != nullptr; }
    // The next piece of the body (empty at the end, or when there is no body).
    task<std::string_view> read_some();
    // The whole body; throws payload_too_large (413) when it exceeds `limit` bytes.
    task<std::string> read_all(std::size_t limit = 8 * 1024 * 1024);

    // Empties every field but keeps capacity: called by the connection before parsing the next
    // request.
    void reset() noexcept;

    // --- set by begin_request() (completion.hpp) ---
    // The request id: the trusted proxy's X-Request-Id, or 32 random hex digits. Also in the
    // response's X-Request-Id, the access log, environ["HTTP_X_REQUEST_ID"] and
    // corgi.request_id().
    const std::string& id() const noexcept { return id_; }
    void set_id(std::string_view id) { id_.assign(id); }
    std::string& id_storage() noexcept { return id_; }
    std::chrono::steady_clock::time_point started() const noexcept { return started_; }
    void set_started(std::chrono::steady_clock::time_point t) noexcept { started_ = t; }

  private:
    std::string id_;
    std::chrono::steady_clock::time_point started_{};
    mutable std::vector<std::pair<std::string, std::string>> query_;
    mutable bool query_parsed_ = false;
};

template <class T>
T request::arg(std::string_view name) const {
    const route_value* v = find_arg(name);
    if (!v) throw std::out_of_range("no route argument named " + std::string(name));
    if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, std::string_view>) {
        if (auto* s = std::get_if<std::string>(v)) return T(*s);
        throw std::invalid_argument("route argument " + std::string(name) + " is not a string");
    } else if constexpr (std::is_integral_v<T>) {
        if (auto* i = std::get_if<std::int64_t>(v)) return static_cast<T>(*i);
        throw std::invalid_argument("route argument " + std::string(name) + " is not an integer");
    } else if constexpr (std::is_floating_point_v<T>) {
        if (auto* d = std::get_if<double>(v)) return static_cast<T>(*d);
        if (auto* i = std::get_if<std::int64_t>(v)) return static_cast<T>(*i);
        throw std::invalid_argument("route argument " + std::string(name) + " is not a number");
    } else {
        static_assert(sizeof(T) == 0, "request::arg<T>: unsupported type");
    }
}

// Percent-decodes `in` (and '+' to space when `plus_as_space`); invalid escapes are kept as they
// are.
std::string percent_decode(std::string_view in, bool plus_as_space = false);
// The same into `out` (replacing its contents, reusing its capacity).
void percent_decode_into(std::string_view in, std::string& out, bool plus_as_space = false);
// Percent-encodes everything but unreserved characters and those in `safe`.
std::string percent_encode(std::string_view in, std::string_view safe = "/");

}  // namespace corgi
