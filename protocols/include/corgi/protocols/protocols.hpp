// The wire formats a listener can speak. Each returns a corgi::protocol for server::listen(); a
// handler never knows which one carried its request.
#pragma once

#include <corgi/core/server.hpp>

#include <string_view>

namespace corgi::protocols {

protocol
http();  // HTTP/1.1 (and 1.0): keep-alive, pipelining, chunked, 100-continue (Boost.Beast parser)
protocol uwsgi();  // the uwsgi binary protocol, as nginx's uwsgi_pass speaks it (modifier1 0)
protocol
fastcgi();        // FastCGI responder, as nginx's fastcgi_pass speaks it (FCGI_KEEP_CONN honoured)
protocol scgi();  // SCGI, as nginx's scgi_pass speaks it

// By name: "http", "uwsgi", "fastcgi", "scgi"; throws std::invalid_argument for any other.
protocol by_name(std::string_view name);

}  // namespace corgi::protocols
