// asyncio on corgi's scheduler: each lane has one asyncio event loop that the lane's io_context
// drives a step at a time (asyncio never blocks: the lane waits on the loop's epoll fd and on a
// timer for its next callback). A fiber that awaits something wraps it in a Task on that loop and
// sleeps until the Task is done.
#pragma once

#include "python.hpp"

#include <corgi/core/task.hpp>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <optional>

namespace corgi::wsgi::detail {

class lane;

struct aio_driver {
    explicit aio_driver(lane& owner);
    ~aio_driver();  // GIL held
    aio_driver(const aio_driver&) = delete;
    aio_driver& operator=(const aio_driver&) = delete;

    // Schedules one step of the loop (at most one pending).
    void kick();

    lane& owner;
    py_ref loop;
    py_ref run_once;
    py_ref ready;  // loop._ready, the deque of callbacks due now
    net::steady_timer timer;
    std::optional<net::posix::stream_descriptor> selector_fd;
    bool step_posted = false;
    bool fd_waiting = false;
    bool running_loop_set = false;

  private:
    void step();
    void arm();
};

// At start-up on the main thread state: arranges that corgi's loop class and event loop policy
// (asyncio.get_event_loop() inside a request returns its lane's loop) are installed when asyncio
// is first imported, by the app or by corgi for an awaitable. With `async_views_hook`, also
// makes asgiref's async_to_sync (Flask and Django async views) await on the lane's loop when
// called on a request's fiber, once asgiref.sync is imported.
bool init_asyncio_bridge(bool async_views_hook);

// The loop of the calling lane, created on first use (new reference); None outside a lane.
PyObject* lane_event_loop();

// Coroutines, futures and other objects with __await__.
bool is_awaitable(PyObject* o) noexcept;
// Inside a fiber: runs `awaitable` on the lane's loop, suspends the fiber until it is done and
// returns its result (new reference), or null with its exception set. Meanwhile the steps of the
// tasks created for it (the coroutine's own Task, and those its steps create) run on this fiber,
// so that they may suspend it: read wsgi.input, call write(), corgi.sleep().
PyObject* await_in_fiber(PyObject* awaitable);

// Around a suspension of a fiber in the middle of a task step: takes the lane's current task out
// of asyncio's books (other tasks run meanwhile), and puts it back.
py_ref stash_current_task(lane& l);
void restore_current_task(lane& l, py_ref task);

}  // namespace corgi::wsgi::detail
