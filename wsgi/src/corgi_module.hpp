// The `corgi` Python module: suspension points for apps (sleep, wait_readable, wait_writable,
// suspend, await_), built into the interpreter before it starts.
#pragma once

#include "python.hpp"

namespace corgi::wsgi::detail {

// Registers the module with PyImport_AppendInittab: call before Py_InitializeFromConfig.
void register_corgi_module();

}  // namespace corgi::wsgi::detail
