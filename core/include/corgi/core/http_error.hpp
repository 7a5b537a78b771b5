// Exceptions that carry an HTTP status. A handler throws them; the one place that turns exceptions
// into responses (make_error_response) maps them. Any other exception becomes a 500 whose details
// are logged, not sent.
#pragma once

#include <stdexcept>
#include <string>

namespace corgi {

class http_error : public std::runtime_error {
  public:
    http_error(int status, std::string detail = {});
    int status() const noexcept { return status_; }
    // What the client may see: the detail given, or the status's reason phrase.
    const std::string& detail() const noexcept { return detail_; }

  private:
    int status_;
    std::string detail_;
};

#define CORGI_DEFINE_HTTP_ERROR(name, code)                                             \
    struct name : http_error {                                                          \
        explicit name(std::string detail = {}) : http_error(code, std::move(detail)) {} \
    }
CORGI_DEFINE_HTTP_ERROR(bad_request, 400);
CORGI_DEFINE_HTTP_ERROR(forbidden, 403);
CORGI_DEFINE_HTTP_ERROR(not_found, 404);
CORGI_DEFINE_HTTP_ERROR(method_not_allowed, 405);
CORGI_DEFINE_HTTP_ERROR(payload_too_large, 413);
CORGI_DEFINE_HTTP_ERROR(request_header_fields_too_large, 431);
CORGI_DEFINE_HTTP_ERROR(internal_server_error, 500);
CORGI_DEFINE_HTTP_ERROR(not_implemented, 501);
CORGI_DEFINE_HTTP_ERROR(service_unavailable, 503);
#undef CORGI_DEFINE_HTTP_ERROR

// The reason phrase of a status code ("Not Found"), "Unknown" for codes it does not know.
const char* reason_phrase(int status) noexcept;

}  // namespace corgi
