// Stackful fibers that run Python: each has a guarded mmap'ed stack and its own PyThreadState, and
// both live as long as the fiber, which serves request after request (pooled by its lane).
// Switching in and out swaps the thread state and points CPython's and pybind11's "current thread
// state" TLS slots at it.
#pragma once

#include "python.hpp"

#include <corgi/core/task.hpp>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/context/fiber.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <utility>

namespace corgi::wsgi::detail {

class lane;
struct call;

// Points CPython's PyGILState TLS slot at `ts` (gilstate.c: needs CPython 3.11 internals).
extern "C" void corgi_wsgi_set_gilstate_tstate(PyThreadState* ts);
// Caches pybind11's internals (creating them: call once on the main thread state at start-up).
void init_pybind11_tls();
// Points pybind11's internals TLS at `ts` (nullptr: fall back to the gilstate slot).
void set_pybind11_tstate(PyThreadState* ts) noexcept;

class fiber {
  public:
    // Creates the stack and the thread state; call on the lane thread with the GIL held.
    fiber(lane& owner, std::size_t stack_bytes, std::uint64_t id);
    // Idle fibers only (between requests): ends the fiber's loop, then deletes its thread state
    // (GIL held).
    ~fiber();
    fiber(const fiber&) = delete;
    fiber& operator=(const fiber&) = delete;

    // On the lane (outside any fiber), GIL held: runs the fiber until it suspends.
    void resume();
    // Inside this fiber: back to the lane; returns when the lane resumes it.
    void suspend();

    // The fiber running on this thread, or null.
    static fiber* current() noexcept;

    // A wake-up token for the wait that is about to start: handlers of older waits (a timer that
    // fired while its descriptor won the race) carry stale tokens and are ignored.
    std::uint64_t arm() noexcept { return ++wait_token_; }
    bool accepts(std::uint64_t token) const noexcept { return waiting_ && token == wait_token_; }
    // Suspends until lane::wake(*this, token) with the token of the last arm(). False when
    // interrupt() ended the wait instead: the request's deadline passed, and the caller raises
    // corgi.RequestTimeout (raise_request_timeout in wsgi_call.hpp).
    bool wait();
    // Lane thread, the fiber waiting: its wait ends as interrupted when the lane resumes it.
    void interrupt() noexcept { interrupted_ = true; }

    lane& owner() noexcept { return owner_; }
    PyThreadState* tstate() const noexcept { return tstate_; }
    std::uint64_t id() const noexcept { return id_; }
    bool waiting() const noexcept { return waiting_; }

    // The request this fiber serves; null while idle in the pool.
    call* job = nullptr;
    // Reused for every wait of this fiber: sleep, timeouts, descriptors.
    net::steady_timer timer;
    std::optional<net::posix::stream_descriptor> descriptor;
    int wait_result = 0;

    // asyncio (asyncio_bridge.cpp). While the request awaits (corgi.await_ or a returned
    // coroutine), the steps of the tasks it creates run on this fiber, queued here.
    PyObject* aio_binding = nullptr;  // strong; the request's fiber binding while it awaits
    std::deque<std::pair<py_ref, py_ref>> aio_steps;  // (task, exception or None) to run here
    std::uint64_t aio_idle_token = 0;  // the await's wait token while it has nothing to run
    int aio_step_depth = 0;            // task steps running on this fiber (nested awaits)

    // Guard-page lookup for the SIGSEGV handler (async-signal-safe reads only).
    const char* guard_low() const noexcept { return guard_low_; }
    const char* stack_low() const noexcept { return stack_low_; }
    std::size_t stack_bytes() const noexcept { return stack_bytes_; }

  private:
    struct stack_allocator;
    void loop();

    lane& owner_;
    std::uint64_t id_;
    std::size_t stack_bytes_;
    char* guard_low_ = nullptr;
    char* stack_low_ = nullptr;
    PyThreadState* tstate_ = nullptr;
    boost::context::fiber self_;  // the fiber, while it is suspended
    boost::context::fiber sink_;  // the lane, while the fiber runs
    std::uint64_t wait_token_ = 0;
    bool waiting_ = false;
    bool interrupted_ = false;
    bool quit_ = false;
    bool running_loop_ = false;
};

// Installs the SIGSEGV handler (on an alternate stack) that names fiber stack overflows;
// idempotent.
void install_overflow_handler();
// Gives the calling thread an alternate signal stack (each lane thread calls it).
void ensure_alternate_signal_stack();

}  // namespace corgi::wsgi::detail
