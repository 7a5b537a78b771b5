// HTTP errors, reason phrases, and the one place exceptions become responses.
#include <corgi/core/handler.hpp>
#include <corgi/core/http_error.hpp>
#include <corgi/core/log.hpp>

namespace corgi {

http_error::http_error(int status, std::string detail)
    : std::runtime_error(detail.empty() ? std::string(reason_phrase(status)) : detail),
      status_(status),
      detail_(detail.empty() ? std::string(reason_phrase(status)) : std::move(detail)) {}

const char* reason_phrase(int status) noexcept {
    switch (status) {
        case 100:
            return "Continue";
        case 101:
            return "Switching Protocols";
        case 200:
            return "OK";
        case 201:
            return "Created";
        case 202:
            return "Accepted";
        case 203:
            return "Non-Authoritative Information";
        case 204:
            return "No Content";
        case 205:
            return "Reset Content";
        case 206:
            return "Partial Content";
        case 300:
            return "Multiple Choices";
        case 301:
            return "Moved Permanently";
        case 302:
            return "Found";
        case 303:
            return "See Other";
        case 304:
            return "Not Modified";
        case 307:
            return "Temporary Redirect";
        case 308:
            return "Permanent Redirect";
        case 400:
            return "Bad Request";
        case 401:
            return "Unauthorized";
        case 402:
            return "Payment Required";
        case 403:
            return "Forbidden";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 406:
            return "Not Acceptable";
        case 408:
            return "Request Timeout";
        case 409:
            return "Conflict";
        case 410:
            return "Gone";
        case 411:
            return "Length Required";
        case 412:
            return "Precondition Failed";
        case 413:
            return "Content Too Large";
        case 414:
            return "URI Too Long";
        case 415:
            return "Unsupported Media Type";
        case 416:
            return "Range Not Satisfiable";
        case 417:
            return "Expectation Failed";
        case 418:
            return "I'm a teapot";
        case 422:
            return "Unprocessable Content";
        case 426:
            return "Upgrade Required";
        case 428:
            return "Precondition Required";
        case 429:
            return "Too Many Requests";
        case 431:
            return "Request Header Fields Too Large";
        case 500:
            return "Internal Server Error";
        case 501:
            return "Not Implemented";
        case 502:
            return "Bad Gateway";
        case 503:
            return "Service Unavailable";
        case 504:
            return "Gateway Timeout";
        case 505:
            return "HTTP Version Not Supported";
        default:
            return "Unknown";
    }
}

response make_error_response(std::exception_ptr error, const request& req) noexcept {
    try {
        try {
            std::rethrow_exception(error);
        } catch (const http_error& e) {
            return response::error(e.status(), e.detail());
        } catch (const std::exception& e) {
            log::error(req, "unhandled exception in handler (" + log::request_context(req) +
                                "): " + e.what());
        } catch (...) {
            log::error(req, "unhandled non-standard exception in handler (" +
                                log::request_context(req) + ")");
        }
        return response::error(500);
    } catch (...) {
        return response(
            500);  // allocation failed while building the error: an empty 500 still answers
    }
}

}  // namespace corgi
