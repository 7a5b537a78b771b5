// The io-thread side of a WSGI request. Each wait is one async_initiate whose handler is stored in
// the call (no allocation) and completed by the lane with a post to this io thread.
#include "python.hpp"

#include "io_bridge.hpp"

#include "call.hpp"
#include "lane.hpp"

#include <corgi/core/http_error.hpp>
#include <corgi/core/log.hpp>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/this_coro.hpp>

#include <exception>
#include <stdexcept>

namespace corgi::wsgi::detail {

namespace {

// Sends `m` to the fiber and awaits its next event.
auto next_event(call& c, lane_msg m) {
    return net::async_initiate<const net::use_awaitable_t<>, void(io_event)>(
        [&c, m](call::io_handler handler) {
            // Tracked: the io_context must not run out of work while the lane holds our handler.
            c.io_executor = net::prefer(net::get_associated_executor(handler),
                                        net::execution::outstanding_work.tracked);
            c.waiter.emplace(std::move(handler));
            c.home->send(&c, m);
        },
        net::use_awaitable);
}

// Reads the next piece of the body for the fiber (on this io thread, as body_source requires).
task<void> read_piece(call& c) {
    c.body_error_status = 0;
    c.body_piece = {};
    try {
        if (c.req->body) c.body_piece = co_await c.req->body->read_some();
    } catch (const http_error& e) {
        c.body_error_status = e.status();
        c.body_error = e.detail();
    } catch (const std::exception& e) {
        c.body_error_status = 400;
        c.body_error = e.what();
    }
}

response unavailable() {
    response r(503);
    r.headers.add("Content-Type", "text/plain; charset=utf-8");
    r.body = std::string("503 Service Unavailable: the Python runtime is not running\n");
    return r;
}

// Owns the io side's reference to a streamed call. Destroyed without reaching the end (a HEAD
// response, a connection that failed before the body, a write that threw): tells the fiber to stop
// and close().
struct stream_state {
    call* c;
    std::shared_ptr<const app_entry> app;
    bool started = false;
    stream_state(call* cp, std::shared_ptr<const app_entry> a) : c(cp), app(std::move(a)) {}
    stream_state(const stream_state&) = delete;
    stream_state& operator=(const stream_state&) = delete;
    ~stream_state() {
        lane* home = c->home;
        if (!c->stream_finished) {
            c->stream_finished = true;
            home->send(c, lane_msg::abort);
        }
        home->release_call(c);
    }
};

task<void> produce(std::shared_ptr<stream_state> state, body_writer& writer) {
    if (state->started) throw std::logic_error("a WSGI response body can only be sent once");
    state->started = true;
    call& c = *state->c;
    io_event ev = io_event::chunk;  // the first chunk came with the response
    for (;;) {
        switch (ev) {
            case io_event::chunk: {
                bool written = false;
                try {
                    co_await writer.write(c.chunk);
                    written = true;
                } catch (...) {
                    // The client is gone: the fiber must close() the iterable; then the error goes
                    // on up.
                    c.stream_finished = true;
                    c.home->send(&c, lane_msg::abort);
                    throw;
                }
                if (written) ev = co_await next_event(c, lane_msg::next_chunk);
                break;
            }
            case io_event::need_body:
                co_await read_piece(c);
                ev = co_await next_event(c, lane_msg::body_ready);
                break;
            case io_event::end:
                c.stream_finished = true;
                co_return;
            case io_event::failed:
            case io_event::response_ready:
                c.stream_finished = true;
                throw std::runtime_error(
                    "wsgi: " + state->app->spec +
                    ": the app failed after the response started; connection aborted");
        }
    }
}

task<response> serve(std::shared_ptr<const app_entry> app, request& req) {
    runtime* rt = current_runtime();
    if (!rt) co_return unavailable();
    lane& l = rt->pick_lane();
    call* c = l.acquire_call();
    c->app = app.get();
    c->req = &req;
    io_event ev = co_await next_event(*c, lane_msg::start);
    while (ev == io_event::need_body) {
        co_await read_piece(*c);
        ev = co_await next_event(*c, lane_msg::body_ready);
    }
    response res = std::move(c->resp);
    if (c->streaming) {
        auto state = std::make_shared<stream_state>(c, std::move(app));
        res.body = body_producer([state](body_writer& w) { return produce(state, w); });
    } else {
        l.release_call(c);
    }
    co_return res;
}

}  // namespace

corgi::handler make_handler(std::shared_ptr<const app_entry> app) {
    return [app = std::move(app)](request& req) { return serve(app, req); };
}

}  // namespace corgi::wsgi::detail
