// Loading WSGI apps: "module:callable", "module", "path/file.py[:callable]", "module:factory()".
// The import runs in Python (importlib) on the main thread's state; failures carry the traceback.
#include "python.hpp"

#include "io_bridge.hpp"
#include "runtime.hpp"

#include <corgi/wsgi/wsgi.hpp>

#include <memory>
#include <string>

namespace corgi::wsgi {

namespace {

constexpr const char* loader_source = R"PY(
import importlib, importlib.util, os, sys

def load(spec, default_callable):
    where, colon, attr = spec.rpartition(":")
    if not colon:
        where, attr = spec, ""
    attr = attr or default_callable
    if where.endswith(".py"):
        path = os.path.abspath(where)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path}")
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        stem = os.path.splitext(os.path.basename(path))[0]
        name = stem if stem.isidentifier() and stem not in sys.modules else \
            "corgi_wsgi_file_" + "".join(c if c.isalnum() else "_" for c in path)
        module = sys.modules.get(name)
        if getattr(module, "__file__", None) != path:
            file_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[name] = module
            try:
                file_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
    else:
        module = importlib.import_module(where)
    factory = attr.endswith("()")
    if factory:
        attr = attr[:-2]
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(f"{where!r} has no attribute {attr!r}") from None
    if factory:
        obj = obj()
    if not callable(obj):
        raise TypeError(f"{spec!r} is not a WSGI callable (it is a {type(obj).__name__})")
    return obj
)PY";

PyObject* g_loader = nullptr;

// Holds the GIL on this thread's own state (the main thread's state on the main thread).
struct gil_scope {
    PyGILState_STATE state = PyGILState_Ensure();
    gil_scope() = default;
    gil_scope(const gil_scope&) = delete;
    gil_scope& operator=(const gil_scope&) = delete;
    ~gil_scope() { PyGILState_Release(state); }
};

}  // namespace

corgi::handler load(std::string_view spec) {
    if (!detail::current_runtime()) initialize(python_settings{});
    detail::runtime* rt = detail::current_runtime();
    if (!rt)
        throw load_error("cannot load " + std::string(spec) + ": the Python runtime was shut down");
    const std::string text(spec);
    gil_scope gil;
    auto fail = [&](const std::string& what) -> load_error {
        return load_error("cannot load WSGI app '" + text + "': " + what);
    };
    if (!g_loader) {
        detail::py_ref code(Py_CompileString(loader_source, "<corgi wsgi loader>", Py_file_input));
        detail::py_ref module(code ? PyImport_ExecCodeModule("_corgi_loader", code.get())
                                   : nullptr);
        if (!module || !(g_loader = PyObject_GetAttrString(module.get(), "load"))) {
            throw fail(detail::fetch_traceback());
        }
    }
    detail::py_ref app(
        PyObject_CallFunction(g_loader, "ss", text.c_str(), rt->settings.callable.c_str()));
    if (!app) throw fail("\n" + detail::fetch_traceback());
    auto entry = std::make_shared<detail::app_entry>();
    entry->callable = app.release();  // never released: see app_entry
    entry->spec = text;
    entry->log_name = "wsgi app '" + text + "'";
    return detail::make_handler(std::move(entry));
}

}  // namespace corgi::wsgi
