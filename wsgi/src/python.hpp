// The one way corgi's wsgi module includes Python: Python.h must come before any standard header,
// so every source of this module includes this file first. Also small RAII helpers for raw C API
// references.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string>
#include <string_view>
#include <utility>

namespace corgi::wsgi::detail {

// An owned (strong) reference. Raw C API rather than pybind11 objects in code that may suspend a
// fiber: pybind11's call machinery keeps thread-local state that fibers resumed out of order would
// corrupt.
class py_ref {
  public:
    py_ref() = default;
    // Takes ownership of a new reference (may be null).
    explicit py_ref(PyObject* owned) noexcept : p_(owned) {}
    static py_ref borrow(PyObject* borrowed) noexcept { return py_ref(Py_XNewRef(borrowed)); }
    py_ref(const py_ref& o) noexcept : p_(Py_XNewRef(o.p_)) {}
    py_ref(py_ref&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    py_ref& operator=(py_ref o) noexcept {
        std::swap(p_, o.p_);
        return *this;
    }
    ~py_ref() { Py_XDECREF(p_); }

    PyObject* get() const noexcept { return p_; }
    PyObject* release() noexcept { return std::exchange(p_, nullptr); }
    void reset() noexcept { Py_CLEAR(p_); }
    explicit operator bool() const noexcept { return p_ != nullptr; }

  private:
    PyObject* p_ = nullptr;
};

// The pending Python exception with its traceback, formatted like the interpreter prints it; clears
// it. Empty when no exception is set.
std::string fetch_traceback();
// Formats an exception object (with its __traceback__).
std::string format_exception(PyObject* exc);

// latin-1 "bytes as str" (PEP 3333's native strings).
inline PyObject* latin1(std::string_view s) {
    return PyUnicode_DecodeLatin1(s.data(), static_cast<Py_ssize_t>(s.size()), nullptr);
}

}  // namespace corgi::wsgi::detail
