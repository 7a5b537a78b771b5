// Python lanes: the thread loop that holds the GIL only while there is Python to run, the batched
// inbox, the fiber pool and the hand-over of events to io threads.
#include "python.hpp"

#include "lane.hpp"

#include "asyncio_bridge.hpp"

#include <corgi/core/log.hpp>
#include <corgi/core/stats.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/post.hpp>

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <string>

namespace corgi::wsgi::detail {

namespace {
thread_local lane* t_lane = nullptr;
std::int64_t steady_ticks() noexcept {
    return std::chrono::steady_clock::now().time_since_epoch().count();
}
}  // namespace

void call::reset() noexcept {
    app = nullptr;
    req = nullptr;
    request_id.clear();
    has_body = false;
    if (out_data.capacity() > outbox_window * 4) out_data = std::string();
    out_data.clear();
    out_events = 0;
    out_wants_space = false;
    io_gone = false;
    io_waiting = false;
    waiter.reset();
    io_executor = {};
    if (io_data.capacity() > outbox_window * 4) io_data = std::string();
    io_data.clear();
    stream_finished = false;
    body_piece = {};
    body_error_status = 0;
    body_error.clear();
    resp = response{};
    streaming = false;
    chunk = {};
    message = lane_msg::start;
    exchange_token = 0;
    runner = nullptr;
    io_released = false;
    headers_set = false;
    headers_sent = false;
    declared_length = -1;
    body_posted = 0;
    body_eof = false;
    if (input_buffer.capacity() > 1024 * 1024)
        input_buffer = std::string();  // don't pin a huge buffer
    input_buffer.clear();
    input_pos = 0;
    failed_read_status = 0;
    timed_out.store(false, std::memory_order_relaxed);
    started.store(false, std::memory_order_relaxed);
    finished.store(false, std::memory_order_relaxed);
    timeout_raised = false;
}

lane::lane(std::size_t index, std::size_t max_fibers, std::size_t stack_bytes,
           net::io_context* io_thread_context, int nice)
    : index_(index),
      max_fibers_(max_fibers ? max_fibers : 1),
      stack_bytes_(stack_bytes),
      nice_(nice),
      io_(io_thread_context),
      on_io_thread_(io_thread_context != nullptr) {
    if (!io_) io_ = &own_io_.emplace(1);
}

lane::~lane() { stop(); }

lane* lane::current() noexcept { return t_lane; }

void lane::start() {
    if (on_io_thread_) return;  // the server's io thread runs run_on_io_thread()
    work_.emplace(io_->get_executor());
    flusher_ = std::thread([this] {
        const std::string name = "corgi-kick-" + std::to_string(index_);
        ::pthread_setname_np(::pthread_self(), name.c_str());
        run_flusher();
    });
    thread_ = std::thread([this] {
        const std::string name = "corgi-lane-" + std::to_string(index_);
        ::pthread_setname_np(::pthread_self(), name.c_str());  // for top -H, perf, py-spy
        if (nice_ > 0) {
            // Linux gives each thread its own nice value (setpriority on the thread id). Raising
            // it needs no privilege; failing to is harmless.
            const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
            errno = 0;
            const int current = ::getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
            if (errno == 0)
                (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(tid),
                                    std::min(current + nice_, 19));
        }
        run();
        std::lock_guard lock(ended_mutex_);
        ended_ = true;
        ended_cv_.notify_all();
    });
}

void lane::run_on_io_thread() {
    run();
    std::lock_guard lock(ended_mutex_);
    ended_ = true;
}

std::size_t lane::stop() {
    // A lane on an io thread ended with the server's run().
    if (!thread_.joinable()) return busy_at_exit_;
    net::post(*io_, [this] { stopping_ = true; });
    work_.reset();
    {
        // The server has already given its requests the graceful timeout: a lane still inside a
        // Python call after this is stuck there (a loop, a C call), and is left behind.
        std::unique_lock lock(ended_mutex_);
        if (!ended_cv_.wait_for(lock, stop_wait, [this] { return ended_; })) {
            stuck_ = true;
            thread_.detach();
            return busy_at_exit_ + 1;
        }
    }
    thread_.join();
    {
        std::lock_guard lock(flusher_mutex_);
        flusher_stop_ = true;
    }
    flusher_cv_.notify_one();
    flusher_.join();
    flush_kicks();
    return busy_at_exit_;
}

void lane::run() {
    t_lane = this;
    ensure_alternate_signal_stack();
    // The lane's own thread state, registered as this thread's gilstate state: fibers get theirs on
    // top.
    PyGILState_STATE gil = PyGILState_Ensure();
    tstate_ = PyThreadState_Get();
    has_gil_ = true;
    while (!stopping_) {
        // Ready handlers run back to back; only when none is left does the lane give up the GIL and
        // block.
        if (io_->poll() > 0) continue;
        if (stopping_ || io_->stopped()) break;
        if (on_io_thread_ && !kicks_.empty()) {
            flush_kicks();  // posted to this very io_context: they run in the next poll
            continue;
        }
        flush_kicks();  // out of work: no Python runs right after this system call
        if (has_gil_) {
            PyEval_SaveThread();
            has_gil_ = false;
        }
        io_->run_one();
    }
    ensure_gil();
    shutdown_fibers();
    aio_.reset();
    PyGILState_Release(gil);
    has_gil_ = false;
}

void lane::ensure_gil() noexcept {
    if (!has_gil_) {
        // The wait for the GIL (other lanes, the watchdog, threads the app started) is a figure
        // of its own: corgi_gil_wait_seconds_total.
        const auto asked = std::chrono::steady_clock::now();
        PyEval_RestoreThread(tstate_);
        const auto waited = std::chrono::steady_clock::now() - asked;
        stats::current().gil_wait_ns.fetch_add(
            static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(waited).count()),
            std::memory_order_relaxed);
        has_gil_ = true;
    }
}

