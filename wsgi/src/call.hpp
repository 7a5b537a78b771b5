// One request on its way through a Python lane: the exchange between the io thread that owns the
// connection and the fiber that runs the app.
//
// Fiber -> io side: an outbox under `outbox_mutex` (events as bits, streamed bytes appended). The
// fiber does not wait for a small chunk to be written: it is copied into the outbox and the io side
// is woken if it waits; the fiber goes on producing. So a framework's response (Flask, Django and
// Bottle return iterables, not lists) whose iterable ends after its first chunk usually reaches the
// io side complete and goes out in one write, with no round trip back to the lane. PEP 3333's "must
// not delay a block" holds: every chunk is handed over as soon as it is produced.
// Io side -> fiber: messages through the lane's inbox (lane::send); the fiber waits for at most one
// at a time.
#pragma once

#include "python.hpp"

#include <corgi/core/request.hpp>
#include <corgi/core/response.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace corgi::wsgi::detail {

class lane;
class fiber;
struct app_entry;

// Fiber -> io side: bits of call::out_events.
enum io_event : std::uint8_t {
    response_ready = 1,  // `resp` is complete (string or file body), or streaming (body from the
                         // outbox)
    big_chunk = 2,       // write `chunk` (too big to copy), then send next_chunk
    need_body = 4,       // read the next piece of the request body, then send body_ready
    end = 8,             // the streamed body is complete
    failed = 16,         // the app failed after the headers went out: abort the connection
};

// Io thread -> fiber.
enum class lane_msg : std::uint8_t {
    start,       // run the app
    body_ready,  // `body_piece` (or `body_error_status`) holds the result of the read
    next_chunk,  // the big chunk was written, or the outbox has room again: produce the next one
    abort,       // the client is gone (or the body will never be sent): close the iterable and stop
    timeout,     // the request's deadline passed (the client got 504): raise corgi.RequestTimeout
                 // in the fiber if it waits; the watchdog (harakiri.hpp) reaches a running one
};

struct call {
    // Completed with operation_aborted when the io side's wait is cancelled (the deadline).
    using io_handler =
        net::async_result<net::use_awaitable_t<>, void(boost::system::error_code)>::handler_type;

    // Chunks up to this size are copied into the outbox and the fiber goes on; bigger ones are
    // written from the app's bytes object while the fiber waits (no copy of large bodies).
    static constexpr std::size_t max_copied_chunk = 16 * 1024;
    // The fiber waits once this many copied bytes are waiting for the io side to take them.
    static constexpr std::size_t outbox_window = 64 * 1024;

    // --- set by the io side before the start message ---
    lane* home = nullptr;
    const app_entry* app = nullptr;
    request* req = nullptr;  // the connection's: the fiber reads it only until the io side leaves
    bool has_body = false;   // req->body != nullptr, for the fiber after the io side left
    // A copy of req->id(): the fiber may outlive the io side's interest in `req` (a streamed
    // response abandoned, a deadline), and its logs and corgi.request_id() still name the request.
    std::string request_id;

    // --- the outbox: fiber -> io side, under outbox_mutex ---
    std::mutex outbox_mutex;
    std::string out_data;          // streamed bytes not yet taken by the io side
    std::uint8_t out_events = 0;   // io_event bits not yet taken
    bool out_wants_space = false;  // the fiber waits for out_data to be taken (next_chunk)
    bool io_gone = false;          // the io side takes nothing more (client gone, HEAD, failure)
    bool io_waiting = false;       // `waiter` is armed: the next post must wake it
    std::optional<io_handler> waiter;  // the io coroutine awaiting the outbox
    net::any_io_executor io_executor;  // where to wake it (tracked work while armed)

    // --- io side only ---
    std::string io_data;  // the bytes taken from the outbox, being written
    bool stream_finished = false;

    // --- written by the io side, read by the fiber after body_ready ---
    std::string_view body_piece;  // valid until the next need_body
    int body_error_status = 0;  // http_error status of a failed read (413, 400, 408), 500 otherwise
    std::string body_error;

    // --- written by the fiber, read by the io side after response_ready / big_chunk ---
    response resp;
    bool streaming = false;
    std::string_view chunk;  // the big chunk: points into chunk_object

    // --- fiber side only ---
    lane_msg message = lane_msg::start;  // the last message received
    std::uint64_t exchange_token = 0;    // the runner's wait token for that message
    fiber* runner = nullptr;
    py_ref chunk_object;        // keeps `chunk` alive while the io side writes it
    bool io_released = false;   // the fiber has posted its last event (or found the io side gone)
    bool headers_set = false;   // start_response called
    bool headers_sent = false;  // the response went to the io side
    // The app's Content-Length (-1: none or not a number) and the body bytes posted so far: a
    // streamed body known complete need not be written before the iterable's next step.
    std::int64_t declared_length = -1;
    std::uint64_t body_posted = 0;
    bool body_eof = false;
    std::string
        input_buffer;  // wsgi.input: bytes received and not yet read by the app (from input_pos)
    std::size_t input_pos = 0;
    int failed_read_status =
        0;  // a body read failed with this status: the app's exception maps to it

    // --- deadlines (--harakiri, a route's "timeout") ---
    // The io side gave up on the request at its deadline (set before it sends lane_msg::timeout).
    std::atomic<bool> timed_out{false};
    // started: a fiber has taken the request; finished: that fiber is done with it. What the
    // watchdog reads without the GIL.
    std::atomic<bool> started{false};
    std::atomic<bool> finished{false};
    // GIL held: corgi.RequestTimeout was raised in the fiber, or is pending on its thread state.
    bool timeout_raised = false;

    // Both sides, every message in the lane's inbox and the watchdog hold a reference; the last to
    // let go returns the call to its lane's pool.
    std::atomic<int> refs{0};

    // Back to the pristine state (fiber side, when the call is reused).
    void reset() noexcept;
};

}  // namespace corgi::wsgi::detail
