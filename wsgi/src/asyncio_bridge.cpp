// asyncio on corgi's lanes. Drives asyncio's own SelectorEventLoop one _run_once() at a time from
// the lane's io_context (private asyncio internals of CPython 3.11: _run_once, _ready, _scheduled,
// _selector).
#include "python.hpp"

#include "asyncio_bridge.hpp"

#include "fiber.hpp"
#include "lane.hpp"
#include "wsgi_call.hpp"

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
import asyncio, contextvars, selectors, threading
from asyncio import tasks as _tasks

class _NonBlockingSelector(selectors.DefaultSelector):
    # asyncio's _run_once() must never block: the lane waits on this selector's fd with everything else.
    def select(self, timeout=None):
        return super().select(0)


class FiberTask(_tasks._PyTask):
    """A Task of a request that awaits: every step runs on the request's fiber (docs/wsgi.md), so
    that the coroutine may suspend that fiber (wsgi.input, write(), corgi.sleep) and not the lane.

    asyncio's own pure-Python Task, with its step re-routed: _fiber_step (C) hands the step to the
    fiber, which runs _real_step in the task's context. Steps are scheduled in an empty context of
    their own, because a context can be entered by one thread state at a time and the fiber has
    its own."""

    def __init__(self, coro, *, loop, binding, name=None, context=None):
        self._corgi_binding = binding
        self._corgi_context = contextvars.copy_context() if context is None else context
        super().__init__(coro, loop=loop, name=name, context=contextvars.Context())

    def _Task__step(self, exc=None):
        _fiber_step(self, exc)


_real_step = _tasks._PyTask._Task__step


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

    def create_task(self, coro, *, name=None, context=None):
        # Tasks created while a request awaits (its coroutine's own, and those its steps create:
        # gather, wait_for, create_task) run their steps on the request's fiber.
        if self._task_factory is None:
            binding = _fiber_binding()
            if binding is not None:
                self._check_closed()
                return FiberTask(coro, loop=self, binding=binding, name=name, context=context)
        return super().create_task(coro, name=name, context=context)

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


def install_async_views_hook():
    """Flask's and Django's async views go through asgiref's AsyncToSync, which runs the coroutine
    on a new event loop in a new thread and blocks the caller: the whole lane. On a request's
    fiber, run it with corgi.await_ on the lane's loop instead; anywhere else, asgiref's own way."""
    try:
        import asgiref.sync as sync
    except ImportError:
        return
    original = sync.AsyncToSync.__call__
    if getattr(original, "_corgi_original", None) is not None:
        return
    import corgi, functools
    restore_context = getattr(sync, "_restore_context", None)

    async def run(awaitable, contexts):
        try:
            return await awaitable
        finally:
            contexts.append(contextvars.copy_context())

    @functools.wraps(original)
    def __call__(self, *args, **kwargs):
        if not corgi.in_request():
            return original(self, *args, **kwargs)
        contexts = []
        try:
            return corgi.await_(run(self.awaitable(*args, **kwargs), contexts))
        finally:
            # As asgiref does: context variables the coroutine set are seen by the caller.
            if contexts and restore_context is not None:
                restore_context(contexts[0])

    __call__._corgi_original = original
    sync.AsyncToSync.__call__ = __call__
)PY";

PyObject* g_loop_class = nullptr;
PyObject* g_ensure_future = nullptr;
PyObject* g_set_running_loop = nullptr;
PyObject* g_noop = nullptr;
PyObject* g_real_step = nullptr;      // asyncio's Task.__step, run by a FiberTask's fiber
PyObject* g_current_tasks = nullptr;  // asyncio's {loop: running task}
PyObject* g_str_binding = nullptr;
PyObject* g_str_context = nullptr;
PyObject* g_str_step = nullptr;
PyObject* g_str_task_context = nullptr;

PyObject* kick_impl(PyObject* self, PyObject*) {
    auto* l = static_cast<lane*>(PyCapsule_GetPointer(self, "corgi.lane"));
    if (!l) return nullptr;
    if (aio_driver* d = l->asyncio()) d->kick();
    Py_RETURN_NONE;
}
PyMethodDef kick_def = {"_corgi_kick", kick_impl, METH_NOARGS, nullptr};

