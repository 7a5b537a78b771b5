// Compiles the JSON `routes` of a config file into a url_map, with the built-in targets: `return`
// (fixed response), `redirect`, `static` (a directory), `echo` (JSON of the match), `handler` (a
// C++ endpoint registered by name) and `wsgi` (through a factory the program supplies, so core
// stays free of Python).
#pragma once

#include <corgi/core/config.hpp>
#include <corgi/core/url_map.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>

namespace corgi {

struct route_targets {
    // Named C++ endpoints for {"handler": "name"}.
    std::map<std::string, handler, std::less<>> handlers;
    // Builds the handler of a {"wsgi": "module:callable"} entry (a rule or a mount); empty: WSGI
    // unavailable.
    std::function<handler(const nlohmann::json& entry, const std::string& pointer)> wsgi;
};

// Throws config_error naming the JSON pointer of the offending entry (pointer is that of `routes`
// itself).
std::shared_ptr<url_map> compile_routes(const nlohmann::json& routes, const route_targets& targets,
                                        const std::string& pointer = "/routes");

// Built-in targets, also usable from C++.
handler return_target(int status, std::string body,
                      std::string content_type = "text/plain; charset=utf-8");
handler redirect_target(std::string location, int status = 308);
// Serves files under `root`: refuses `..` and symlinks leaving the root, answers ETag /
// Last-Modified / If-None-Match / If-Modified-Since (304) and single Range requests (206, 416). The
// file path comes from the rule's `path` argument (first string argument) or from req.path_info for
// mounts.
handler static_target(std::string root);
// Answers {"endpoint", "args", "method", "path", "query", "headers"} as JSON.
handler echo_target();
// Answers the Prometheus text exposition of stats::exposition() ({"metrics": true}): the whole
// server under the corgi binary, this process otherwise.
handler metrics_target();

}  // namespace corgi
