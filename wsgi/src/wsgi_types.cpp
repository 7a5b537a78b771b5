// start_response, write(), wsgi.input, wsgi.errors and wsgi.file_wrapper, written against the raw C
// API (input reads and write() suspend the fiber).
#include "python.hpp"

#include <structmember.h>

#include "wsgi_types.hpp"

#include "call.hpp"
#include "wsgi_call.hpp"

#include <corgi/core/header_map.hpp>
#include <corgi/core/http_error.hpp>
#include <corgi/core/log.hpp>

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>

namespace corgi::wsgi::detail {

namespace {

// start_response and wsgi.input share this layout: both point at their request's call until it
// ends.
struct call_bound_object {
    PyObject_HEAD call* c;
};

PyTypeObject* g_start_response_type = nullptr;
PyTypeObject* g_input_type = nullptr;
PyTypeObject* g_errors_type = nullptr;
PyTypeObject* g_file_wrapper_type = nullptr;
PyObject* g_errors = nullptr;

call* bound_call(PyObject* self) {
    call* c = reinterpret_cast<call_bound_object*>(self)->c;
    if (!c) PyErr_SetString(PyExc_ValueError, "the WSGI request this object belongs to has ended");
    return c;
}

void bound_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

// --- start_response / write
// ---------------------------------------------------------------------------

bool is_tchar(unsigned char ch) {
    if (ch >= '0' && ch <= '9') return true;
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') return true;
    return std::strchr("!#$%&'*+-.^_`|~", ch) != nullptr && ch != 0;
}

bool is_hop_by_hop(std::string_view name) {
    static constexpr std::string_view names[] = {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
        "te",         "trailers",   "transfer-encoding",  "upgrade"};
    for (std::string_view h : names) {
        if (h.size() != name.size()) continue;
        bool same = true;
        for (std::size_t i = 0; i < h.size() && same; ++i) {
            char ch = name[i];
            if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
            same = ch == h[i];
        }
        if (same) return true;
    }
    return false;
}

// The latin-1 bytes of a native string, or false with TypeError / ValueError.
bool native_string(PyObject* s, const char* what, std::string_view& out) {
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str (a WSGI native string), not %.100s", what,
                     Py_TYPE(s)->tp_name);
        return false;
    }
    if (PyUnicode_READY(s) != 0) return false;
    if (PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND) {
        PyErr_Format(PyExc_ValueError, "%s must contain only latin-1 characters: %R", what, s);
        return false;
    }
    out = std::string_view(reinterpret_cast<const char*>(PyUnicode_1BYTE_DATA(s)),
                           static_cast<std::size_t>(PyUnicode_GET_LENGTH(s)));
    return true;
}

bool parse_status(PyObject* status, int& code, std::string_view& reason) {
    std::string_view s;
    if (!native_string(status, "status", s)) return false;
    bool ok = s.size() >= 4 && s[3] == ' ';
    for (int i = 0; ok && i < 3; ++i) ok = s[i] >= '0' && s[i] <= '9';
    for (char ch : s) ok = ok && static_cast<unsigned char>(ch) >= 0x20 && ch != 0x7f;
    if (!ok || s[0] == '0') {
        PyErr_Format(PyExc_ValueError,
                     "status must look like '200 OK' (three digits, a space, a reason): %R",
                     status);
        return false;
    }
    code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    reason = s.substr(4);
    return true;
}

