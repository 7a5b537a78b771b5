// The `corgi` module. Every function that may suspend a fiber is raw C API: a pybind11-bound
// function keeps thread-local call state that fibers resumed out of order would corrupt. Outside a
// request (import time, app threads) the waits block the calling thread with the GIL released, so
// library code works anywhere.
#include "python.hpp"

#include "corgi_module.hpp"

#include "asyncio_bridge.hpp"
#include "call.hpp"
#include "fiber.hpp"
#include "lane.hpp"
#include "runtime.hpp"

#include <corgi/wsgi/wsgi.hpp>
#include "wsgi_call.hpp"

#include <fcntl.h>
#include <poll.h>
#include <time.h>

#include <cerrno>
#include <chrono>
#include <cmath>

namespace corgi::wsgi::detail {

namespace {

// Seconds from a Python number; None -> negative (no limit). False with ValueError for NaN or
// negative values.
bool parse_seconds(PyObject* o, bool none_allowed, double& out) {
    if (o == Py_None && none_allowed) {
        out = -1;
        return true;
    }
    out = PyFloat_AsDouble(o);
    if (out == -1 && PyErr_Occurred()) return false;
    if (std::isnan(out) || out < 0) {
        PyErr_SetString(PyExc_ValueError, "seconds must be a non-negative number");
        return false;
    }
    return true;
}

std::chrono::steady_clock::duration to_duration(double seconds) {
    constexpr double max_seconds =
        10.0 * 365 * 24 * 3600;  // beyond this, "forever" is close enough
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(std::min(seconds, max_seconds)));
}

// A lane thread outside any fiber is running the scheduler itself (an asyncio callback): blocking
// it would stall every request of the lane.
bool refuse_on_lane(const char* what) {
    if (lane::current() && !fiber::current()) {
        PyErr_Format(PyExc_RuntimeError,
                     "corgi.%s() cannot block the lane's event loop; in a coroutine use the "
                     "asyncio equivalent",
                     what);
        return true;
    }
    return false;
}

PyObject* corgi_sleep(PyObject*, PyObject* arg) {
    double seconds = 0;
    if (!parse_seconds(arg, false, seconds)) return nullptr;
    fiber* f = fiber::current();
    if (!f) {
        if (refuse_on_lane("sleep")) return nullptr;
        timespec ts{static_cast<time_t>(seconds),
                    static_cast<long>((seconds - std::floor(seconds)) * 1e9)};
        PyThreadState* saved = PyEval_SaveThread();
        while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        PyEval_RestoreThread(saved);
        Py_RETURN_NONE;
    }
    const std::uint64_t token = f->arm();
    f->timer.expires_after(to_duration(seconds));
    f->timer.async_wait([f, token](boost::system::error_code) { f->owner().wake(*f, token); });
    if (!f->wait()) {
        f->timer.cancel();
        return raise_request_timeout(*f->job);
    }
    Py_RETURN_NONE;
}

PyObject* wait_fd(PyObject* args, PyObject* kwargs, bool readable) {
    static const char* keywords[] = {"fd", "timeout", nullptr};
    PyObject* fd_object = nullptr;
    PyObject* timeout_object = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs,
                                     readable ? "O|O:wait_readable" : "O|O:wait_writable",
                                     const_cast<char**>(keywords), &fd_object, &timeout_object))
        return nullptr;
    const int fd = PyObject_AsFileDescriptor(fd_object);
    if (fd < 0) return nullptr;
    double timeout = -1;
    if (!parse_seconds(timeout_object, true, timeout)) return nullptr;

    fiber* f = fiber::current();
    if (!f) {
        if (refuse_on_lane(readable ? "wait_readable" : "wait_writable")) return nullptr;
        pollfd p{fd, static_cast<short>(readable ? POLLIN : POLLOUT), 0};
        const int ms = timeout < 0 ? -1 : static_cast<int>(std::ceil(timeout * 1000));
        PyThreadState* saved = PyEval_SaveThread();
        const int rc = ::poll(&p, 1, ms);
        PyEval_RestoreThread(saved);
        if (rc < 0) return PyErr_SetFromErrno(PyExc_OSError);
        return PyBool_FromLong(rc > 0);
    }

    // Asio registers the descriptor with the lane's epoll: a duplicate, so that two fibers may wait
    // on the same fd and closing ours leaves the app's alone.
    const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return PyErr_SetFromErrno(PyExc_OSError);
    lane& l = f->owner();
    f->descriptor.emplace(l.io(), copy);
    const std::uint64_t token = f->arm();
    f->wait_result = 0;
    f->descriptor->async_wait(
        readable ? net::posix::descriptor_base::wait_read : net::posix::descriptor_base::wait_write,
        [f, token](boost::system::error_code ec) {
            if (ec == net::error::operation_aborted || !f->accepts(token)) return;
            f->wait_result = 1;  // ready, or in error: either way the app's next call will tell
            f->owner().wake(*f, token);
        });
    if (timeout >= 0) {
        f->timer.expires_after(to_duration(timeout));
        f->timer.async_wait([f, token](boost::system::error_code ec) {
            if (ec == net::error::operation_aborted || !f->accepts(token)) return;
            f->wait_result = 0;
            f->owner().wake(*f, token);
        });
    }
    const bool in_time = f->wait();
    f->timer.cancel();
    f->descriptor
        .reset();  // closes the duplicate; a pending wait completes as aborted and is ignored
    if (!in_time) return raise_request_timeout(*f->job);
    return PyBool_FromLong(f->wait_result);
}

