// One request on its way through a Python lane: the exchange between the io thread that owns the
// connection and the fiber that runs the app. Each side only touches its own fields, and they take
// turns: the io side awaits exactly one event while the fiber runs, the fiber waits for exactly one
// message while the io side works.
#pragma once

#include "python.hpp"

#include <corgi/core/request.hpp>
#include <corgi/core/response.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace corgi::wsgi::detail {

class lane;
class fiber;
struct app_entry;

// Fiber -> io thread.
enum class io_event : std::uint8_t {
    need_body,       // read the next piece of the request body, then send body_ready
    response_ready,  // `resp` is complete (string or file body), or streaming with `chunk` as first
                     // piece
    chunk,           // write `chunk`, then send next_chunk
    end,             // the streamed body is complete
    failed,          // the app failed after the headers went out: abort the connection
};

// Io thread -> fiber.
enum class lane_msg : std::uint8_t {
    start,       // run the app
    body_ready,  // `body_piece` (or `body_error_status`) holds the result of the read
    next_chunk,  // `chunk` was written: produce the next one
    abort,       // the client is gone (or the body will never be sent): close the iterable and stop
};

struct call {
    using io_handler = net::async_result<net::use_awaitable_t<>, void(io_event)>::handler_type;

    // --- set by the io side before the start message ---
    lane* home = nullptr;
    const app_entry* app = nullptr;
    request* req = nullptr;

    // --- io side only ---
    std::optional<io_handler> waiter;  // the io coroutine awaiting the next event
    net::any_io_executor io_executor;
    bool stream_finished = false;

    // --- written by the io side, read by the fiber after body_ready ---
    std::string_view body_piece;  // valid until the next need_body
    int body_error_status = 0;  // http_error status of a failed read (413, 400, 408), 500 otherwise
    std::string body_error;

    // --- written by the fiber, read by the io side after the event ---
    io_event event = io_event::end;
    response resp;
    bool streaming = false;
    std::string_view chunk;  // points into chunk_object

    // --- fiber side only ---
    lane_msg message = lane_msg::start;  // the last message received
    std::uint64_t exchange_token = 0;    // the runner's wait token for that message
    fiber* runner = nullptr;
    py_ref chunk_object;        // keeps `chunk` alive while the io thread writes it
    bool io_released = false;   // the io side will send no more messages and await no more events
    bool headers_set = false;   // start_response called
    bool headers_sent = false;  // the response went to the io side
    bool body_eof = false;
    std::string
        input_buffer;  // wsgi.input: bytes received and not yet read by the app (from input_pos)
    std::size_t input_pos = 0;
    int failed_read_status =
        0;  // a body read failed with this status: the app's exception maps to it

    // Both sides hold a reference; the last to let go returns the call to its lane's pool.
    std::atomic<int> refs{0};

    // Back to the pristine state (fiber side, when the call is reused).
    void reset() noexcept;
};

}  // namespace corgi::wsgi::detail