bool parse_headers(PyObject* headers, header_map& out) {
    if (!PyList_Check(headers) && !PyTuple_Check(headers)) {
        PyErr_Format(PyExc_TypeError,
                     "response headers must be a list of (name, value) tuples, not %.100s",
                     Py_TYPE(headers)->tp_name);
        return false;
    }
    py_ref seq(PySequence_Fast(headers, "response headers"));
    if (!seq) return false;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.get());
    PyObject** items = PySequence_Fast_ITEMS(seq.get());
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* item = items[i];
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_Format(PyExc_TypeError,
                         "response header %zd must be a (name, value) tuple, not %R", i, item);
            return false;
        }
        std::string_view name, value;
        if (!native_string(PyTuple_GET_ITEM(item, 0), "header name", name) ||
            !native_string(PyTuple_GET_ITEM(item, 1), "header value", value))
            return false;
        if (name.empty() || !std::all_of(name.begin(), name.end(), [](char ch) {
                return is_tchar(static_cast<unsigned char>(ch));
            })) {
            PyErr_Format(PyExc_ValueError, "invalid header name %R", PyTuple_GET_ITEM(item, 0));
            return false;
        }
        for (char ch : value) {
            const auto u = static_cast<unsigned char>(ch);
            if ((u < 0x20 && u != '\t') || u == 0x7f) {
                PyErr_Format(PyExc_ValueError,
                             "header %R has a control character in its value (response splitting?)",
                             PyTuple_GET_ITEM(item, 0));
                return false;
            }
        }
        if (is_hop_by_hop(name)) {
            PyErr_Format(PyExc_ValueError,
                         "hop-by-hop header %R is not allowed in a WSGI response (PEP 3333)",
                         PyTuple_GET_ITEM(item, 0));
            return false;
        }
        out.add(name, value);
    }
    return true;
}

PyObject* write_impl(PyObject* self, PyObject* data) {
    call* c = bound_call(self);
    if (!c) return nullptr;
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "write() takes bytes, not %.100s", Py_TYPE(data)->tp_name);
        return nullptr;
    }
    if (!c->headers_set) {
        PyErr_SetString(PyExc_AssertionError, "write() called before start_response()");
        return nullptr;
    }
    if (PyBytes_GET_SIZE(data) == 0) Py_RETURN_NONE;
    if (!on_request_fiber(*c, "write() sends to the client",
                          "call it in the request or in a coroutine it awaits"))
        return nullptr;
    if (!send_chunk(*c, data)) {
        if (!PyErr_Occurred())  // else RequestTimeout: the deadline passed
            PyErr_SetString(PyExc_ConnectionResetError, "the client closed the connection");
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyMethodDef write_def = {"write", write_impl, METH_O,
                         "write(data): send bytes to the client now (PEP 3333)."};

PyObject* start_response_call(PyObject* self, PyObject* args, PyObject* kwargs) {
    static const char* keywords[] = {"status", "headers", "exc_info", nullptr};
    PyObject* status = nullptr;
    PyObject* headers = nullptr;
    PyObject* exc_info = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:start_response",
                                     const_cast<char**>(keywords), &status, &headers, &exc_info))
        return nullptr;
    call* c = bound_call(self);
    if (!c) return nullptr;
    bool has_exc = false;
    if (exc_info != Py_None) {
        if (!PyTuple_Check(exc_info) || PyTuple_GET_SIZE(exc_info) != 3) {
            PyErr_SetString(PyExc_TypeError,
                            "exc_info must be a (type, value, traceback) tuple or None");
            return nullptr;
        }
        has_exc = PyTuple_GET_ITEM(exc_info, 1) != Py_None;
    }
    if (c->headers_set) {
        if (!has_exc) {
            PyErr_SetString(PyExc_AssertionError,
                            "start_response() called a second time without exc_info");
            return nullptr;
        }
        if (c->headers_sent) {
            // Too late to change the response: re-raise the app's exception, as PEP 3333 requires.
            PyErr_Restore(Py_NewRef(PyTuple_GET_ITEM(exc_info, 0)),
                          Py_NewRef(PyTuple_GET_ITEM(exc_info, 1)),
                          Py_XNewRef(PyTuple_GET_ITEM(exc_info, 2) == Py_None
                                         ? nullptr
                                         : PyTuple_GET_ITEM(exc_info, 2)));
            return nullptr;
        }
    }
    int code = 0;
    std::string_view reason;
    header_map parsed;
    if (!parse_status(status, code, reason) || !parse_headers(headers, parsed)) return nullptr;
    c->resp.status = code;
    // PEP 3333: the status line is the app's; kept only when it differs from the standard phrase.
    if (reason != reason_phrase(code))
        c->resp.reason.assign(reason);
    else
        c->resp.reason.clear();
    c->resp.headers = std::move(parsed);
    c->headers_set = true;
    return PyCFunction_NewEx(&write_def, self, nullptr);
}