// Done-callback of the future a fiber awaits: wakes that fiber (later, from the lane's loop) if it
// is idle in await_in_fiber; if it is running a step, it looks at the future when the step ends.
struct waker_object {
    PyObject_HEAD fiber* target;
};

PyObject* waker_call(PyObject* self, PyObject*, PyObject*) {
    auto* w = reinterpret_cast<waker_object*>(self);
    if (fiber* f = w->target; f && f->aio_idle_token) f->owner().wake_later(*f, f->aio_idle_token);
    w->target = nullptr;
    Py_RETURN_NONE;
}

void plain_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

PyType_Slot waker_slots[] = {{Py_tp_call, reinterpret_cast<void*>(waker_call)},
                             {Py_tp_dealloc, reinterpret_cast<void*>(plain_dealloc)},
                             {0, nullptr}};
PyType_Spec waker_spec = {"corgi._Waker", sizeof(waker_object), 0,
                          Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, waker_slots};
PyTypeObject* g_waker_type = nullptr;

// A request's fiber while the request awaits (the outermost await_in_fiber); FiberTasks hold it.
// Afterwards `target` is null and the tasks left behind step on the lane like any other.
struct binding_object {
    PyObject_HEAD fiber* target;
};
PyType_Slot binding_slots[] = {{Py_tp_dealloc, reinterpret_cast<void*>(plain_dealloc)},
                               {0, nullptr}};
PyType_Spec binding_spec = {"corgi._FiberBinding", sizeof(binding_object), 0,
                            Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, binding_slots};
PyTypeObject* g_binding_type = nullptr;

PyObject* loop_of(lane& l) {
    aio_driver* d = l.asyncio();
    return d ? d->loop.get() : nullptr;
}

// asyncio's real step of `task` in the task's own context, on the calling thread state.
PyObject* real_step(PyObject* task, PyObject* exc) {
    py_ref context(PyObject_GetAttr(task, g_str_context));
    if (!context) return nullptr;
    if (!PyContext_CheckExact(context.get())) {
        PyErr_SetString(PyExc_TypeError, "FiberTask._corgi_context is not a Context");
        return nullptr;
    }
    if (PyContext_Enter(context.get()) != 0) return nullptr;
    py_ref r(PyObject_CallFunctionObjArgs(g_real_step, task, exc, nullptr));
    if (PyContext_Exit(context.get()) != 0) return nullptr;
    return r.release();
}

// On fiber `f`: one step of a task bound to it. Nested in a step of another task (a coroutine
// that called corgi.await_), that one stops being asyncio's current task meanwhile.
void run_step_on_fiber(fiber& f, PyObject* task, PyObject* exc) {
    py_ref outer = stash_current_task(f.owner());
    ++f.aio_step_depth;
    py_ref r(real_step(task, exc));
    --f.aio_step_depth;
    if (!r) log::error("wsgi: asyncio task step failed", fetch_traceback());
    if (outer) restore_current_task(f.owner(), std::move(outer));
}

// _fiber_step(task, exc): FiberTask's step, called by the lane's loop. Queued for the task's fiber
// (which runs it at once when idle in its await, else when the step it is in returns), or run
// here when the request no longer awaits.
PyObject* fiber_step_impl(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "_fiber_step(task, exc=None)");
        return nullptr;
    }
    PyObject* task = args[0];
    PyObject* exc = nargs > 1 ? args[1] : Py_None;
    py_ref binding(PyObject_GetAttr(task, g_str_binding));
    if (!binding) return nullptr;
    fiber* f = Py_IS_TYPE(binding.get(), g_binding_type)
                   ? reinterpret_cast<binding_object*>(binding.get())->target
                   : nullptr;
    if (!f) return real_step(task, exc);
    if (fiber::current()) {
        // Only the loop calls steps, on the lane; should anything else, go through the loop.
        py_ref step(PyObject_GetAttr(task, g_str_step));
        py_ref dummy(PyObject_GetAttr(task, g_str_task_context));
        if (!step || !dummy) return nullptr;
        py_ref call_soon(PyObject_GetAttrString(loop_of(f->owner()), "call_soon"));
        py_ref pos(PyTuple_Pack(2, step.get(), exc));
        py_ref kw(Py_BuildValue("{s:O}", "context", dummy.get()));
        if (!call_soon || !pos || !kw) return nullptr;
        py_ref h(PyObject_Call(call_soon.get(), pos.get(), kw.get()));
        if (!h) return nullptr;
        Py_RETURN_NONE;
    }
    f->aio_steps.emplace_back(py_ref::borrow(task), py_ref::borrow(exc));
    // Synchronously: the fiber runs the step now and comes back when it waits again.
    if (f->aio_idle_token) f->owner().wake(*f, f->aio_idle_token);
    Py_RETURN_NONE;
}

