// The coroutine type every corgi handler returns, and the one namespace alias for Asio.
// task<T> is Asio's own awaitable: no home-made coroutine type, so handlers compose with all of
// Asio.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace corgi {

namespace net = boost::asio;

template <class T = void>
using task = net::awaitable<T>;

}  // namespace corgi
