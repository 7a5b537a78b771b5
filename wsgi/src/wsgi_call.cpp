// The fiber side of a WSGI request (PEP 3333): calls the app, turns its iterable into a
// corgi::response (bytes in memory, a file range for sendfile, or chunks streamed with
// backpressure), and maps failures to a 500 or to an aborted connection. close() of the iterable is
// always called.
#include "python.hpp"

#include "wsgi_call.hpp"

#include "asyncio_bridge.hpp"
#include "call.hpp"
#include "environ.hpp"
#include "fiber.hpp"
#include "lane.hpp"
#include "runtime.hpp"
#include "wsgi_types.hpp"

#include <corgi/core/log.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <string>

namespace corgi::wsgi::detail {

namespace {

const char* short_reason(int status) {
    switch (status) {
        case 400:
            return "Bad Request";
        case 408:
            return "Request Timeout";
        case 413:
            return "Content Too Large";
        case 503:
            return "Service Unavailable";
        default:
            return "Internal Server Error";
    }
}

response error_response(int status) {
    response r(status);
    r.headers.add("Content-Type", "text/plain; charset=utf-8");
    r.body = std::to_string(status) + " " + short_reason(status) + "\n";
    return r;
}

lane& lane_of(call& c) { return *c.home; }

// The complete (non-streamed) response goes to the io side.
void hand_over(call& c) {
    c.streaming = false;
    c.headers_sent = true;
    if (!c.io_released) {
        c.io_released = true;
        lane_of(c).post_io(c, io_event::response_ready);
    }
}

bool client_gone(const call& c) { return c.io_released && c.message == lane_msg::abort; }

// With the Python exception pending (or not): logs it with its traceback, then answers 500 (or the
// status of a failed body read) when the headers have not gone out, else makes the io side abort
// the connection.
void fail(call& c, const char* what) {
    const bool deadline = c.timed_out.load(std::memory_order_relaxed) && PyErr_Occurred() &&
                          request_timeout_type() && PyErr_ExceptionMatches(request_timeout_type());
    std::string tb = fetch_traceback();
    if (deadline) {
        // Expected: the request ran past its deadline and ended through RequestTimeout (the
        // client has its 504). Where it was is worth knowing: the traceback goes along.
        // (c.req is the connection's, which has moved on: not to be read here.)
        log::warning(log::for_request(c.request_id),
                     "wsgi: " + c.app->spec + ": request ended by its deadline (RequestTimeout)",
                     tb);
    } else if (client_gone(c)) {
        // The app saw the client leave (write() or wsgi.input raised): expected, not an app error.
        log::info(log::for_request(c.request_id), "wsgi: " + c.app->spec + ": client went away");
    } else {
        log::error(log::for_request(c.request_id),
                   "wsgi: " + c.app->spec + " (request " +
                       (c.request_id.empty() ? std::string("-") : c.request_id) + "): " + what,
                   tb);
    }
    if (!c.headers_sent) {
        c.resp = error_response(c.failed_read_status ? c.failed_read_status : 500);
        hand_over(c);
    } else if (!c.io_released) {
        c.io_released = true;
        lane_of(c).post_io(c, io_event::failed);
    }
}

// Calls result.close() when it has one. False with a Python exception when close() raised.
bool close_result(PyObject* result) {
    py_ref close(PyObject_GetAttrString(result, "close"));
    if (!close) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return false;
        PyErr_Clear();
        return true;
    }
    return py_ref(PyObject_CallNoArgs(close.get())).get() != nullptr;
}

// An exception is pending: close() the iterable anyway (logging what close() raises), then fail.
void fail_and_close(call& c, PyObject* result, const char* what) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (result && !close_result(result)) {
        log::error(log::for_request(c.request_id),
                   "wsgi: " + c.app->spec + " (request " + c.request_id +
                       "): close() of the response iterable raised",
                   fetch_traceback());
    }
    PyErr_Restore(type, value, tb);
    fail(c, what);
}