// _fiber_binding(): the binding of the request awaiting on the calling fiber, else None.
PyObject* fiber_binding_impl(PyObject*, PyObject*) {
    fiber* f = fiber::current();
    if (f && f->aio_binding) return Py_NewRef(f->aio_binding);
    Py_RETURN_NONE;
}

PyMethodDef bridge_functions[] = {
    {"_fiber_step", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fiber_step_impl)),
     METH_FASTCALL, nullptr},
    {"_fiber_binding", fiber_binding_impl, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr}};

// The request stops awaiting: its tasks' later steps run on the lane; queued ones go back to it.
void end_binding(fiber& f, PyObject* loop) {
    PyObject* b = std::exchange(f.aio_binding, nullptr);
    reinterpret_cast<binding_object*>(b)->target = nullptr;
    Py_DECREF(b);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);  // the await's own outcome, kept
    while (!f.aio_steps.empty()) {
        auto [task, exc] = std::move(f.aio_steps.front());
        f.aio_steps.pop_front();
        py_ref step(PyObject_GetAttr(task.get(), g_str_step));
        py_ref dummy(PyObject_GetAttr(task.get(), g_str_task_context));
        py_ref call_soon(PyObject_GetAttrString(loop, "call_soon"));
        py_ref pos(step ? PyTuple_Pack(2, step.get(), exc.get()) : nullptr);
        py_ref kw(dummy ? Py_BuildValue("{s:O}", "context", dummy.get()) : nullptr);
        if (!call_soon || !pos || !kw ||
            !py_ref(PyObject_Call(call_soon.get(), pos.get(), kw.get())))
            log::error("wsgi: asyncio: cannot reschedule a task step", fetch_traceback());
    }
    if (!py_ref(PyObject_CallOneArg(g_set_running_loop, Py_None))) PyErr_Clear();
    PyErr_Restore(type, value, tb);
}

bool future_done(PyObject* future, bool& done) {
    py_ref r(PyObject_CallMethod(future, "done", nullptr));
    if (!r) return false;
    done = PyObject_IsTrue(r.get()) == 1;
    return true;
}

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
        if (!r) log::error("wsgi: asyncio: cannot set the lane's running loop", fetch_traceback());
        running_loop_set = true;
    }
    py_ref r(PyObject_CallNoArgs(run_once.get()));
    if (!r) log::error("wsgi: asyncio loop step failed", fetch_traceback());
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

namespace {

// Watches for the first import of asyncio (and of asgiref.sync, for the async views hook) and
// runs corgi's setup right after the module has executed: a worker whose app never imports
// asyncio does not pay for it (asyncio pulls in ssl and libcrypto, about 10 MB of a Flask
// worker's RSS), and one that does gets corgi's event loop policy before its own code can ask
// for a loop. Each hook fires once and is then forgotten (a reload is the app's business).
constexpr const char* post_import_source = R"PY(
import sys

class _HookedLoader:
    def __init__(self, loader, hook):
        self._corgi_loader = loader
        self._corgi_hook = hook

    def create_module(self, spec):
        return self._corgi_loader.create_module(spec)

    def exec_module(self, module):
        self._corgi_loader.exec_module(module)
        self._corgi_hook(module)

    def __getattr__(self, name):
        return getattr(self._corgi_loader, name)


class PostImportFinder:
    """A meta path finder that finds nothing itself: it asks the finders after it and wraps the
    loader of a watched module so that its hook runs once the module has executed."""

    def __init__(self):
        self._hooks = {}

    def watch(self, name, hook):
        module = sys.modules.get(name)
        if module is not None:
            hook(module)
        else:
            self._hooks[name] = hook

    def find_spec(self, name, path=None, target=None):
        hook = self._hooks.get(name)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        del self._hooks[name]
        spec.loader = _HookedLoader(spec.loader, hook)
        return spec


finder = PostImportFinder()
sys.meta_path.insert(0, finder)
)PY";

