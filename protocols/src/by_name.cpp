// Protocol lookup by the name used in flags and the config file.
#include <corgi/protocols/protocols.hpp>

#include <stdexcept>
#include <string>

namespace corgi::protocols {

protocol by_name(std::string_view name) {
    if (name == "http") return http();
    if (name == "uwsgi") return uwsgi();
    if (name == "fastcgi") return fastcgi();
    if (name == "scgi") return scgi();
    throw std::invalid_argument("unknown protocol '" + std::string(name) +
                                "' (expected http, uwsgi, fastcgi or scgi)");
}

}  // namespace corgi::protocols
