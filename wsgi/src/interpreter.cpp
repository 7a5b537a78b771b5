// The embedded interpreter's lifetime: PyConfig, sys.path, start-up imports on the main thread
// state, the lanes, and an orderly finalization.
#include "python.hpp"

#include "asyncio_bridge.hpp"
#include "corgi_module.hpp"
#include "environ.hpp"
#include "fiber.hpp"
#include "harakiri.hpp"
#include "lane.hpp"
#include "runtime.hpp"
#include "wsgi_call.hpp"
#include "wsgi_types.hpp"

#include <corgi/core/log.hpp>
#include <corgi/core/stats.hpp>
#include <corgi/wsgi/wsgi.hpp>

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <limits>
#include <mutex>

#ifndef CORGI_PYTHON_EXECUTABLE
#define CORGI_PYTHON_EXECUTABLE "/usr/bin/python3.11"
#endif

namespace corgi::wsgi {

namespace detail {

namespace {

std::mutex g_lifetime_mutex;
std::atomic<runtime*> g_runtime{nullptr};
bool g_finalized = false;
PyObject* g_format_exception = nullptr;

void check(PyStatus status, const char* what) {
    if (PyStatus_Exception(status)) {
        throw load_error(std::string("cannot start Python: ") + what + ": " +
                         (status.err_msg ? status.err_msg : "unknown error"));
    }
}

// Raises load_error with the pending Python exception (the GIL is held).
[[noreturn]] void throw_python(const std::string& what) {
    std::string tb = fetch_traceback();
    throw load_error(what + (tb.empty() ? std::string() : ":\n" + tb));
}

void extend_sys_path(const python_settings& settings) {
    // The app directory first (the --chdir target, else the current directory, as uWSGI and
    // gunicorn do), then
    // --pythonpath entries in order; absolute, so a later chdir by the app changes nothing.
    py_ref os_path(PyImport_ImportModule("os.path"));
    if (!os_path) throw_python("cannot import os.path");
    py_ref entries(PyList_New(0));
    auto add = [&](const std::string& dir) {
        py_ref abs(PyObject_CallMethod(os_path.get(), "abspath", "s", dir.c_str()));
        if (!abs || PyList_Append(entries.get(), abs.get()) != 0)
            throw_python("bad sys.path entry " + dir);
    };
    add(settings.chdir.empty() ? "." : settings.chdir);
    for (const auto& p : settings.pythonpath) add(p);
    PyObject* path = PySys_GetObject("path");  // borrowed
    if (!path || !PyList_Check(path)) throw load_error("cannot start Python: sys.path is missing");
    if (PyList_SetSlice(path, 0, 0, entries.get()) != 0) throw_python("cannot extend sys.path");
}

}  // namespace

runtime* current_runtime() noexcept { return g_runtime.load(std::memory_order_acquire); }

lane& runtime::pick_lane() noexcept {
    // A lane on an io thread serves that io thread's requests (the caller runs on it).
    if (lanes_on_io_threads)
        if (lane* here = lane::current()) return *here;
    lane* best = lanes.front().get();
    std::size_t best_load = best->load();
    for (std::size_t i = 1; i < lanes.size() && best_load > 0; ++i) {
        const std::size_t load = lanes[i]->load();
        if (load < best_load) {
            best = lanes[i].get();
            best_load = load;
        }
    }
    return *best;
}

std::string format_exception(PyObject* exc) {
    std::string out;
    if (g_format_exception) {
        py_ref lines(PyObject_CallOneArg(g_format_exception, exc));
        if (lines) {
            py_ref empty(PyUnicode_FromString(""));
            py_ref joined(empty ? PyUnicode_Join(empty.get(), lines.get()) : nullptr);
            if (const char* s = joined ? PyUnicode_AsUTF8(joined.get()) : nullptr) out = s;
        }
    }
    if (out.empty()) {
        py_ref text(PyObject_Repr(exc));
        if (const char* s = text ? PyUnicode_AsUTF8(text.get()) : nullptr) out = s;
    }
    PyErr_Clear();
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
}

std::string fetch_traceback() {
    if (!PyErr_Occurred()) return {};
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value && tb) PyException_SetTraceback(value, tb);
    std::string text = value ? format_exception(value) : std::string("unknown Python error");
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return text;
}

}  // namespace detail

using namespace detail;

namespace {
bool g_stuck_at_shutdown = false;
}  // namespace

void initialize(const python_settings& settings) {
    start_interpreter(settings);
    start_lanes();
}

