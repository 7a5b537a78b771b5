// The io-thread side of a WSGI request. Each wait is one async_initiate whose handler is stored in
// the call (no allocation) and completed by the lane with a post to this io thread.
#include "python.hpp"

#include "io_bridge.hpp"

#include "call.hpp"
#include "harakiri.hpp"
#include "lane.hpp"
#include "runtime.hpp"

#include <corgi/core/http_error.hpp>
#include <corgi/core/log.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/this_coro.hpp>

#include <exception>
#include <stdexcept>

namespace corgi::wsgi::detail {

namespace {

// Takes what the fiber has posted: the events, and the streamed bytes into c.io_data (which the
// caller has written by now). Sends next_chunk when the fiber waits for room in the outbox.
std::uint8_t take_outbox(call& c) {
    std::uint8_t events;
    bool room = false;
    c.io_data.clear();
    {
        std::lock_guard lock(c.outbox_mutex);
        events = std::exchange(c.out_events, 0);
        c.io_data.swap(c.out_data);  // both buffers keep their capacity for the next request
        room = std::exchange(c.out_wants_space, false);
    }
    if (room) c.home->send(&c, lane_msg::next_chunk);
    return events;
}

// Parks the io coroutine until the fiber posts something (lane::post_io wakes it); completes at
// once when something is there already. Cancellable (the dispatcher cancels a request at its
// deadline): the wait then ends with operation_aborted, unless the lane has already claimed the
// waiter to wake it, in which case it ends with that wake-up and the next co_await throws.
auto outbox_posted(call& c) {
    return net::async_initiate<const net::use_awaitable_t<>, void(boost::system::error_code)>(
        [&c](call::io_handler handler) {
            auto ex = net::get_associated_executor(handler);
            {
                std::lock_guard lock(c.outbox_mutex);
                if (c.out_events == 0 && c.out_data.empty()) {
                    auto slot = net::get_associated_cancellation_slot(handler);
                    // Tracked: the io_context must not run out of work while the lane may hold
                    // our handler.
                    c.io_executor = net::prefer(ex, net::execution::outstanding_work.tracked);
                    c.waiter.emplace(std::move(handler));
                    c.io_waiting = true;
                    if (slot.is_connected()) {
                        // Emitted on this io thread, where the lane's wake-up also runs.
                        slot.assign([&c](net::cancellation_type) {
                            std::unique_lock guard(c.outbox_mutex);
                            if (!std::exchange(c.io_waiting, false)) return;  // being woken
                            guard.unlock();
                            auto waiting = std::move(*c.waiter);
                            c.waiter.reset();
                            auto executor = std::move(c.io_executor);
                            c.io_executor = {};
                            // Cleared once this slot handler has returned, not from inside it.
                            net::post(executor, [h = std::move(waiting)]() mutable {
                                net::get_associated_cancellation_slot(h).clear();
                                std::move(h)(net::error::operation_aborted);
                            });
                        });
                    }
                    return;
                }
            }
            net::post(ex, [h = std::move(handler)]() mutable {
                std::move(h)(boost::system::error_code());
            });
        },
        net::use_awaitable);
}

// The fiber's next events (its bytes in c.io_data).
task<std::uint8_t> next_events(call& c) {
    for (;;) {
        const std::uint8_t events = take_outbox(c);
        if (events != 0 || !c.io_data.empty()) co_return events;
        co_await outbox_posted(c);
    }
}

// The io side gives up on the response: the fiber's next post fails and, if it waits, the abort
// wakes it, so it close()s the iterable and stops.
void abandon(call& c) {
    {
        std::lock_guard lock(c.outbox_mutex);
        c.io_gone = true;
    }
    c.home->send(&c, lane_msg::abort);
}

// The dispatcher cancelled the request at its deadline (the client gets 504): the fiber's next
// post fails, and it gets lane_msg::timeout, then RequestTimeout; the watchdog reaches it if it is
// running bytecode, and watches that it ends within the grace.
void give_up_at_deadline(call& c) {
    {
        std::lock_guard lock(c.outbox_mutex);
        c.io_gone = true;
    }
    c.timed_out.store(true, std::memory_order_release);
    c.home->send(&c, lane_msg::timeout);
    if (runtime* rt = current_runtime(); rt && rt->harakiri) rt->harakiri->expired(c, *c.req);
}

bool cancelled(const net::cancellation_state& state) {
    return state.cancelled() != net::cancellation_type::none;
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
    std::uint8_t events;  // taken with the response and not yet acted on (bytes in c->io_data)
    bool started = false;
    stream_state(call* cp, std::shared_ptr<const app_entry> a, std::uint8_t ev)
        : c(cp), app(std::move(a)), events(ev) {}
    stream_state(const stream_state&) = delete;
    stream_state& operator=(const stream_state&) = delete;
    ~stream_state() {
        lane* home = c->home;
        if (!c->stream_finished) {
            c->stream_finished = true;
            abandon(*c);
        }
        home->release_call(c);
    }
};

task<void> produce_stream(stream_state& state, body_writer& writer,
                          const net::cancellation_state& cs) {
    call& c = *state.c;
    std::uint8_t events = state.events;  // the bytes that came with the response: in c.io_data
    for (;;) {
        // In the order the fiber posted them: copied bytes, then a big chunk, a body read or the
        // end (after each of those the fiber waits or stops).
        if (!c.io_data.empty()) co_await writer.write(c.io_data);
        if (events & io_event::big_chunk) {
            co_await writer.write(c.chunk);
            c.home->send(&c, lane_msg::next_chunk);
        }
        if (events & (io_event::failed | io_event::response_ready)) {
            c.stream_finished = true;
            throw std::runtime_error(
                "wsgi: " + state.app->spec +
                ": the app failed after the response started; connection aborted");
        }
        if (events & io_event::end) {
            c.stream_finished = true;
            co_return;
        }
        if (events & io_event::need_body) {
            co_await read_piece(c);
            if (cancelled(cs)) throw boost::system::system_error(net::error::operation_aborted);
            c.home->send(&c, lane_msg::body_ready);
        }
        events = co_await next_events(c);
    }
}

task<void> produce(std::shared_ptr<stream_state> state, body_writer& writer) {
    if (state->started) throw std::logic_error("a WSGI response body can only be sent once");
    state->started = true;
    call& c = *state->c;
    const net::cancellation_state cs = co_await net::this_coro::cancellation_state;
    std::exception_ptr failure;
    try {
        co_await produce_stream(*state, writer, cs);
    } catch (...) {
        failure = std::current_exception();
    }
    if (!failure) co_return;
    if (!c.stream_finished) {
        // The deadline (the connection then ends), or the client is gone: either way the fiber
        // must close() the iterable; then the error goes on up.
        c.stream_finished = true;
        if (cancelled(cs))
            give_up_at_deadline(c);
        else
            abandon(c);
    }
    std::rethrow_exception(failure);
}

task<response> serve(std::shared_ptr<const app_entry> app, request& req) {
    runtime* rt = current_runtime();
    if (!rt) co_return unavailable();
    lane& l = rt->pick_lane();
    call* c = l.acquire_call();
    c->app = app.get();
    c->req = &req;
    c->request_id.assign(req.id());  // pooled: the string keeps its capacity
    c->has_body = req.body != nullptr;
    // Cancelled by the dispatcher at the request's deadline (none without one).
    const net::cancellation_state cs = co_await net::this_coro::cancellation_state;
    l.send(c, lane_msg::start);
    std::uint8_t events = 0;
    std::exception_ptr failure;
    try {
        events = co_await next_events(*c);
        while (!(events & io_event::response_ready)) {
            // Before the response the fiber only ever asks for the body (and waits for it).
            co_await read_piece(*c);
            if (cancelled(cs)) throw boost::system::system_error(net::error::operation_aborted);
            l.send(c, lane_msg::body_ready);
            events = co_await next_events(*c);
        }
        // A stream whose head arrived as the deadline passed: the fiber still runs, and must hear.
        if (c->streaming && cancelled(cs))
            throw boost::system::system_error(net::error::operation_aborted);
    } catch (...) {
        failure = std::current_exception();
    }
    if (failure) {
        // Only a cancellation gets here (nothing else throws): the dispatcher answers 504.
        give_up_at_deadline(*c);
        l.release_call(c);
        std::rethrow_exception(failure);
    }
    response res = std::move(c->resp);
    res.origin = app->log_name;
    if (!c->streaming) {
        l.release_call(c);
        co_return res;
    }
    events &= static_cast<std::uint8_t>(~io_event::response_ready);
    if (events == io_event::end && res.headers.find("Content-Length")) {
        // The iterable ended before we got here (Flask's, Django's and Bottle's responses): the
        // whole body goes out with the head, in one write (copied: the call's buffers stay with
        // the pooled call). Only with the app's Content-Length: without one, the framing (chunked
        // on HTTP/1.1) must not depend on how fast the io thread came.
        res.body = std::string(c->io_data);
        c->stream_finished = true;
        l.release_call(c);
        co_return res;
    }
    auto state = std::make_shared<stream_state>(c, std::move(app), events);
    res.body = body_producer([state](body_writer& w) { return produce(state, w); });
    co_return res;
}

}  // namespace

corgi::handler make_handler(std::shared_ptr<const app_entry> app) {
    return [app = std::move(app)](request& req) { return serve(app, req); };
}

}  // namespace corgi::wsgi::detail
