// asyncio on corgi's lanes. Drives asyncio's own SelectorEventLoop one _run_once() at a time from
// the lane's io_context (private asyncio internals of CPython 3.11: _run_once, _ready, _scheduled,
// _selector).
#include "python.hpp"

#include "asyncio_bridge.hpp"

#include "fiber.hpp"
#include "lane.hpp"

#include <corgi/core/log.hpp>

#include <boost/asio/post.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>

namespace corgi::wsgi::detail {

namespace {

// The Python half: a loop whose selector never blocks and whose call_soon/call_at poke the lane,
// and a policy that hands the lane's loop to synchronous code running in a request.
constexpr const char* bridge_source = R"PY(
import asyncio, selectors, threading

class _NonBlockingSelector(selectors.DefaultSelector):
    # asyncio's _run_once() must never block: the lane waits on this selector's fd with everything else.
    def select(self, timeout=None):
        return super().select(0)

class CorgiEventLoop(asyncio.SelectorEventLoop):
    """The asyncio loop of one corgi lane, driven by corgi's scheduler."""

    def __init__(self, kick):
        super().__init__(_NonBlockingSelector())
        self._corgi_kick = kick
        # is_running() is True: nobody may run this loop themselves (corgi does, step by step).
        self._thread_id = threading.get_ident()

    def call_soon(self, callback, *args, context=None):
        handle = super().call_soon(callback, *args, context=context)
        self._corgi_kick()
        return handle

    def call_at(self, when, callback, *args, context=None):
        handle = super().call_at(when, callback, *args, context=context)
        self._corgi_kick()
        return handle

    def run_forever(self):
        raise RuntimeError("corgi runs this event loop; in a request, use corgi.await_(awaitable)")

    def run_until_complete(self, future):
        raise RuntimeError("corgi runs this event loop; in a request, use corgi.await_(awaitable)")

    def close(self):
        pass  # owned by corgi: closed with its lane


class CorgiEventLoopPolicy(type(asyncio.get_event_loop_policy())):
    """Inside a corgi lane, asyncio.get_event_loop() is the lane's loop."""

    def get_event_loop(self):
        import corgi
        loop = corgi._lane_loop()
        if loop is not None:
            return loop
        return super().get_event_loop()


asyncio.set_event_loop_policy(CorgiEventLoopPolicy())
)PY";

PyObject* g_loop_class = nullptr;
PyObject* g_ensure_future = nullptr;
PyObject* g_set_running_loop = nullptr;
PyObject* g_noop = nullptr;

PyObject* kick_impl(PyObject* self, PyObject*) {
    auto* l = static_cast<lane*>(PyCapsule_GetPointer(self, "corgi.lane"));
    if (!l) return nullptr;
    if (aio_driver* d = l->asyncio()) d->kick();
    Py_RETURN_NONE;
}
PyMethodDef kick_def = {"_corgi_kick", kick_impl, METH_NOARGS, nullptr};

// Done-callback of the Task a fiber awaits: wakes that fiber (later, from the lane's loop).
struct waker_object {
    PyObject_HEAD fiber* target;
    std::uint64_t token;
};

PyObject* waker_call(PyObject* self, PyObject*, PyObject*) {
    auto* w = reinterpret_cast<waker_object*>(self);
    if (w->target) w->target->owner().wake_later(*w->target, w->token);
    w->target = nullptr;
    Py_RETURN_NONE;
}

void waker_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

PyType_Slot waker_slots[] = {{Py_tp_call, reinterpret_cast<void*>(waker_call)},
                             {Py_tp_dealloc, reinterpret_cast<void*>(waker_dealloc)},
                             {0, nullptr}};
PyType_Spec waker_spec = {"corgi._Waker", sizeof(waker_object), 0,
                          Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, waker_slots};
PyTypeObject* g_waker_type = nullptr;

}  // namespace

aio_driver::aio_driver(lane& l) : owner(l), timer(l.io()) {}

aio_driver::~aio_driver() {
    timer.cancel();
    if (selector_fd) selector_fd->close();
    // Tasks may outlive the lane: their loop must not poke it any more.
    if (loop && PyObject_SetAttrString(loop.get(), "_corgi_kick", g_noop) != 0) PyErr_Clear();
}

void aio_driver::kick() {
    if (step_posted) return;
    step_posted = true;
    net::post(owner.io(), [this] { step(); });
}

void aio_driver::step() {
    step_posted = false;
    owner.ensure_gil();
    if (!running_loop_set) {
        // The lane's own thread state runs the steps: from now on get_running_loop() there is this
        // loop.
        py_ref r(PyObject_CallOneArg(g_set_running_loop, loop.get()));
        if (!r) log::error("wsgi: asyncio: " + fetch_traceback());
        running_loop_set = true;
    }
    py_ref r(PyObject_CallNoArgs(run_once.get()));
    if (!r) log::error("wsgi: asyncio loop step failed:\n" + fetch_traceback());
    arm();
}