void start_interpreter(const python_settings& settings) {
    // The same bounds as the settings schema: a program calling in directly gets an error, not a
    // silently different lane.
    auto check_bound = [](const char* what, std::size_t v, std::size_t min, std::size_t max) {
        if (v < min || v > max)
            throw std::invalid_argument(std::string("wsgi: ") + what + " must be between " +
                                        std::to_string(min) + " and " + std::to_string(max) +
                                        ", got " + std::to_string(v));
    };
    check_bound("threads", settings.threads, 1, python_settings::max_threads);
    check_bound("fibers", settings.fibers, 1, python_settings::max_fibers);
    check_bound("fiber_stack_kib", settings.fiber_stack_kib, python_settings::min_fiber_stack_kib,
                python_settings::max_fiber_stack_kib);
    std::lock_guard lock(g_lifetime_mutex);
    if (g_runtime.load() || g_finalized) return;
    if (!settings.chdir.empty() && ::chdir(settings.chdir.c_str()) != 0) {
        throw load_error("cannot chdir to " + settings.chdir + ": " + std::strerror(errno));
    }

    register_corgi_module();
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    struct config_guard {
        PyConfig* c;
        ~config_guard() { PyConfig_Clear(c); }
    } guard{&config};
    config.install_signal_handlers = 0;  // SIGINT/SIGTERM belong to the server (graceful shutdown)
    config.parse_argv = 0;
    // The embedding program is not Python: sys.executable must name the interpreter whose libpython
    // we run, so that multiprocessing, subprocess calls to sys.executable and site-packages
    // discovery work.
    check(PyConfig_SetBytesString(&config, &config.program_name, CORGI_PYTHON_EXECUTABLE),
          "program_name");
    check(PyConfig_SetBytesString(&config, &config.executable, CORGI_PYTHON_EXECUTABLE),
          "executable");
    char arg0[] = "corgi";
    char* argv[] = {arg0};
    check(PyConfig_SetBytesArgv(&config, 1, argv), "argv");
    check(Py_InitializeFromConfig(&config), "initialization");

    auto rt = std::make_unique<runtime>();
    rt->settings = settings;
    rt->multithread = rt->settings.threads * rt->settings.fibers > 1;

    // On the main thread state, before any fiber exists: pybind11's internals (created lazily with
    // PyGILState_Ensure otherwise), threading (its main thread must be this one), our types,
    // asyncio.
    extend_sys_path(rt->settings);
    init_pybind11_tls();
    if (!py_ref(PyImport_ImportModule("threading"))) throw_python("cannot import threading");
    // Every logging record carries the id of the request it was emitted for (%(request_id)s in
    // a format), without a filter to install: the record factory asks corgi.
    {
        static const char* install = R"PY(
import logging as _logging
import corgi as _corgi

def _install(previous=_logging.getLogRecordFactory(), request_id=_corgi.request_id):
    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        record.request_id = request_id() or "-"
        return record
    _logging.setLogRecordFactory(factory)

_install()
)PY";
        py_ref globals(PyDict_New());
        if (!globals ||
            PyDict_SetItemString(globals.get(), "__builtins__", PyEval_GetBuiltins()) != 0 ||
            !py_ref(PyRun_String(install, Py_file_input, globals.get(), globals.get())))
            throw_python("cannot install the request id in logging records");
    }
    // A worker the master finds hung gets SIGABRT: faulthandler writes every thread's Python
    // stack to stderr first. Only SIGABRT: the other fatal signals keep the handlers they had
    // (the fibers' stack-overflow handler, AddressSanitizer's), which faulthandler would replace.
    {
        static constexpr int kept[4] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};
        struct restore {
            struct sigaction actions[4];
            restore() {
                for (int i = 0; i < 4; ++i) ::sigaction(kept[i], nullptr, &actions[i]);
            }
            ~restore() {
                for (int i = 0; i < 4; ++i) ::sigaction(kept[i], &actions[i], nullptr);
            }
        } restore_after;
        py_ref faulthandler(PyImport_ImportModule("faulthandler"));
        py_ref enable(faulthandler ? PyObject_GetAttrString(faulthandler.get(), "enable")
                                   : nullptr);
        if (!enable || !py_ref(PyObject_CallNoArgs(enable.get())))
            throw_python("cannot enable faulthandler");
    }
    py_ref traceback(PyImport_ImportModule("traceback"));
    if (!traceback) throw_python("cannot import traceback");
    g_format_exception = PyObject_GetAttrString(traceback.get(), "format_exception");
    if (!g_format_exception || !init_wsgi_types() ||
        !init_environ(rt->multithread, rt->settings.multiprocess) ||
        !init_asyncio_bridge(rt->settings.async_views_hook)) {
        throw_python("cannot set up the WSGI runtime");
    }

    // Published without lanes: load() works on the main thread, which keeps the GIL until
    // start_lanes(); no request can come before the lanes (the server runs after them).
    g_runtime.store(rt.release(), std::memory_order_release);
}

