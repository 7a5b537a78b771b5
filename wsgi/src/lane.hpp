// A Python lane: one thread with its own io_context that holds the GIL while its fibers run and
// releases it whenever the io_context would wait. Requests arrive from io threads through an inbox
// that costs one wake-up per batch (a running lane is never woken); each request gets a pooled
// fiber, extra requests queue.
//
// A lane can also live on an io thread (python_settings::lanes_on_io_threads): it then has no
// thread and no io_context of its own, the io thread runs the lane's loop over the io thread's
// io_context, and requests, responses and wake-ups are posts on that one thread (no hand-off, no
// system call), as in uWSGI's and Gunicorn's single-threaded workers. The io thread then holds
// the GIL whenever it is not waiting, so only a worker that serves nothing but Python does this.
#pragma once

#include "python.hpp"

#include "call.hpp"
#include "fiber.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace corgi::wsgi::detail {

struct aio_driver;

class lane {
  public:
    // io_thread_context: the io thread's io_context when the lane lives on that io thread
    // (run_on_io_thread() is then its loop); null for a lane with its own thread.
    // nice: added to the lane thread's nice value (see python_settings::lane_nice).
    lane(std::size_t index, std::size_t max_fibers, std::size_t stack_bytes,
         net::io_context* io_thread_context = nullptr, int nice = 0);
    ~lane();
    lane(const lane&) = delete;
    lane& operator=(const lane&) = delete;

    // Starts the thread; it takes the GIL once the caller releases it. Nothing for a lane on an
    // io thread.
    void start();
    // A lane on an io thread: the io thread's loop, until its io_context stops or runs out of
    // work (the server's shutdown).
    void run_on_io_thread();
    bool on_io_thread() const noexcept { return on_io_thread_; }
    // Stops the thread after the running handlers; returns the number of fibers still inside the
    // app (their frames cannot be unwound safely, so the interpreter must not be finalized).
    // Stops the lane; returns the requests still inside Python. A lane whose thread has not ended
    // stop_wait after it was asked to is left running (stuck() turns true).
    std::size_t stop();
    bool stuck() const noexcept { return stuck_; }
    static constexpr std::chrono::seconds stop_wait{2};

    // --- any thread ---
    // A fresh call from the pool, referenced by both sides.
    call* acquire_call();
    // Drops one side's reference.
    void release_call(call* c) noexcept;
    // Queues a message for the call's fiber (holding a reference to the call until it is
    // dispatched); wakes the lane only if no drain is pending.
    void send(call* c, lane_msg m);
    // Requests inside this lane (queued or running): the load balancer's measure.
    std::size_t load() const noexcept { return load_.load(std::memory_order_relaxed); }
    std::size_t index() const noexcept { return index_; }

    // --- lane thread ---
    net::io_context& io() noexcept { return *io_; }
    // Takes the GIL back if the lane released it to wait (every lane handler that touches Python
    // calls it).
    void ensure_gil() noexcept;
    // Puts `events` (io_event bits) and a copy of `data` in the call's outbox and wakes the io side
    // if it waits. False when the io side is gone (nothing was posted). `full`, when given, is set
    // when the outbox holds outbox_window bytes or more: the fiber must then wait for next_chunk
    // (the io side sends it when it takes them).
    bool post_io(call& c, std::uint8_t events, std::string_view data = {}, bool* full = nullptr);
    // Resumes `f` if `token` is its current wait's (stale wake-ups are ignored).
    void wake(fiber& f, std::uint64_t token);
    // Same, later: posted to this lane's io_context.
    void wake_later(fiber& f, std::uint64_t token);
    // Inside a fiber: the request's fiber posts `events` to the io side and waits for its answer
    // (abort at once when the io side is gone; timeout when the request's deadline interrupted
    // the wait, and RequestTimeout must be raised).
    lane_msg exchange(call& c, std::uint8_t events);
    // Inside a fiber: waits for the io side's next message (after post_io reported a full outbox).
    lane_msg await_message(call& c);
    // Inside a fiber, on a lane on an io thread: the io thread writes what the fiber has posted
    // before the fiber goes on (PEP 3333: a block is never held while the app produces the next).
    // False when the request's deadline interrupted the wait (RequestTimeout must be raised).
    bool let_io_write(call& c);
    // The fiber is done with its call (lane side reference).
    void finish_call(call& c) noexcept;