PyType_Slot start_response_slots[] = {
    {Py_tp_call, reinterpret_cast<void*>(start_response_call)},
    {Py_tp_dealloc, reinterpret_cast<void*>(bound_dealloc)},
    {Py_tp_doc, const_cast<char*>("start_response(status, headers, exc_info=None) -> write")},
    {0, nullptr}};
PyType_Spec start_response_spec = {"corgi.StartResponse", sizeof(call_bound_object), 0,
                                   Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
                                   start_response_slots};

// --- wsgi.input
// ---------------------------------------------------------------------------------------

Py_ssize_t size_argument(PyObject* const* args, Py_ssize_t nargs, const char* fname) {
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument", fname);
        return -2;
    }
    if (nargs == 0 || args[0] == Py_None) return -1;
    Py_ssize_t n = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred()) return -2;
    return n < 0 ? -1 : n;
}

std::size_t available(const call& c) { return c.input_buffer.size() - c.input_pos; }

PyObject* take(call& c, std::size_t n) {
    PyObject* b =
        PyBytes_FromStringAndSize(c.input_buffer.data() + c.input_pos, static_cast<Py_ssize_t>(n));
    c.input_pos += n;
    if (c.input_pos == c.input_buffer.size()) {
        c.input_buffer.clear();
        c.input_pos = 0;
    }
    return b;
}

// Drops bytes already read from the front before the buffer grows.
void compact(call& c) {
    if (c.input_pos > 0 && c.input_pos >= c.input_buffer.size() / 2) {
        c.input_buffer.erase(0, c.input_pos);
        c.input_pos = 0;
    }
}

PyObject* input_read(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t size = size_argument(args, nargs, "read");
    if (size == -2) return nullptr;
    call* c = bound_call(self);
    if (!c) return nullptr;
    const auto want = static_cast<std::size_t>(size);
    while (size < 0 || available(*c) < want) {
        compact(*c);
        int r = read_more(*c);
        if (r < 0) return nullptr;
        if (r == 0) break;
    }
    return take(*c, size < 0 ? available(*c) : std::min(want, available(*c)));
}

PyObject* readline_impl(call& c, Py_ssize_t size) {
    std::size_t scanned = 0;
    for (;;) {
        const char* begin = c.input_buffer.data() + c.input_pos;
        const std::size_t avail = available(c);
        const std::size_t limit =
            size < 0 ? avail : std::min(avail, static_cast<std::size_t>(size));
        if (const void* nl = std::memchr(begin + scanned, '\n', limit - scanned)) {
            return take(c, static_cast<std::size_t>(static_cast<const char*>(nl) - begin) + 1);
        }
        if (size >= 0 && avail >= static_cast<std::size_t>(size)) return take(c, limit);
        scanned = limit;
        compact(c);  // keeps offsets relative to input_pos valid
        int r = read_more(c);
        if (r < 0) return nullptr;
        if (r == 0) return take(c, available(c));
    }
}

PyObject* input_readline(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t size = size_argument(args, nargs, "readline");
    if (size == -2) return nullptr;
    call* c = bound_call(self);
    if (!c) return nullptr;
    return readline_impl(*c, size);
}

PyObject* input_readlines(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Py_ssize_t hint = size_argument(args, nargs, "readlines");
    if (hint == -2) return nullptr;
    call* c = bound_call(self);
    if (!c) return nullptr;
    py_ref lines(PyList_New(0));
    if (!lines) return nullptr;
    Py_ssize_t total = 0;
    for (;;) {
        py_ref line(readline_impl(*c, -1));
        if (!line) return nullptr;
        const Py_ssize_t n = PyBytes_GET_SIZE(line.get());
        if (n == 0) break;
        if (PyList_Append(lines.get(), line.get()) != 0) return nullptr;
        total += n;
        if (hint > 0 && total >= hint) break;
    }
    return lines.release();
}