void aio_driver::arm() {
    const Py_ssize_t due_now = PyObject_Length(ready.get());
    if (due_now < 0) PyErr_Clear();
    if (due_now > 0) kick();
    // The earliest timer (asyncio keeps _scheduled as a heap; _run_once may replace the list).
    if (py_ref scheduled{PyObject_GetAttrString(loop.get(), "_scheduled")};
        scheduled && PyList_Check(scheduled.get()) && PyList_GET_SIZE(scheduled.get()) > 0) {
        py_ref when(PyObject_GetAttrString(PyList_GET_ITEM(scheduled.get(), 0), "_when"));
        py_ref now(PyObject_CallMethod(loop.get(), "time", nullptr));
        if (when && now) {
            double delay = PyFloat_AsDouble(when.get()) - PyFloat_AsDouble(now.get());
            if (!(delay > 0)) delay = 0;
            timer.expires_after(
                std::chrono::microseconds(static_cast<long long>(std::ceil(delay * 1e6))));
            timer.async_wait([this](boost::system::error_code ec) {
                if (!ec) kick();
            });
        }
        PyErr_Clear();
    } else {
        PyErr_Clear();
    }
    if (!fd_waiting && selector_fd) {
        fd_waiting = true;
        selector_fd->async_wait(net::posix::descriptor_base::wait_read,
                                [this](boost::system::error_code ec) {
                                    fd_waiting = false;
                                    if (!ec) kick();
                                });
    }
}

bool init_asyncio_bridge() {
    g_waker_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&waker_spec));
    if (!g_waker_type) return false;
    py_ref code(Py_CompileString(bridge_source, "<corgi asyncio bridge>", Py_file_input));
    if (!code) return false;
    py_ref module(PyImport_ExecCodeModule("_corgi_asyncio", code.get()));
    if (!module) return false;
    g_loop_class = PyObject_GetAttrString(module.get(), "CorgiEventLoop");
    py_ref asyncio(PyImport_ImportModule("asyncio"));
    py_ref events(PyImport_ImportModule("asyncio.events"));
    if (!g_loop_class || !asyncio || !events) return false;
    g_ensure_future = PyObject_GetAttrString(asyncio.get(), "ensure_future");
    g_set_running_loop = PyObject_GetAttrString(events.get(), "_set_running_loop");
    py_ref builtins(PyImport_ImportModule("builtins"));
    py_ref code_noop(Py_CompileString("lambda: None", "<corgi>", Py_eval_input));
    if (!builtins || !code_noop) return false;
    py_ref globals(PyDict_New());
    if (!globals || PyDict_SetItemString(globals.get(), "__builtins__", builtins.get()) != 0)
        return false;
    g_noop = PyEval_EvalCode(code_noop.get(), globals.get(), globals.get());
    return g_ensure_future && g_set_running_loop && g_noop;
}

PyObject* lane_event_loop() {
    lane* l = lane::current();
    if (!l) Py_RETURN_NONE;
    if (aio_driver* d = l->asyncio()) return Py_NewRef(d->loop.get());
    auto d = std::make_unique<aio_driver>(*l);
    py_ref capsule(PyCapsule_New(l, "corgi.lane", nullptr));
    if (!capsule) return nullptr;
    py_ref kick(PyCFunction_NewEx(&kick_def, capsule.get(), nullptr));
    if (!kick) return nullptr;
    d->loop = py_ref(PyObject_CallOneArg(g_loop_class, kick.get()));
    if (!d->loop) return nullptr;
    d->run_once = py_ref(PyObject_GetAttrString(d->loop.get(), "_run_once"));
    d->ready = py_ref(PyObject_GetAttrString(d->loop.get(), "_ready"));
    py_ref selector(PyObject_GetAttrString(d->loop.get(), "_selector"));
    if (!d->run_once || !d->ready || !selector) return nullptr;
    py_ref fileno(PyObject_CallMethod(selector.get(), "fileno", nullptr));
    if (!fileno) return nullptr;
    const int fd = static_cast<int>(PyLong_AsLong(fileno.get()));
    if (fd < 0 && PyErr_Occurred()) return nullptr;
    // Our own descriptor for the same epoll instance: Asio registers and closes it, asyncio keeps
    // its own.
    const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return PyErr_SetFromErrno(PyExc_OSError);
    d->selector_fd.emplace(l->io(), copy);
    PyObject* loop = Py_NewRef(d->loop.get());
    aio_driver* driver = d.get();
    l->set_asyncio(std::move(d));
    driver->kick();
    return loop;
}

bool is_awaitable(PyObject* o) noexcept {
    PyAsyncMethods* am = Py_TYPE(o)->tp_as_async;
    return am && am->am_await;
}

PyObject* await_in_fiber(PyObject* awaitable) {
    fiber* f = fiber::current();
    if (!f) {
        PyErr_SetString(PyExc_RuntimeError,
                        "corgi.await_() can only be called while serving a request");
        return nullptr;
    }
    py_ref loop(lane_event_loop());
    if (!loop) return nullptr;
    py_ref kwargs(Py_BuildValue("{s:O}", "loop", loop.get()));
    py_ref args(PyTuple_Pack(1, awaitable));
    if (!kwargs || !args) return nullptr;
    // The Task copies the current context: the coroutine sees the request's contextvars.
    py_ref future(PyObject_Call(g_ensure_future, args.get(), kwargs.get()));
    if (!future) return nullptr;
    auto* waker = PyObject_New(waker_object, g_waker_type);
    if (!waker) return nullptr;
    waker->target = f;
    waker->token = f->arm();
    py_ref waker_ref(reinterpret_cast<PyObject*>(waker));
    py_ref added(PyObject_CallMethod(future.get(), "add_done_callback", "O", waker_ref.get()));
    if (!added) return nullptr;
    f->wait();
    return PyObject_CallMethod(future.get(), "result", nullptr);
}

}  // namespace corgi::wsgi::detail
