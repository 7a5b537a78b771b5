// The deadline watchdog of WSGI requests: see harakiri.hpp.
#include "python.hpp"

#include "harakiri.hpp"

#include "call.hpp"
#include "fiber.hpp"
#include "lane.hpp"
#include "wsgi_call.hpp"

#include <corgi/core/log.hpp>
#include <corgi/core/supervision.hpp>

#include <pthread.h>

#include <cstdint>
#include <cstdio>

namespace corgi::wsgi::detail {

namespace {

using steady = std::chrono::steady_clock;

// How often watched requests are checked for their end (only while there are some).
constexpr std::chrono::milliseconds watch_period{200};

std::string seconds_text(steady::duration d) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f s", std::chrono::duration<double>(d).count());
    return text;
}

}  // namespace

bool post_async_exception(PyThreadState* ts, PyObject* exception) {
    // PyThreadState_SetAsyncExc finds the thread state by thread id, but every fiber of a lane
    // (and the lane itself) was created on the lane thread and carries its id. For the call, the
    // target gets an id of its own: odd, so never a pthread id (those are aligned addresses).
    // With the GIL held nothing else reads the field meanwhile.
    const unsigned long saved = ts->thread_id;
    const auto unique = static_cast<unsigned long>(reinterpret_cast<std::uintptr_t>(ts) | 1u);
    ts->thread_id = unique;
    const int found = PyThreadState_SetAsyncExc(unique, exception);
    ts->thread_id = saved;
    return found == 1;
}

watchdog::watchdog(std::chrono::milliseconds grace) : grace_(grace) {}

watchdog::~watchdog() { stop(); }

void watchdog::start() {
    watch_thread_ = std::thread([this] {
        ::pthread_setname_np(::pthread_self(), "corgi-harakiri");
        run_watch();
    });
    interrupter_thread_ = std::thread([this] {
        ::pthread_setname_np(::pthread_self(), "corgi-interrupt");
        run_interrupter();
    });
}

void watchdog::stop() {
    {
        std::lock_guard lock(mutex_);
        if (stopping_) return;
        stopping_ = true;
    }
    watch_cv_.notify_all();
    interrupt_cv_.notify_all();
    if (watch_thread_.joinable()) watch_thread_.join();
    if (interrupter_thread_.joinable()) interrupter_thread_.join();
    std::lock_guard lock(mutex_);
    for (auto& e : watched_) e.c->home->release_call(e.c);
    for (call* c : to_interrupt_) c->home->release_call(c);
    watched_.clear();
    to_interrupt_.clear();
}

void watchdog::expired(call& c, const request& req) {
    entry e{&c, req.method + ' ' + req.target, req.handler_started, {}};
    if (!req.endpoint.empty()) e.what += " (route '" + req.endpoint + "')";
    const steady::time_point deadline =
        req.time_limit.count() > 0 ? req.handler_started + req.time_limit : steady::now();
    e.stuck_at = deadline + grace_;
    c.refs.fetch_add(2, std::memory_order_relaxed);  // one for each list
    {
        std::lock_guard lock(mutex_);
        if (stopping_) {
            c.refs.fetch_sub(2, std::memory_order_relaxed);  // ours alone: the io side holds one
            return;
        }
        watched_.push_back(std::move(e));
        to_interrupt_.push_back(&c);
    }
    watch_cv_.notify_one();
    interrupt_cv_.notify_one();
}

void watchdog::run_watch() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        if (watched_.empty()) {
            watch_cv_.wait(lock, [this] { return stopping_ || !watched_.empty(); });
            continue;
        }
        const steady::time_point now = steady::now();
        for (std::size_t i = 0; i < watched_.size();) {
            entry& e = watched_[i];
            if (e.c->finished.load(std::memory_order_acquire)) {
                e.c->home->release_call(e.c);
                watched_[i] = std::move(watched_.back());
                watched_.pop_back();
                continue;
            }
            // One that no fiber has taken yet is not stuck itself: its lane is, on another
            // request, which is the one reported (it is skipped once the lane gets to it).
            if (!e.reported && now >= e.stuck_at && e.c->started.load(std::memory_order_acquire)) {
                e.reported = true;
                const entry copy = e;
                lock.unlock();
                report_stuck(copy);
                lock.lock();
                if (stopping_) return;
                continue;  // the list may have changed meanwhile: look at this index again
            }
            ++i;
        }
        watch_cv_.wait_for(lock, watch_period);
    }
}

void watchdog::report_stuck(const entry& e) {
    // The call's request_id outlives the request object (call.hpp) and is not written meanwhile.
    log::error(
        log::for_request(e.c->request_id),
        "harakiri: " + e.what + " is stuck: running for " +
            seconds_text(steady::now() - e.started) + ", " + seconds_text(grace_) +
            " past its deadline, in code that RequestTimeout cannot interrupt (C code "
            "holding the lane, such as time.sleep or a C loop); its lane serves nothing else "
            "meanwhile");
    if (replacement_asked_) return;
    replacement_asked_ = true;
    if (supervision::request_replacement(supervision::replacement_reason::stuck_request, e.what)) {
        log::error("harakiri: asked the master to replace this worker (gracefully)");
    } else {
        log::error(
            "harakiri: no master supervises this process, so it cannot be recycled; run "
            "corgi with --master or --processes N to have stuck workers replaced");
    }
}

void watchdog::run_interrupter() {
    std::vector<call*> batch;
    std::unique_lock lock(mutex_);
    for (;;) {
        interrupt_cv_.wait(lock, [this] { return stopping_ || !to_interrupt_.empty(); });
        if (stopping_) return;
        batch.swap(to_interrupt_);
        lock.unlock();
        // May wait long: a C loop that never releases the GIL keeps it. The watch thread does
        // not depend on this one, so the stuck request is still reported.
        PyGILState_STATE gil = PyGILState_Ensure();
        for (call* c : batch) {
            // With the GIL held the lane is between two bytecodes of the fiber it runs, in C
            // code with the GIL released, or idle. A fiber that waits is the lane's to
            // interrupt (lane_msg::timeout); one that runs is reached here, once.
            fiber* f = c->runner;
            if (c->finished.load(std::memory_order_acquire) || !f || f->waiting() ||
                c->timeout_raised)
                continue;
            PyObject* type = request_timeout_type();
            if (type && post_async_exception(f->tstate(), type)) c->timeout_raised = true;
        }
        PyGILState_Release(gil);
        for (call* c : batch) c->home->release_call(c);
        batch.clear();
        lock.lock();
    }
}

}  // namespace corgi::wsgi::detail
