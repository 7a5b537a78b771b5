// The process-wide state of the wsgi module: settings, lanes and loaded apps (one embedded
// interpreter).
#pragma once

#include "python.hpp"

#include "harakiri.hpp"

#include <corgi/wsgi/wsgi.hpp>

#include <memory>
#include <string>
#include <vector>

namespace corgi::wsgi::detail {

class lane;

// A loaded WSGI callable. Never released: apps live as long as the interpreter, and the handlers
// that refer to them may be destroyed after it is gone.
struct app_entry {
    PyObject* callable = nullptr;
    std::string spec;
    std::string log_name;  // "wsgi app 'hello:app'", the responses' origin in error logs
};

struct runtime {
    python_settings settings;
    std::vector<std::unique_ptr<lane>> lanes;
    std::unique_ptr<watchdog> harakiri;    // deadlines of requests (harakiri.hpp); with the lanes
    PyThreadState* main_tstate = nullptr;  // saved (GIL released) while the lanes run
    bool multithread = true;               // more than one request can be inside the app at once
    bool lanes_on_io_threads = false;      // each lane is an io thread's (pick_lane: this thread's)

    // The lane with the fewest requests in it.
    lane& pick_lane() noexcept;
};

// Null before initialize() and after shutdown().
runtime* current_runtime() noexcept;

}  // namespace corgi::wsgi::detail