bool g_bridge_loaded = false;
bool g_bridge_loading = false;
PyObject* g_bridge_module = nullptr;  // the Python half; lives as long as its interpreter

// Runs the Python half (which imports asyncio) and looks up what the C half uses. GIL held.
bool load_bridge() {
    if (g_bridge_loaded || g_bridge_loading) return true;  // loading: asyncio's hook, re-entered
    g_bridge_loading = true;
    struct done {
        ~done() { g_bridge_loading = false; }
    } loading_ends;
    py_ref code(Py_CompileString(bridge_source, "<corgi asyncio bridge>", Py_file_input));
    if (!code) return false;
    py_ref module(PyImport_ExecCodeModule("_corgi_asyncio", code.get()));
    if (!module) return false;
    g_loop_class = PyObject_GetAttrString(module.get(), "CorgiEventLoop");
    g_real_step = PyObject_GetAttrString(module.get(), "_real_step");
    py_ref asyncio(PyImport_ImportModule("asyncio"));
    py_ref events(PyImport_ImportModule("asyncio.events"));
    py_ref tasks(PyImport_ImportModule("asyncio.tasks"));
    if (!g_loop_class || !g_real_step || !asyncio || !events || !tasks) return false;
    g_ensure_future = PyObject_GetAttrString(asyncio.get(), "ensure_future");
    g_set_running_loop = PyObject_GetAttrString(events.get(), "_set_running_loop");
    g_current_tasks = PyObject_GetAttrString(tasks.get(), "_current_tasks");
    if (!g_current_tasks || !PyDict_Check(g_current_tasks)) {
        PyErr_SetString(PyExc_RuntimeError, "asyncio.tasks._current_tasks is not a dict");
        return false;
    }
    if (!g_ensure_future || !g_set_running_loop) return false;
    g_bridge_module = module.release();
    g_bridge_loaded = true;
    return true;
}

// The hooks PostImportFinder calls (the module just imported is their argument).
PyObject* asyncio_imported(PyObject*, PyObject*) {
    if (!load_bridge()) return nullptr;
    Py_RETURN_NONE;
}

PyObject* asgiref_sync_imported(PyObject*, PyObject*) {
    if (!load_bridge()) return nullptr;
    return PyObject_CallMethod(g_bridge_module, "install_async_views_hook", nullptr);
}

PyMethodDef asyncio_imported_def = {"_asyncio_imported", asyncio_imported, METH_O, nullptr};
PyMethodDef asgiref_sync_imported_def = {"_asgiref_sync_imported", asgiref_sync_imported, METH_O,
                                         nullptr};

bool watch_import(PyObject* finder, const char* name, PyMethodDef* hook_def) {
    py_ref hook(PyCFunction_NewEx(hook_def, nullptr, nullptr));
    return hook && py_ref(PyObject_CallMethod(finder, "watch", "sO", name, hook.get()));
}

}  // namespace

bool init_asyncio_bridge(bool async_views_hook) {
    // A new interpreter (tests start several in one process): what the last one loaded is gone
    // with it, not to be released.
    g_bridge_module = nullptr;
    g_bridge_loaded = false;
    g_waker_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&waker_spec));
    g_binding_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&binding_spec));
    if (!g_waker_type || !g_binding_type) return false;
    g_str_binding = PyUnicode_InternFromString("_corgi_binding");
    g_str_context = PyUnicode_InternFromString("_corgi_context");
    g_str_step = PyUnicode_InternFromString("_Task__step");
    g_str_task_context = PyUnicode_InternFromString("_context");
    if (!g_str_binding || !g_str_context || !g_str_step || !g_str_task_context) return false;
    // The C half first: the Python half, when it runs, refers to it.
    PyObject* shell = PyImport_AddModule("_corgi_asyncio");  // borrowed
    if (!shell || PyModule_AddFunctions(shell, bridge_functions) != 0) return false;
    py_ref builtins(PyImport_ImportModule("builtins"));
    py_ref code_noop(Py_CompileString("lambda: None", "<corgi>", Py_eval_input));
    if (!builtins || !code_noop) return false;
    py_ref globals(PyDict_New());
    if (!globals || PyDict_SetItemString(globals.get(), "__builtins__", builtins.get()) != 0)
        return false;
    g_noop = PyEval_EvalCode(code_noop.get(), globals.get(), globals.get());
    if (!g_noop) return false;
    py_ref hooks_code(
        Py_CompileString(post_import_source, "<corgi post-import hooks>", Py_file_input));
    if (!hooks_code) return false;
    py_ref hooks(PyImport_ExecCodeModule("_corgi_post_import", hooks_code.get()));
    py_ref finder(hooks ? PyObject_GetAttrString(hooks.get(), "finder") : nullptr);
    if (!finder || !watch_import(finder.get(), "asyncio", &asyncio_imported_def)) return false;
    return !async_views_hook ||
           watch_import(finder.get(), "asgiref.sync", &asgiref_sync_imported_def);
}

