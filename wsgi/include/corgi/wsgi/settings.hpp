// The WSGI layer's settings (no Python here, so the corgi binary knows them even when built
// without the WSGI layer).
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace corgi {
class settings_schema;
}

namespace corgi::wsgi {

// Where the Python lanes run (python_settings::python_on_io_threads).
enum class lane_placement {
    automatic,   // the corgi binary: on the io threads when every route is Python; programs: own
    io_threads,  // one lane on each io thread: no hand-off, the io thread holds the GIL
    own_threads  // `threads` lanes on threads of their own: C++ routes never wait for Python
};

// Settings of the WSGI layer, registered in the settings schema by add_python_settings.
struct python_settings {
    std::string wsgi;       // MODULE[:CALLABLE] mounted at /
    std::string wsgi_file;  // PATH.py mounted at /
    std::string callable = "application";
    std::vector<std::pair<std::string, std::string>>
        mounts;  // prefix -> MODULE[:CALLABLE] or path.py
    std::vector<std::string> pythonpath;
    std::string chdir;
    std::size_t threads = 1;   // Python lanes
    std::size_t fibers = 100;  // concurrent requests per lane
    std::size_t fiber_stack_kib = 256;
    bool async_views_hook = true;  // asgiref's async_to_sync awaits on the lane's asyncio loop
    lane_placement python_on_io_threads = lane_placement::automatic;
    // Added to the nice value of lane threads (not io threads): when Python saturates the cores,
    // the scheduler still runs an io thread the moment it has work, so C++ routes and I/O keep
    // their latency.
    std::size_t lane_nice = 0;
    // environ["wsgi.multiprocess"]: set by the corgi binary in pre-forked workers when there are
    // several (as Gunicorn does), not a setting of its own.
    bool multiprocess = false;
    // limits.harakiri_grace, copied here by the corgi binary: how long a WSGI request past its
    // deadline may take to end before it counts as stuck.
    std::chrono::milliseconds harakiri_grace{10'000};
    bool enabled() const noexcept { return !wsgi.empty() || !wsgi_file.empty() || !mounts.empty(); }

    // Bounds, checked by the schema for every source and by initialize() for programs.
    static constexpr std::size_t max_threads = 256;
    static constexpr std::size_t max_fibers = 100'000;
    static constexpr std::size_t min_fiber_stack_kib = 64;
    static constexpr std::size_t max_fiber_stack_kib = 65'536;
    static constexpr std::size_t max_lane_nice = 19;
};

// Registers the WSGI settings (wsgi, wsgi_file, callable, mounts, pythonpath, chdir, threads,
// fibers, fiber_stack_kib, async_views_hook, python_on_io_threads, lane_nice) in the schema, bound
// to `settings`.
void add_python_settings(settings_schema& schema, python_settings& settings);

}  // namespace corgi::wsgi