PyObject* input_iternext(PyObject* self) {
    call* c = bound_call(self);
    if (!c) return nullptr;
    PyObject* line = readline_impl(*c, -1);
    if (line && PyBytes_GET_SIZE(line) == 0) {
        Py_DECREF(line);
        return nullptr;  // StopIteration
    }
    return line;
}

PyMethodDef input_methods[] = {
    {"read", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(input_read)), METH_FASTCALL,
     "read(size=-1): up to size bytes of the request body (all of it when size is negative or "
     "None)."},
    {"readline", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(input_readline)),
     METH_FASTCALL, "readline(size=-1): the next line, with its newline."},
    {"readlines", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(input_readlines)),
     METH_FASTCALL, "readlines(hint=-1): the remaining lines."},
    {nullptr, nullptr, 0, nullptr}};

PyType_Slot input_slots[] = {
    {Py_tp_methods, input_methods},
    {Py_tp_iter, reinterpret_cast<void*>(PyObject_SelfIter)},
    {Py_tp_iternext, reinterpret_cast<void*>(input_iternext)},
    {Py_tp_dealloc, reinterpret_cast<void*>(bound_dealloc)},
    {Py_tp_doc, const_cast<char*>("wsgi.input: the request body, as it arrives")},
    {0, nullptr}};
PyType_Spec input_spec = {"corgi.Input", sizeof(call_bound_object), 0,
                          Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, input_slots};

// --- wsgi.errors
// --------------------------------------------------------------------------------------

PyObject* errors_write(PyObject*, PyObject* text) {
    std::string_view s;
    if (PyUnicode_Check(text)) {
        Py_ssize_t n = 0;
        const char* p = PyUnicode_AsUTF8AndSize(text, &n);
        if (!p) return nullptr;
        s = std::string_view(p, static_cast<std::size_t>(n));
    } else {
        PyErr_Format(PyExc_TypeError, "wsgi.errors.write() takes str, not %.100s",
                     Py_TYPE(text)->tp_name);
        return nullptr;
    }
    const auto length = PyUnicode_GET_LENGTH(text);
    // One log line per line written; a trailing newline does not make an empty line.
    while (!s.empty()) {
        std::size_t nl = s.find('\n');
        std::string_view line = s.substr(0, nl);
        if (!line.empty()) log::error(line);
        if (nl == std::string_view::npos) break;
        s.remove_prefix(nl + 1);
    }
    return PyLong_FromSsize_t(length);
}

PyObject* errors_writelines(PyObject* self, PyObject* lines) {
    py_ref it(PyObject_GetIter(lines));
    if (!it) return nullptr;
    while (py_ref line{PyIter_Next(it.get())}) {
        py_ref r(errors_write(self, line.get()));
        if (!r) return nullptr;
    }
    if (PyErr_Occurred()) return nullptr;
    Py_RETURN_NONE;
}

PyObject* errors_flush(PyObject*, PyObject*) { Py_RETURN_NONE; }

PyMethodDef errors_methods[] = {
    {"write", errors_write, METH_O, "write(str): to the server's error log."},
    {"writelines", errors_writelines, METH_O, nullptr},
    {"flush", errors_flush, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr}};
PyType_Slot errors_slots[] = {{Py_tp_methods, errors_methods},
                              {Py_tp_doc, const_cast<char*>("wsgi.errors: the server's error log")},
                              {0, nullptr}};
PyType_Spec errors_spec = {"corgi.ErrorStream", sizeof(PyObject), 0, Py_TPFLAGS_DEFAULT,
                           errors_slots};

// --- wsgi.file_wrapper
// --------------------------------------------------------------------------------

int file_wrapper_init(PyObject* self, PyObject* args, PyObject* kwargs) {
    static const char* keywords[] = {"filelike", "blksize", nullptr};
    PyObject* filelike = nullptr;
    Py_ssize_t blksize = 8192;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|n:file_wrapper", const_cast<char**>(keywords),
                                     &filelike, &blksize))
        return -1;
    auto* w = reinterpret_cast<file_wrapper_object*>(self);
    Py_XSETREF(w->filelike, Py_NewRef(filelike));
    w->blksize = blksize > 0 ? blksize : 8192;
    return 0;
}

