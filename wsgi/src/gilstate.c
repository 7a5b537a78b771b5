/* Points CPython's PyGILState "this thread's state" TLS slot at the running fiber's thread state,
 * so that PyGILState_Ensure (C extensions, sqlite3 and ctypes callbacks) finds the fiber's state
 * instead of deadlocking or running on the lane's. CPython offers no API for it: this needs
 * the 3.11 internals, hence Py_BUILD_CORE in this one file, compiled as C. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <internal/pycore_runtime.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030C0000
#error "gilstate.c reaches into CPython 3.11's _PyRuntime.gilstate; port it for this Python version"
#endif

void corgi_wsgi_set_gilstate_tstate(PyThreadState* ts) {
    PyThread_tss_set(&_PyRuntime.gilstate.autoTSSkey, ts);
}