    PyThreadState* tstate() const noexcept { return tstate_; }
    aio_driver* asyncio() noexcept { return aio_.get(); }
    void set_asyncio(std::unique_ptr<aio_driver> d);
    static lane* current() noexcept;

  private:
    // Waking a parked io coroutine is a system call (Asio interrupts the io thread's epoll_wait).
    // Where the kernel flushes the TLB on every entry (page-table isolation without PCID, as on
    // this project's CI machine) that call costs the Python code that runs next on the lane ~10 µs
    // of TLB refills, more than Flask's whole request path in corgi. So while the lane is busy its
    // wake-ups are batched: made when the lane runs out of work, or once the oldest has waited
    // kick_delay; the flusher thread makes them if the lane is stuck in a long call.
    static constexpr std::chrono::microseconds kick_delay{250};
    void kick_io(call& c);
    void flush_kicks();
    void flush_kicks_if_due();
    void run_flusher();

    void run();
    void drain();
    // A lane on an io thread, about to run Python: when the responses waiting to go out are due
    // (see the definition), their wake-ups are posted (they run first) and true tells the caller
    // to post itself behind them.
    bool yield_to_io();
    void dispatch(call* c, lane_msg m);
    void deliver_timeout(call& c);
    void start_call(call* c);
    void run_fiber(fiber& f);
    void shutdown_fibers();

    std::size_t index_;
    std::size_t max_fibers_;
    std::size_t stack_bytes_;
    int nice_;
    std::optional<net::io_context> own_io_;  // a lane with its own thread
    net::io_context* io_;                    // own_io_, or the io thread's
    bool on_io_thread_;
    std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
    std::thread thread_;
    // Set when run() returned: stop() waits for it a bounded time (a request spinning in Python
    // would make a join wait forever).
    std::mutex ended_mutex_;
    std::condition_variable ended_cv_;
    bool ended_ = false;
    bool stuck_ = false;
    PyThreadState* tstate_ = nullptr;
    bool has_gil_ = false;
    bool stopping_ = false;
    std::size_t busy_at_exit_ = 0;

    std::mutex mutex_;  // guards inbox_, drain_posted_, free_calls_
    std::vector<std::pair<call*, lane_msg>> inbox_;
    std::vector<std::pair<call*, lane_msg>> draining_;  // lane thread only
    bool drain_posted_ = false;
    std::vector<call*> free_calls_;
    std::vector<std::unique_ptr<call>> calls_;
    std::atomic<std::size_t> load_{0};

    // lane thread only
    std::vector<std::unique_ptr<fiber>> fibers_;
    std::vector<fiber*> idle_;
    std::deque<call*> backlog_;
    std::unique_ptr<aio_driver> aio_;
    std::int64_t recent_run_ticks_ = 0;  // on an io thread: see yield_to_io

    // Batched io wake-ups (see kick_io).
    std::mutex kicks_mutex_;
    std::vector<call*> kicks_;    // under kicks_mutex_
    std::vector<call*> kicking_;  // under flush_mutex_: the batch being made
    std::mutex flush_mutex_;
    std::atomic<std::int64_t> oldest_kick_{0};  // steady_clock ticks of the oldest, 0: none
    std::thread flusher_;
    std::mutex flusher_mutex_;
    std::condition_variable flusher_cv_;
    std::atomic<bool> flusher_asleep_{false};
    bool flusher_stop_ = false;  // under flusher_mutex_
};

}  // namespace corgi::wsgi::detail
