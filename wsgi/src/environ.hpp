// Builds PEP 3333 environ dicts from corgi requests: a prebuilt template (constant keys and
// placeholders, so the copy never resizes) copied per request, interned keys, cached HTTP_* keys.
#pragma once

#include "python.hpp"

namespace corgi::wsgi::detail {

struct call;

// Once, on the main thread state, after the wsgi types exist.
bool init_environ(bool multithread, bool multiprocess);
// A new environ for the call's request (new reference), or null with a Python exception set.
PyObject* build_environ(const call& c, PyObject* input);

}  // namespace corgi::wsgi::detail
