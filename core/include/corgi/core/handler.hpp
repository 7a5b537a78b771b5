// What a handler is: a coroutine from a request to a response. A free function, a lambda or a small
// class with operator() all convert to it. C++ handlers run on the io thread that owns the
// connection.
#pragma once

#include <corgi/core/request.hpp>
#include <corgi/core/response.hpp>

#include <exception>
#include <functional>

namespace corgi {

using handler = std::function<task<response>(request&)>;

// The one place exceptions become responses: http_error -> its status and detail; anything else ->
// 500 with the details written to the error log (never to the client).
response make_error_response(std::exception_ptr error, const request& req) noexcept;

}  // namespace corgi
