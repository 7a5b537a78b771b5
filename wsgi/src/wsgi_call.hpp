// The fiber side of a WSGI request: environ, start_response, wsgi.input, the response iterable,
// failures.
#pragma once

#include "python.hpp"

namespace corgi::wsgi::detail {

class fiber;
struct call;

// Runs the app for `c` on fiber `f` (its thread state current, GIL held) up to the end of the
// response body or the client's departure; always calls the iterable's close(). Never throws.
void run_wsgi_call(fiber& f, call& c) noexcept;

// Inside the request's fiber: sends a non-empty bytes object to the client, handing the response
// over first when the headers have not gone yet; suspends until the io thread has written it
// (backpressure). Returns false when the client is gone (the app should stop producing).
bool send_chunk(call& c, PyObject* bytes);
// Whether the caller runs on the request's own fiber, the only place that may wait for the io
// side. Otherwise false with a RuntimeError saying `what` and `advice`: a step of a coroutine on
// the lane's asyncio loop, or another thread, would switch away from the wrong context and crash.
bool on_request_fiber(const call& c, const char* what, const char* advice);
// Inside the request's fiber: appends the next piece of the request body to c.input_buffer. Returns
// 1, 0 at the end of the body, -1 with a Python exception (client gone, body too large, timeout,
// called outside the request's fiber).
int read_more(call& c);

// corgi.RequestTimeout (a BaseException subclass, so `except Exception` in apps lets it through),
// created on first use; GIL held.
PyObject* request_timeout_type();
// Raises RequestTimeout in the request (it ran past its deadline; the client got 504) and
// returns nullptr, for suspension points to `return` it.
PyObject* raise_request_timeout(call& c);
// The io side gave up at the deadline and RequestTimeout was not raised yet: raises it (true).
bool raise_if_timed_out(call& c);
// A RequestTimeout the watchdog posted on the current thread state and that bytecode has not
// reached yet: raises it now (true), consumed the way CPython consumes it.
bool take_posted_timeout();
// Creates RequestTimeout and what take_posted_timeout() needs; GIL held, before any request.
void init_deadlines();

// Between two requests on the same fiber: no exception state, no threading.local values survive.
void reset_thread_state(PyThreadState* ts) noexcept;

}  // namespace corgi::wsgi::detail
