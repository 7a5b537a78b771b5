// The io-thread side of a WSGI request: hands the request to a lane, serves the fiber's body reads,
// and turns its events into a corgi::response (streaming bodies become a body_producer). Never
// touches Python.
#pragma once

#include "runtime.hpp"

#include <corgi/core/handler.hpp>

#include <memory>

namespace corgi::wsgi::detail {

corgi::handler make_handler(std::shared_ptr<const app_entry> app);

}  // namespace corgi::wsgi::detail