namespace {
void start_lanes_on(corgi::server* srv) {
    std::lock_guard lock(g_lifetime_mutex);
    runtime* rt = g_runtime.load();
    if (!rt || !rt->lanes.empty()) return;
    install_overflow_handler();
    ensure_alternate_signal_stack();
    const std::size_t stack_bytes = rt->settings.fiber_stack_kib * 1024;
    if (srv) {
        rt->settings.threads = srv->io_thread_count();
        for (std::size_t i = 0; i < rt->settings.threads; ++i)
            rt->lanes.push_back(std::make_unique<lane>(i, rt->settings.fibers, stack_bytes,
                                                       &srv->io_context_of(i)));
        rt->lanes_on_io_threads = true;
        srv->set_io_loop([rt](std::size_t i, net::io_context&) {
            ensure_alternate_signal_stack();
            rt->lanes[i]->run_on_io_thread();
        });
    } else {
        for (std::size_t i = 0; i < rt->settings.threads; ++i)
            rt->lanes.push_back(std::make_unique<lane>(i, rt->settings.fibers, stack_bytes, nullptr,
                                                       static_cast<int>(rt->settings.lane_nice)));
    }
    stats::current().lanes.store(rt->settings.threads, std::memory_order_relaxed);
    stats::current().fiber_capacity.store(rt->settings.threads * rt->settings.fibers,
                                          std::memory_order_relaxed);
    init_deadlines();                       // before any request can time out
    rt->main_tstate = PyEval_SaveThread();  // the lanes take the GIL in turn from now on
    for (auto& l : rt->lanes) l->start();
    // Here, not in start_interpreter(): threads do not survive a fork, each worker has its own.
    rt->harakiri = std::make_unique<watchdog>(rt->settings.harakiri_grace);
    rt->harakiri->start();
}
}  // namespace

void start_lanes() { start_lanes_on(nullptr); }

void start_lanes(corgi::server& srv) {
    const runtime* rt = g_runtime.load();
    const bool on_io = rt && rt->settings.python_on_io_threads == lane_placement::io_threads;
    start_lanes_on(on_io ? &srv : nullptr);
}

// The main thread holds the GIL between start_interpreter() and start_lanes(): these are
// CPython's own fork hooks (import lock, threading's after-fork state, os.register_at_fork).
void before_fork() noexcept {
    if (g_runtime.load()) PyOS_BeforeFork();
}
void after_fork_in_parent() noexcept {
    if (g_runtime.load()) PyOS_AfterFork_Parent();
}
void after_fork_in_child() noexcept {
    if (g_runtime.load()) PyOS_AfterFork_Child();
}

bool stuck_at_shutdown() noexcept { return g_stuck_at_shutdown; }

void shutdown() {
    std::lock_guard lock(g_lifetime_mutex);
    runtime* rt = g_runtime.exchange(nullptr);
    if (!rt) return;
    if (rt->lanes.empty()) return;  // a preloading master: it exits without finalizing
    if (rt->harakiri) rt->harakiri->stop();
    std::size_t busy = 0;
    bool stuck = false;
    for (auto& l : rt->lanes) {
        busy += l->stop();
        stuck = stuck || l->stuck();
    }
    if (stuck) {
        // A lane thread still runs Python and may hold the GIL: taking it here would wait forever.
        log::warning("wsgi: a request is still running Python " +
                     std::to_string(lane::stop_wait.count()) +
                     " s after the graceful timeout (a loop or a blocking C call): the process "
                     "exits without finalizing the interpreter");
        g_stuck_at_shutdown = true;
        return;
    }
    PyEval_RestoreThread(rt->main_tstate);
    g_finalized = true;
    // The runtime (lanes, pooled calls) is left allocated: a handler racing with shutdown must find
    // memory, not a freed lane.
    if (busy > 0) {
        log::warning(
            "wsgi: " + std::to_string(busy) +
            " request(s) still inside Python at shutdown: the interpreter is not finalized");
        PyEval_SaveThread();
        return;
    }
    if (Py_FinalizeEx() != 0)
        log::warning("wsgi: errors while finalizing Python (buffered output lost?)");
}

}  // namespace corgi::wsgi