// wsgi.file_wrapper over a regular file: the protocol sends it with sendfile(). 1 when used, 0 to
// fall back to iterating the wrapper (no fileno(), not a regular file), never an error.
int try_file_range(call& c, file_wrapper_object* w) {
    if (!c.headers_set || !w->filelike) return 0;
    py_ref fileno(PyObject_CallMethod(w->filelike, "fileno", nullptr));
    if (!fileno) {
        PyErr_Clear();  // BytesIO and friends: io.UnsupportedOperation
        return 0;
    }
    const long fd = PyLong_AsLong(fileno.get());
    if (fd < 0) {
        PyErr_Clear();
        return 0;
    }
    struct stat st {};
    if (::fstat(static_cast<int>(fd), &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    // Where the app left the file: Python's buffered position (tell()), not the descriptor's.
    off_t offset = -1;
    if (py_ref pos{PyObject_CallMethod(w->filelike, "tell", nullptr)}) {
        offset = static_cast<off_t>(PyLong_AsLongLong(pos.get()));
    }
    if (offset < 0) {
        PyErr_Clear();
        offset = ::lseek(static_cast<int>(fd), 0, SEEK_CUR);
        if (offset < 0) return 0;
    }
    // The rest of the file. A Content-Length the app set is kept by the protocol's writer, as
    // for any other body: what goes past it is dropped (and logged), a shortfall truncates.
    const std::uint64_t length =
        st.st_size > offset ? static_cast<std::uint64_t>(st.st_size - offset) : 0;
    const int copy = ::fcntl(static_cast<int>(fd), F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return 0;
    c.resp.body = file_range{file_descriptor(copy), static_cast<std::uint64_t>(offset), length};
    return 1;
}

// A list or tuple of bytes: the whole body is in memory already, so it goes out with a
// Content-Length.
void deliver_sequence(call& c, PyObject* result) {
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(result);
    PyObject** items = PySequence_Fast_ITEMS(result);
    std::size_t total = 0;
    for (Py_ssize_t i = 0; i < n; ++i) {
        if (!PyBytes_Check(items[i])) {
            PyErr_Format(PyExc_TypeError,
                         "the response iterable must yield bytes, item %zd is %.100s", i,
                         Py_TYPE(items[i])->tp_name);
            return fail(c, "returned a bad response body");
        }
        total += static_cast<std::size_t>(PyBytes_GET_SIZE(items[i]));
    }
    if (!c.headers_set) {
        PyErr_SetString(PyExc_AssertionError,
                        "the application returned without calling start_response()");
        return fail(c, "broke the WSGI protocol");
    }
    std::string body;
    body.reserve(total);
    for (Py_ssize_t i = 0; i < n; ++i) {
        body.append(PyBytes_AS_STRING(items[i]),
                    static_cast<std::size_t>(PyBytes_GET_SIZE(items[i])));
    }
    c.resp.body = std::move(body);
    hand_over(c);
}

void deliver(call& c, PyObject* result) {
    if (Py_IS_TYPE(result, file_wrapper_type()) && !c.headers_sent &&
        try_file_range(c, reinterpret_cast<file_wrapper_object*>(result)) == 1) {
        if (!close_result(result)) return fail(c, "close() of the file wrapper raised");
        return hand_over(c);
    }
    if ((PyList_CheckExact(result) || PyTuple_CheckExact(result)) && !c.headers_sent) {
        return deliver_sequence(c, result);  // lists and tuples have no close()
    }
    py_ref it(PyObject_GetIter(result));
    if (!it) {
        PyErr_Format(PyExc_TypeError,
                     "the application must return an iterable of bytes, not %.100s",
                     Py_TYPE(result)->tp_name);
        return fail_and_close(c, result, "returned a non-iterable");
    }
    for (;;) {
        py_ref item(PyIter_Next(it.get()));
        if (!item) {
            if (PyErr_Occurred())
                return fail_and_close(c, result, "raised while producing the response body");
            break;
        }
        if (!PyBytes_Check(item.get())) {
            PyErr_Format(PyExc_TypeError, "the response iterable must yield bytes, not %.100s",
                         Py_TYPE(item.get())->tp_name);
            return fail_and_close(c, result, "returned a bad response body");
        }
        if (PyBytes_GET_SIZE(item.get()) == 0) continue;
        if (!c.headers_set) {
            PyErr_SetString(PyExc_AssertionError,
                            "the response body started before start_response() was called");
            return fail_and_close(c, result, "broke the WSGI protocol");
        }
        if (!send_chunk(c, item.get())) {
            if (PyErr_Occurred())  // RequestTimeout: the deadline passed while it waited
                return fail_and_close(c, result, "ran past its deadline");
            // The client is gone: stop producing, but close() all the same.
            if (!close_result(result)) {
                log::error(log::for_request(c.request_id),
                           "wsgi: " + c.app->spec + " (request " + c.request_id +
                               "): close() of the response iterable raised",
                           fetch_traceback());
            }
            return;
        }
    }
    if (!close_result(result)) return fail(c, "close() of the response iterable raised");
    if (!c.headers_sent) {
        if (!c.headers_set) {
            PyErr_SetString(PyExc_AssertionError,
                            "the application returned without calling start_response()");
            return fail(c, "broke the WSGI protocol");
        }
        c.resp.body = std::string();
        return hand_over(c);
    }
    if (!c.io_released) {
        c.io_released = true;
        lane_of(c).post_io(c, io_event::end);
    }
}

void serve(call& c, PyObject* environ, PyObject* start_response) {
    py_ref result(PyObject_CallFunctionObjArgs(c.app->callable, environ, start_response, nullptr));
    if (!result) return fail(c, "the application raised");
    if (is_awaitable(result.get())) {
        // An async def app (or one returning a future): run it on the lane's asyncio loop, then use
        // what it produced, which may itself be a WSGI app such as a werkzeug Response.
        result = py_ref(await_in_fiber(result.get()));
        if (!result) return fail(c, "the awaited application raised");
        if (PyCallable_Check(result.get()) && !PyList_Check(result.get()) &&
            !PyTuple_Check(result.get())) {
            result = py_ref(
                PyObject_CallFunctionObjArgs(result.get(), environ, start_response, nullptr));
            if (!result) return fail(c, "the WSGI app returned by the coroutine raised");
        }
    }
    deliver(c, result.get());
}

}  // namespace

bool send_chunk(call& c, PyObject* bytes) {
    if (c.io_released) {
        raise_if_timed_out(c);
        return false;
    }
    lane& l = lane_of(c);
    const std::string_view data(PyBytes_AS_STRING(bytes),
                                static_cast<std::size_t>(PyBytes_GET_SIZE(bytes)));
    std::uint8_t events = 0;
    if (!c.headers_sent) {
        c.headers_sent = true;
        c.streaming = true;
        events = io_event::response_ready;
        if (const std::string* length = c.resp.headers.find("Content-Length")) {
            std::int64_t n = 0;
            auto [end, ec] = std::from_chars(length->data(), length->data() + length->size(), n);
            if (ec == std::errc() && end == length->data() + length->size()) c.declared_length = n;
        }
    }
    c.body_posted += data.size();
    lane_msg answer = lane_msg::next_chunk;
    if (data.size() <= call::max_copied_chunk) {
        // Copied: the io side writes it while the app produces the next one.
        bool full = false;
        if (!l.post_io(c, events, data, &full)) {
            answer = c.message = lane_msg::abort;
        } else if (full) {
            answer = l.await_message(c);  // backpressure: the client reads slower than we produce
        } else if (l.on_io_thread() &&
                   (c.declared_length < 0 ||
                    c.body_posted < static_cast<std::uint64_t>(c.declared_length))) {
            // On an io thread the io side writes only when the fiber stops: it stops here, so
            // the block is on its way before the app makes the next. A body known complete (its
            // Content-Length reached, as framework responses are) goes on to the end and out in
            // one write.
            if (!l.let_io_write(c)) answer = lane_msg::timeout;
        }
    } else {
        // Written from the bytes object itself, the fiber waiting: large bodies are not copied.
        c.chunk_object = py_ref::borrow(bytes);
        c.chunk = data;
        answer = l.exchange(c, events | io_event::big_chunk);
        c.chunk_object.reset();
        c.chunk = {};
    }
    if (answer == lane_msg::timeout) {
        c.io_released = true;
        raise_request_timeout(c);
        return false;
    }
    if (answer == lane_msg::abort) {
        c.io_released = true;
        raise_if_timed_out(c);
        return false;
    }
    return true;
}

bool on_request_fiber(const call& c, const char* what, const char* advice) {
    if (fiber::current() == c.runner) return true;
    PyErr_Format(PyExc_RuntimeError,
                 "%s, and only the request itself can wait for the client: its WSGI call and "
                 "the coroutines it awaits, not a task created before it awaited, not another "
                 "thread: %s",
                 what, advice);
    return false;
}

int read_more(call& c) {
    if (c.body_eof) return 0;
    if (c.io_released || c.timed_out.load(std::memory_order_acquire)) {
        if (!raise_if_timed_out(c))
            PyErr_SetString(PyExc_ConnectionResetError,
                            "the request is over: its body can no longer be read");
        return -1;
    }
    if (!c.has_body) {
        c.body_eof = true;
        return 0;
    }
    if (!on_request_fiber(c, "wsgi.input needs more of the request body",
                          "read it in the request or in a coroutine it awaits"))
        return -1;
    const lane_msg answer = lane_of(c).exchange(c, io_event::need_body);
    if (answer == lane_msg::timeout) {
        c.io_released = true;
        raise_request_timeout(c);
        return -1;
    }
    if (answer == lane_msg::abort) {
        c.io_released = true;
        if (!raise_if_timed_out(c))
            PyErr_SetString(PyExc_ConnectionResetError, "the client closed the connection");
        return -1;
    }
    if (c.body_error_status) {
        c.failed_read_status = c.body_error_status;
        c.body_eof = true;
        PyErr_Format(PyExc_OSError, "reading the request body failed: %d %s", c.body_error_status,
                     c.body_error.c_str());
        return -1;
    }
    if (c.body_piece.empty()) {
        c.body_eof = true;
        return 0;
    }
    c.input_buffer.append(c.body_piece);
    c.body_piece = {};
    return 1;
}

namespace {
PyObject* g_request_timeout = nullptr;
PyObject* g_enter_bytecode = nullptr;  // lambda: None
}  // namespace

void init_deadlines() {
    (void)request_timeout_type();
    if (!g_enter_bytecode) {
        py_ref globals(PyDict_New());
        if (globals &&
            PyDict_SetItemString(globals.get(), "__builtins__", PyEval_GetBuiltins()) == 0)
            g_enter_bytecode =
                PyRun_String("lambda: None", Py_eval_input, globals.get(), globals.get());
        if (!g_enter_bytecode) PyErr_Clear();
    }
}

bool take_posted_timeout() {
    PyThreadState* ts = PyThreadState_Get();
    if (!ts->async_exc) return false;
    // Entering bytecode raises it (a function's first instruction checks for it), which is also
    // how CPython clears the interpreter-wide flag that makes every thread look for one; dropping
    // it by hand would leave that flag set.
    if (g_enter_bytecode) {
        if (py_ref(PyObject_CallNoArgs(g_enter_bytecode))) Py_CLEAR(ts->async_exc);  // not raised?
        if (PyErr_Occurred()) return true;
    } else {
        Py_CLEAR(ts->async_exc);
    }
    if (PyObject* type = request_timeout_type())
        PyErr_SetString(type, "the request ran past its deadline; the client got 504");
    return true;
}

PyObject* request_timeout_type() {
    PyObject*& type = g_request_timeout;
    if (!type) {
        type = PyErr_NewExceptionWithDoc(
            "corgi.RequestTimeout",
            "The request ran past its deadline (--harakiri, or its route's \"timeout\"); the "
            "client has been answered 504 Gateway Timeout. Raised inside the request: at the "
            "point where it waits, or asynchronously in the bytecode it runs. A BaseException, "
            "like KeyboardInterrupt, so that `except Exception` does not swallow it; `finally` "
            "blocks and the response iterable's close() run as usual.",
            PyExc_BaseException, nullptr);
        if (!type) PyErr_Clear();  // only without memory; callers then raise nothing
    }
    return type;
}

PyObject* raise_request_timeout(call& c) {
    c.timeout_raised = true;
    if (take_posted_timeout()) return nullptr;  // the watchdog's, not reached before this wait
    if (PyObject* type = request_timeout_type())
        PyErr_SetString(type, "the request ran past its deadline; the client got 504");
    return nullptr;
}

bool raise_if_timed_out(call& c) {
    if (!c.timed_out.load(std::memory_order_acquire) || c.timeout_raised) return false;
    raise_request_timeout(c);
    return true;
}

void run_wsgi_call(fiber& f, call& c) noexcept {
    (void)f;
    if (c.timed_out.load(std::memory_order_acquire)) {
        // Its deadline passed while it queued for a fiber: the client has its 504 already.
        log::warning("wsgi: " + c.app->spec +
                     ": a request's deadline passed before its lane could start it (the lane was "
                     "busy: all its fibers taken, or one request holding it in C code); skipped");
        lane_of(c).finish_call(c);
        return;
    }
    // A fresh contextvars.Context per request: values set by one request are never seen by the
    // next.
    py_ref context(PyContext_New());
    const bool entered = context && PyContext_Enter(context.get()) == 0;
    py_ref input(new_input(&c));
    py_ref start_response(new_start_response(&c));
    py_ref environ;
    if (entered && input && start_response) environ = py_ref(build_environ(c, input.get()));
    if (environ) {
        serve(c, environ.get(), start_response.get());
    } else {
        fail(c, "could not build the WSGI environ");
    }
    detach(input.get());
    detach(start_response.get());
    environ.reset();
    input.reset();
    start_response.reset();
    if (entered) PyContext_Exit(context.get());
    PyErr_Clear();
    lane_of(c).finish_call(c);
}

void reset_thread_state(PyThreadState* ts) noexcept {
    PyErr_Clear();
    // A RequestTimeout posted by the watchdog that the request ended before reaching: it must not
    // fire in the next request of this fiber (ts is the current thread state: the fiber's).
    if (ts->async_exc && take_posted_timeout()) PyErr_Clear();
    PyErr_SetExcInfo(nullptr, nullptr, nullptr);
    // threading.local keeps its values in the thread state's dict: replace it so the next request
    // on this fiber starts empty. asyncio caches a borrowed pointer to its running-loop holder,
    // kept in that dict: the holder moves to the new dict so that cache never dangles.
    if (PyObject* old = ts->dict) {
        static PyObject* const holder_key =
            PyUnicode_InternFromString("__asyncio_running_event_loop__");
        PyObject* holder = PyDict_GetItemWithError(old, holder_key);
        if (PyDict_GET_SIZE(old) == (holder ? 1 : 0)) return PyErr_Clear();
        PyObject* fresh = PyDict_New();
        if (!fresh || (holder && PyDict_SetItem(fresh, holder_key, holder) != 0)) {
            Py_XDECREF(fresh);
            PyErr_Clear();
            return;
        }
        ts->dict = fresh;
        Py_DECREF(old);  // threading.local values of the request die here (their __del__ runs on
                         // this fiber)
        PyErr_Clear();
    }
}

}  // namespace corgi::wsgi::detail
