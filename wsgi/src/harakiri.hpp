// The per-process deadline watchdog of WSGI requests (uWSGI's harakiri, failing one request instead
// of the worker). When the io side gives up on a request at its deadline, the lane raises
// corgi.RequestTimeout in the request's fiber if that fiber waits; if it runs bytecode, only
// another thread can reach it: the watchdog's interrupter takes the GIL (never an io thread) and
// posts the exception on the fiber's own thread state (CPython's asynchronous exceptions). A
// request still not ended `grace` later is stuck in C code: logged, and the worker asks its master
// for a graceful replacement.
#pragma once

#include "python.hpp"

#include <corgi/core/request.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace corgi::wsgi::detail {

struct call;

// Posts `exception` (a class) on thread state `ts` of this interpreter, to be raised at the next
// bytecode boundary it runs. GIL held. False if no such thread state.
bool post_async_exception(PyThreadState* ts, PyObject* exception);

class watchdog {
  public:
    explicit watchdog(std::chrono::milliseconds grace);
    ~watchdog();  // stop()
    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;

    // Starts the two threads (after fork: each worker has its own). GIL not needed.
    void start();
    // Ends them; requests still watched are let go. Call with the GIL released.
    void stop();

    // Io thread: the deadline of `c` passed (the client gets 504). Takes a reference on the call
    // until its fiber is done with it; `req` is copied for the log (it is the connection's).
    void expired(call& c, const request& req);

  private:
    struct entry {
        call* c;
        std::string what;  // "GET /spin (route '/spin')"
        std::chrono::steady_clock::time_point started;
        std::chrono::steady_clock::time_point stuck_at;
        bool reported = false;
    };
    void run_watch();
    void run_interrupter();
    void report_stuck(const entry& e);

    std::chrono::milliseconds grace_;
    std::mutex mutex_;
    std::condition_variable watch_cv_, interrupt_cv_;
    std::vector<entry> watched_;       // under mutex_
    std::vector<call*> to_interrupt_;  // under mutex_, each holding a reference
    bool stopping_ = false;            // under mutex_
    bool replacement_asked_ = false;   // watch thread only
    std::thread watch_thread_, interrupter_thread_;
};

}  // namespace corgi::wsgi::detail
