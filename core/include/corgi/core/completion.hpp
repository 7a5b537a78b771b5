// The two points every request passes, whatever carried it (HTTP, uwsgi, FastCGI, SCGI) and
// whatever answered it (a C++ handler, a WSGI app, a built-in target, a refusal of the protocol
// layer): begin_request once its head is known, request_done once its response was sent, cut
// short or lost. Access logs, metrics and stats are fed from request_done and nowhere else.
#pragma once

#include <corgi/core/request.hpp>

#include <chrono>
#include <cstdint>
#include <functional>

namespace corgi {

struct request_outcome {
    int status = 0;               // the status sent (or that would have been sent)
    std::uint64_t bytes_out = 0;  // response body bytes written
    bool aborted = false;         // the response did not reach its end (client gone, framing)
};

// Stamps the request's start and gives it its id: the peer's X-Request-Id when the peer is a
// trusted proxy (--forwarded-allow-ips) and the value is a plausible id (1 to 128 of
// [A-Za-z0-9._:-]), otherwise 128 random bits in hex. Idempotent for one request.
void begin_request(request& req, bool trusted_peer);

// The request is over: the access log line is written and the observers are called, on the
// calling (io) thread. Never throws.
void request_done(const request& req, const request_outcome& outcome) noexcept;

// Called for every completed request with its duration (from begin_request). Register before
// the server runs; observers must be cheap and must not throw.
using completion_observer =
    std::function<void(const request&, const request_outcome&, std::chrono::nanoseconds)>;
void add_completion_observer(completion_observer observer);

// 32 lowercase hex digits from a per-thread generator (no system call, no lock).
void generate_request_id(std::string& out);

}  // namespace corgi
