// The C++ endpoints the stock binary registers by name (for {"handler": "..."} in configs) and the
// demo URL map it serves when nothing else is configured.
#pragma once

#include <corgi/core/route_config.hpp>

namespace corgi::demo {

// hello, plaintext, json, stream, sleep, echo_body, big, fail.
std::map<std::string, handler, std::less<>> handlers();
// The map `make run` serves: a few C++ routes and the built-in targets.
std::vector<route_entry> routes();

}  // namespace corgi::demo