void lane::shutdown_fibers() {
    for (auto& f : fibers_) {
        if (f->job) {
            // Suspended inside the app: unwinding its C stack would run through CPython frames that
            // expect to return normally. Leak it; shutdown() then skips Py_FinalizeEx.
            ++busy_at_exit_;
            (void)f.release();
        }
    }
    fibers_.clear();  // idle fibers end their loop and delete their thread states
    idle_.clear();
    backlog_.clear();
}

void lane::set_asyncio(std::unique_ptr<aio_driver> d) { aio_ = std::move(d); }

call* lane::acquire_call() {
    call* c;
    {
        std::lock_guard lock(mutex_);
        if (free_calls_.empty()) {
            calls_.push_back(std::make_unique<call>());
            c = calls_.back().get();
        } else {
            c = free_calls_.back();
            free_calls_.pop_back();
        }
    }
    c->reset();
    c->home = this;
    c->refs.store(2, std::memory_order_relaxed);
    load_.fetch_add(1, std::memory_order_relaxed);
    return c;
}

void lane::release_call(call* c) noexcept {
    if (c->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    std::lock_guard lock(mutex_);
    free_calls_.push_back(c);
}

void lane::send(call* c, lane_msg m) {
    // The message keeps the call alive: the fiber may have finished with it before the message is
    // dispatched (an abort racing the end of the response).
    c->refs.fetch_add(1, std::memory_order_relaxed);
    bool post;
    {
        std::lock_guard lock(mutex_);
        inbox_.emplace_back(c, m);
        post = !std::exchange(drain_posted_, true);
    }
    // One post per batch: while a drain is pending, more messages just join the inbox.
    if (post) net::post(*io_, [this] { drain(); });
}

void lane::drain() {
    {
        std::lock_guard lock(mutex_);
        draining_.swap(inbox_);
        drain_posted_ = false;
    }
    ensure_gil();
    std::size_t done = 0;
    for (; done < draining_.size(); ++done) {
        if (yield_to_io()) break;
        auto [c, m] = draining_[done];
        dispatch(c, m);
        release_call(c);
    }
    if (done < draining_.size()) {
        // The rest goes back in front of the inbox, behind the responses just posted.
        bool post;
        {
            std::lock_guard lock(mutex_);
            inbox_.insert(inbox_.begin(), draining_.begin() + static_cast<std::ptrdiff_t>(done),
                          draining_.end());
            post = !std::exchange(drain_posted_, true);
        }
        if (post) net::post(*io_, [this] { drain(); });
    }
    draining_.clear();
}

bool lane::yield_to_io() {
    if (!on_io_thread_) return false;
    const std::int64_t oldest = oldest_kick_.load(std::memory_order_relaxed);
    if (oldest == 0) return false;
    // Batched while Python runs are short: waking a client is a system call for us and a wake-up
    // for it (an interprocessor interrupt on a VM), about a quarter of the cost of a Flask request
    // when made per response. Posted once the oldest has waited kick_delay, and at once while
    // runs are long (an app that blocks: the next run may too, and a finished response must not
    // wait for it).
    constexpr auto delay =
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(kick_delay).count();
    if (recent_run_ticks_ < delay && steady_ticks() - oldest < delay) return false;
    flush_kicks();
    return true;
}

void lane::dispatch(call* c, lane_msg m) {
    if (m == lane_msg::start) {
        start_call(c);
        return;
    }
    if (m == lane_msg::timeout) {
        deliver_timeout(*c);
        return;
    }
    c->message = m;
    if (c->runner) wake(*c->runner, c->exchange_token);
}

void lane::start_call(call* c) {
    fiber* f = nullptr;
    if (!idle_.empty()) {
        f = idle_.back();
        idle_.pop_back();
    } else if (fibers_.size() < max_fibers_) {
        try {
            fibers_.push_back(std::make_unique<fiber>(*this, stack_bytes_, fibers_.size() + 1));
            f = fibers_.back().get();
        } catch (const std::exception& e) {
            log::error(std::string("wsgi: cannot create a fiber: ") + e.what());
            c->resp = response(503);
            c->resp.headers.add("Content-Type", "text/plain");
            c->resp.body = std::string("503 Service Unavailable\n");
            c->io_released = true;
            post_io(*c, io_event::response_ready);
            finish_call(*c);
            return;
        }
    } else {
        backlog_.push_back(c);  // every fiber is busy: the next one to finish takes it
        return;
    }
    f->job = c;
    c->runner = f;
    c->started.store(true, std::memory_order_release);
    stats::current().fibers_busy.fetch_add(1, std::memory_order_relaxed);
    run_fiber(*f);
}

void lane::deliver_timeout(call& c) {
    fiber* f = c.runner;
    // Not started (still in the backlog: run_wsgi_call skips it), or done with it.
    if (!f || c.finished.load(std::memory_order_relaxed)) return;
    // On the lane thread with no fiber running, so the request's fiber waits: it is resumed with
    // RequestTimeout raised at that suspension point.
    if (!f->waiting()) return;
    // Raised already (the app caught it and waits again): once is enough; the watchdog's grace
    // decides what happens to a request that goes on. But one the watchdog posted on the fiber's
    // thread state that no bytecode reached before the fiber suspended is raised at this
    // suspension point (raise_request_timeout takes it).
    if (c.timeout_raised && !f->tstate()->async_exc) return;
    f->interrupt();
    run_fiber(*f);
}

void lane::run_fiber(fiber& f) {
    for (;;) {
        if (on_io_thread_) {
            const std::int64_t started = steady_ticks();
            f.resume();
            // A moving average of how long Python runs on this thread before it stops.
            recent_run_ticks_ = (recent_run_ticks_ * 7 + (steady_ticks() - started)) / 8;
        } else {
            f.resume();
        }
        flush_kicks_if_due();
        if (f.job) return;  // waiting for something
        if (backlog_.empty() || stopping_) {
            idle_.push_back(&f);
            stats::current().fibers_busy.fetch_sub(1, std::memory_order_relaxed);
            return;
        }
        call* next = backlog_.front();
        backlog_.pop_front();
        if (yield_to_io()) {
            // Behind the finished responses: the fiber is idle until then.
            idle_.push_back(&f);
            stats::current().fibers_busy.fetch_sub(1, std::memory_order_relaxed);
            net::post(*io_, [this, next] {
                ensure_gil();
                start_call(next);
            });
            return;
        }
        f.job = next;
        next->runner = &f;
        next->started.store(true, std::memory_order_release);
    }
}

void lane::wake(fiber& f, std::uint64_t token) {
    if (!f.accepts(token)) return;
    if (yield_to_io()) {
        wake_later(f, token);
        return;
    }
    ensure_gil();
    run_fiber(f);
}

void lane::wake_later(fiber& f, std::uint64_t token) {
    net::post(*io_, [this, &f, token] { wake(f, token); });
}

bool lane::post_io(call& c, std::uint8_t events, std::string_view data, bool* full) {
    bool wake = false;
    {
        std::lock_guard lock(c.outbox_mutex);
        if (c.io_gone) return false;
        c.out_data.append(data);
        c.out_events |= events;
        if (full) {
            *full = c.out_data.size() >= call::outbox_window;
            c.out_wants_space = *full;
        }
        wake = std::exchange(c.io_waiting, false);
    }
    if (wake) kick_io(c);
    return true;
}

void lane::kick_io(call& c) {
    bool first;
    {
        // oldest_kick_ changes only under the lock, so a flush can never leave it set with no kick
        // pending (the flusher would then poll forever).
        std::lock_guard lock(kicks_mutex_);
        first = kicks_.empty();
        if (first) oldest_kick_.store(steady_ticks());
        kicks_.push_back(&c);
    }
    // On an io thread the lane posts them itself: when due before Python runs (yield_to_io), and
    // when it runs out of work.
    if (!first || on_io_thread_) return;
    if (flusher_asleep_.load()) {
        std::lock_guard lock(flusher_mutex_);
        flusher_cv_.notify_one();
    }
}

void lane::flush_kicks() {
    std::lock_guard flush(flush_mutex_);
    {
        std::lock_guard lock(kicks_mutex_);
        if (kicks_.empty()) return;
        kicking_.swap(kicks_);
        oldest_kick_.store(0);
    }
    for (call* c : kicking_) {
        // The io side is parked in its wait (see io_bridge.cpp) until this runs, so the waiter and
        // its executor are ours to use. Only the first post to a sleeping io thread makes a system
        // call.
        net::post(c->io_executor, [c] {
            auto handler = std::move(*c->waiter);
            c->waiter.reset();
            c->io_executor = {};  // the tracked work ends here
            // Completed: the deadline can no longer cancel this wait.
            net::get_associated_cancellation_slot(handler).clear();
            std::move(handler)(boost::system::error_code());
        });
    }
    kicking_.clear();
}

void lane::flush_kicks_if_due() {
    const std::int64_t oldest = oldest_kick_.load(std::memory_order_relaxed);
    if (oldest != 0 &&
        steady_ticks() - oldest >=
            std::chrono::duration_cast<std::chrono::steady_clock::duration>(kick_delay).count())
        flush_kicks();
}

void lane::run_flusher() {
    // Polls every kick_delay while wake-ups are being batched; sleeps after 50 polls in a row found
    // nothing, until the lane batches again.
    int idle_polls = 0;
    std::unique_lock lock(flusher_mutex_);
    while (!flusher_stop_) {
        if (oldest_kick_.load() != 0) {
            idle_polls = 0;
        } else if (++idle_polls > 50) {
            flusher_asleep_.store(true);
            flusher_cv_.wait(lock, [this] { return flusher_stop_ || oldest_kick_.load() != 0; });
            flusher_asleep_.store(false);
            idle_polls = 0;
            continue;
        }
        lock.unlock();
        std::this_thread::sleep_for(kick_delay);
        flush_kicks_if_due();  // the lane is inside one long call (or a blocking one)
        lock.lock();
    }
}

lane_msg lane::exchange(call& c, std::uint8_t events) {
    if (c.io_released) return lane_msg::abort;
    fiber& f = *c.runner;
    c.exchange_token = f.arm();
    if (!post_io(c, events)) return c.message = lane_msg::abort;
    if (!f.wait()) return lane_msg::timeout;
    return c.message;
}

bool lane::let_io_write(call& c) {
    fiber& f = *c.runner;
    const std::uint64_t token = f.arm();
    flush_kicks();         // the io side's wake-up goes first,
    wake_later(f, token);  // then this fiber
    return f.wait();
}

lane_msg lane::await_message(call& c) {
    fiber& f = *c.runner;
    c.exchange_token = f.arm();  // the message is dispatched on this thread, after wait() below
    if (!f.wait()) return lane_msg::timeout;
    return c.message;
}

void lane::finish_call(call& c) noexcept {
    c.finished.store(true, std::memory_order_release);
    c.runner = nullptr;
    load_.fetch_sub(1, std::memory_order_relaxed);
    release_call(&c);
}

}  // namespace corgi::wsgi::detail
