// Python WSGI applications as corgi handlers: the embedded interpreter, its lanes of fibers and PEP
// 3333. A loaded app is an ordinary corgi::handler that never takes the GIL on the io thread: it
// hands the request to a Python lane (a thread running many fibers) and awaits the response.
#pragma once

#include <corgi/core/handler.hpp>
#include <corgi/core/server.hpp>
#include <corgi/wsgi/settings.hpp>

#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace corgi::wsgi {

// Loading failed (import error, missing attribute, not callable); what() includes the Python
// traceback.
struct load_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Starts the embedded interpreter (sys.executable /usr/bin/python3.11; sys.path gets settings.chdir
// or the current directory and settings.pythonpath in front) and the Python lanes (settings.threads
// lanes, up to settings.fibers concurrent requests each, fiber stacks of settings.fiber_stack_kib).
// Idempotent: later calls are ignored. Call from the main thread, before load().
void initialize(const python_settings& settings);

// initialize() in two steps, for a pre-fork master that imports the apps before it forks
// (--preload): start_interpreter() starts Python without the lanes, so load() runs on the main
// thread, which keeps the GIL; the master forks between before_fork() and
// after_fork_in_parent(), and each child calls after_fork_in_child() then start_lanes(). No other
// thread may run Python while it forks.
void start_interpreter(const python_settings& settings);
void start_lanes();
// start_lanes() for a server that is about to run: with python_on_io_threads = io_threads one lane
// lives on each of srv's io threads (the server's io loop becomes the lanes' loop; `threads` is
// then the io thread count), otherwise as start_lanes(). Call before srv.run().
void start_lanes(corgi::server& srv);
void before_fork() noexcept;
void after_fork_in_parent() noexcept;
void after_fork_in_child() noexcept;

// Calls the functions decorated with @corgi.postfork, in the order they were registered, with the
// GIL; throws load_error with the traceback when one raises. The corgi binary calls it once in
// every serving process (a worker after its fork, before it accepts).
void run_postfork_hooks();

// Imports a WSGI application and returns the handler that serves it. `spec` is "module:callable",
// "module" (the callable named by settings.callable, "application" by default), or
// "path/to/file.py[:callable]". "module:factory()" calls a factory. Imports run on the main
// thread's Python state. Calls initialize() with default settings when nobody did. Throws
// load_error.
corgi::handler load(std::string_view spec);

// Stops the lanes and finalizes the interpreter (skipped when requests are still suspended in the
// app). Idempotent; handlers called afterwards answer 503.
void shutdown();
// True after a shutdown() that left a lane behind, still inside a Python call past the graceful
// timeout: the caller must end the process with _exit (no static destructor may touch Python).
bool stuck_at_shutdown() noexcept;

}  // namespace corgi::wsgi