PyObject* lane_event_loop() {
    lane* l = lane::current();
    if (!l) Py_RETURN_NONE;
    if (!load_bridge()) return nullptr;  // an awaitable that is not asyncio's, asyncio unimported
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
    // The outermost await of the request binds it to its fiber: from now until it returns, tasks
    // created on this fiber (this one's, and those created by steps running here) step here. The
    // fiber's thread state sees the loop running, as code in a task does.
    struct binding_scope {
        fiber* f = nullptr;
        PyObject* loop = nullptr;
        ~binding_scope() {
            if (f) end_binding(*f, loop);
        }
    } scope;
    if (!f->aio_binding) {
        auto* b = PyObject_New(binding_object, g_binding_type);
        if (!b) return nullptr;
        b->target = f;
        f->aio_binding = reinterpret_cast<PyObject*>(b);
        scope.f = f;
        scope.loop = loop.get();
        if (!py_ref(PyObject_CallOneArg(g_set_running_loop, loop.get()))) return nullptr;
    }
    py_ref kwargs(Py_BuildValue("{s:O}", "loop", loop.get()));
    py_ref args(PyTuple_Pack(1, awaitable));
    if (!kwargs || !args) return nullptr;
    // A coroutine becomes a FiberTask (CorgiEventLoop.create_task), which copies the current
    // context: the coroutine sees the request's contextvars.
    py_ref future(PyObject_Call(g_ensure_future, args.get(), kwargs.get()));
    if (!future) return nullptr;
    auto* waker = PyObject_New(waker_object, g_waker_type);
    if (!waker) return nullptr;
    waker->target = f;
    py_ref waker_ref(reinterpret_cast<PyObject*>(waker));
    py_ref added(PyObject_CallMethod(future.get(), "add_done_callback", "O", waker_ref.get()));
    if (!added) return nullptr;
    bool deadline_passed = false;
    for (;;) {
        bool done = false;
        if (!future_done(future.get(), done)) {
            waker->target = nullptr;
            return nullptr;
        }
        if (done) break;
        if (!f->aio_steps.empty()) {
            auto [task, exc] = std::move(f->aio_steps.front());
            f->aio_steps.pop_front();
            run_step_on_fiber(*f, task.get(), exc.get());
            continue;
        }
        f->aio_idle_token = f->arm();
        const bool in_time = f->wait();
        f->aio_idle_token = 0;
        if (!in_time && !deadline_passed) {
            // The request's deadline: the awaited coroutine is cancelled the asyncio way
            // (CancelledError at its await, its finally blocks run) and waited for, so that none
            // of its steps is left behind; then the request gets RequestTimeout here.
            deadline_passed = true;
            if (!py_ref(PyObject_CallMethod(future.get(), "cancel", nullptr))) PyErr_Clear();
        }
    }
    waker->target = nullptr;
    if (deadline_passed) return raise_request_timeout(*f->job);
    return PyObject_CallMethod(future.get(), "result", nullptr);
}

py_ref stash_current_task(lane& l) {
    PyObject* loop = loop_of(l);
    if (!loop) return {};
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    py_ref task = py_ref::borrow(PyDict_GetItemWithError(g_current_tasks, loop));
    if (task && PyDict_DelItem(g_current_tasks, loop) != 0) task.reset();
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
    return task;
}

void restore_current_task(lane& l, py_ref task) {
    PyObject* loop = loop_of(l);
    if (!loop) return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyDict_SetItem(g_current_tasks, loop, task.get()) != 0)
        log::error("wsgi: asyncio: cannot restore the current task", fetch_traceback());
    PyErr_Restore(type, value, tb);
}

}  // namespace corgi::wsgi::detail