void file_wrapper_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Py_CLEAR(reinterpret_cast<file_wrapper_object*>(self)->filelike);
    type->tp_free(self);
    Py_DECREF(type);
}

int file_wrapper_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(reinterpret_cast<file_wrapper_object*>(self)->filelike);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

PyObject* file_wrapper_iternext(PyObject* self) {
    auto* w = reinterpret_cast<file_wrapper_object*>(self);
    if (!w->filelike) return nullptr;
    py_ref data(PyObject_CallMethod(w->filelike, "read", "n", w->blksize));
    if (!data) return nullptr;
    if (PyObject_Length(data.get()) == 0) {
        if (PyErr_Occurred()) return nullptr;
        return nullptr;  // StopIteration
    }
    return data.release();
}

PyObject* file_wrapper_close(PyObject* self, PyObject*) {
    auto* w = reinterpret_cast<file_wrapper_object*>(self);
    if (w->filelike) {
        py_ref close(PyObject_GetAttrString(w->filelike, "close"));
        if (!close) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return nullptr;
            PyErr_Clear();
        } else if (!py_ref(PyObject_CallNoArgs(close.get()))) {
            return nullptr;
        }
    }
    Py_RETURN_NONE;
}

PyMethodDef file_wrapper_methods[] = {{"close", file_wrapper_close, METH_NOARGS, nullptr},
                                      {nullptr, nullptr, 0, nullptr}};
PyMemberDef file_wrapper_members[] = {
    {"filelike", T_OBJECT, offsetof(file_wrapper_object, filelike), READONLY, nullptr},
    {"blksize", T_PYSSIZET, offsetof(file_wrapper_object, blksize), READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr}};
PyType_Slot file_wrapper_slots[] = {
    {Py_tp_init, reinterpret_cast<void*>(file_wrapper_init)},
    {Py_tp_dealloc, reinterpret_cast<void*>(file_wrapper_dealloc)},
    {Py_tp_traverse, reinterpret_cast<void*>(file_wrapper_traverse)},
    {Py_tp_iter, reinterpret_cast<void*>(PyObject_SelfIter)},
    {Py_tp_iternext, reinterpret_cast<void*>(file_wrapper_iternext)},
    {Py_tp_methods, file_wrapper_methods},
    {Py_tp_members, file_wrapper_members},
    {Py_tp_doc,
     const_cast<char*>("wsgi.file_wrapper(filelike, blksize=8192): sent with sendfile() when "
                       "filelike is a regular file")},
    {0, nullptr}};
PyType_Spec file_wrapper_spec = {"corgi.FileWrapper", sizeof(file_wrapper_object), 0,
                                 Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, file_wrapper_slots};

PyTypeObject* make_type(PyType_Spec& spec) {
    return reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&spec));
}

PyObject* new_bound(PyTypeObject* type, call* c) {
    auto* o = PyObject_New(call_bound_object, type);
    if (!o) return nullptr;
    o->c = c;
    return reinterpret_cast<PyObject*>(o);
}

}  // namespace

bool init_wsgi_types() {
    g_start_response_type = make_type(start_response_spec);
    g_input_type = make_type(input_spec);
    g_errors_type = make_type(errors_spec);
    g_file_wrapper_type = make_type(file_wrapper_spec);
    if (!g_start_response_type || !g_input_type || !g_errors_type || !g_file_wrapper_type)
        return false;
    g_errors = PyType_GenericAlloc(g_errors_type, 0);
    return g_errors != nullptr;
}

PyObject* new_start_response(call* c) { return new_bound(g_start_response_type, c); }
PyObject* new_input(call* c) { return new_bound(g_input_type, c); }
void detach(PyObject* o) noexcept {
    if (o) reinterpret_cast<call_bound_object*>(o)->c = nullptr;
}
PyObject* errors_stream() { return g_errors; }
PyTypeObject* file_wrapper_type() { return g_file_wrapper_type; }

}  // namespace corgi::wsgi::detail
