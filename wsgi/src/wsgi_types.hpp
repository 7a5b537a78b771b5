// The Python objects a WSGI app receives: start_response (and the write() it returns), wsgi.input,
// wsgi.errors and wsgi.file_wrapper. Per-request objects point at their call until the request
// ends, then refuse to work.
#pragma once

#include "python.hpp"

namespace corgi::wsgi::detail {

struct call;

struct file_wrapper_object {
    PyObject_HEAD PyObject* filelike;
    Py_ssize_t blksize;
};

// Once, on the main thread state.
bool init_wsgi_types();

PyObject* new_start_response(call* c);
PyObject* new_input(call* c);
// Cuts a per-request object loose from its call (the request is over).
void detach(PyObject* per_request_object) noexcept;

// The shared wsgi.errors stream (borrowed): lines go to the error log.
PyObject* errors_stream();
PyTypeObject* file_wrapper_type();

}  // namespace corgi::wsgi::detail