PyObject* corgi_wait_readable(PyObject*, PyObject* args, PyObject* kwargs) {
    return wait_fd(args, kwargs, true);
}
PyObject* corgi_wait_writable(PyObject*, PyObject* args, PyObject* kwargs) {
    return wait_fd(args, kwargs, false);
}

PyObject* corgi_suspend(PyObject*, PyObject*) {
    fiber* f = fiber::current();
    if (!f) Py_RETURN_NONE;  // nothing else to run on this thread
    const std::uint64_t token = f->arm();
    f->owner().wake_later(
        *f, token);  // behind the handlers already queued: other fibers and I/O go first
    if (!f->wait()) return raise_request_timeout(*f->job);
    Py_RETURN_NONE;
}

PyObject* corgi_await(PyObject*, PyObject* awaitable) {
    if (!is_awaitable(awaitable)) {
        PyErr_Format(PyExc_TypeError,
                     "corgi.await_() takes a coroutine, a future or another awaitable, not %.100s",
                     Py_TYPE(awaitable)->tp_name);
        return nullptr;
    }
    return await_in_fiber(awaitable);
}

PyObject* corgi_lane_loop(PyObject*, PyObject*) { return lane_event_loop(); }

// Functions to call in each worker after its fork (uWSGI's @postfork); a list owned by the
// module, called by run_postfork_hooks().
PyObject* g_postfork_hooks = nullptr;

PyObject* corgi_postfork(PyObject*, PyObject* fn) {
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "corgi.postfork() takes a callable, not %.100s",
                     Py_TYPE(fn)->tp_name);
        return nullptr;
    }
    if (!g_postfork_hooks && !(g_postfork_hooks = PyList_New(0))) return nullptr;
    if (PyList_Append(g_postfork_hooks, fn) != 0) return nullptr;
    Py_INCREF(fn);
    return fn;  // a decorator: the function stays what it was
}

// The id of the request this code serves (its X-Request-Id), None outside a request.
PyObject* corgi_request_id(PyObject*, PyObject*) {
    fiber* f = fiber::current();
    if (!f || !f->job || f->job->request_id.empty()) Py_RETURN_NONE;
    const std::string& id = f->job->request_id;
    return PyUnicode_DecodeLatin1(id.data(), static_cast<Py_ssize_t>(id.size()), nullptr);
}

PyObject* corgi_in_request(PyObject*, PyObject*) {
    return PyBool_FromLong(fiber::current() != nullptr);
}

PyMethodDef corgi_methods[] = {
    {"sleep", corgi_sleep, METH_O,
     "sleep(seconds): suspend this request for `seconds`; other requests keep running."},
    {"wait_readable",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(corgi_wait_readable)),
     METH_VARARGS | METH_KEYWORDS,
     "wait_readable(fd, timeout=None) -> bool: suspend until fd (an int or an object with "
     "fileno()) is "
     "readable; False on timeout."},
    {"wait_writable",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(corgi_wait_writable)),
     METH_VARARGS | METH_KEYWORDS,
     "wait_writable(fd, timeout=None) -> bool: suspend until fd is writable; False on timeout."},
    {"suspend", corgi_suspend, METH_NOARGS,
     "suspend(): let the other requests of this lane run, then continue."},
    {"await_", corgi_await, METH_O,
     "await_(awaitable): run a coroutine or future on the lane's asyncio loop and return its "
     "result; this "
     "request waits, the others keep running."},
    {"in_request", corgi_in_request, METH_NOARGS,
     "in_request() -> bool: whether this code serves a request."},
    {"request_id", corgi_request_id, METH_NOARGS,
     "request_id() -> str | None: the id of the request being served (its X-Request-Id, in the "
     "access log line too); None outside a request. logging records carry it as "
     "record.request_id ('-' outside a request)."},
    {"postfork", corgi_postfork, METH_O,
     "@corgi.postfork: call this function (no arguments) in each worker process after it is "
     "forked, before it serves (with apps preloaded in the master), or once the apps are imported "
     "(--lazy-apps, a single process); e.g. to reconnect to a database. An exception stops the "
     "worker's boot."},
    {"_lane_loop", corgi_lane_loop, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef corgi_module_def = {
    PyModuleDef_HEAD_INIT,
    "corgi",
    "corgi: suspension points and asyncio for WSGI apps served by corgi.",
    -1,
    corgi_methods,
    nullptr,
    nullptr,
    nullptr,
    nullptr};

PyObject* init_corgi_module() {
    PyObject* module = PyModule_Create(&corgi_module_def);
    if (!module) return nullptr;
    PyObject* timeout = request_timeout_type();
    if (!timeout || PyModule_AddObjectRef(module, "RequestTimeout", timeout) != 0) {
        Py_DECREF(module);
        return nullptr;
    }
    return module;
}

}  // namespace

void register_corgi_module() { PyImport_AppendInittab("corgi", init_corgi_module); }

}  // namespace corgi::wsgi::detail

namespace corgi::wsgi {

void run_postfork_hooks() {
    if (!detail::current_runtime()) return;
    PyGILState_STATE gil = PyGILState_Ensure();
    std::string failure;
    if (detail::g_postfork_hooks) {
        detail::py_ref hooks(PyList_GetSlice(detail::g_postfork_hooks, 0, PY_SSIZE_T_MAX));
        for (Py_ssize_t i = 0; hooks && i < PyList_GET_SIZE(hooks.get()); ++i) {
            detail::py_ref result(PyObject_CallNoArgs(PyList_GET_ITEM(hooks.get(), i)));
            if (!result) {
                failure = detail::fetch_traceback();
                break;
            }
        }
    }
    PyGILState_Release(gil);
    if (!failure.empty()) throw load_error("a @corgi.postfork function failed:\n" + failure);
}

}  // namespace corgi::wsgi
