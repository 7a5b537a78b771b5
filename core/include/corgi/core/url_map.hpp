// The declarative URL map, on werkzeug's model: rules with converters, methods, strict slashes,
// submounts and mounts; matching gives a result value (found / 404 / 405 with Allow / 308
// redirect), and build() reverses it.
//
//   corgi::url_map map{
//       corgi::rule("/", "index", index),
//       corgi::rule("/user/<int:id>", "user", show_user, {.methods = {"GET", "POST"}}),
//       corgi::submount("/api", {corgi::rule("/v1/<any(a,b):kind>", "api.kind", kind)}),
//       corgi::mount("/legacy", legacy_app),
//   };
#pragma once

#include <corgi/core/handler.hpp>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace corgi {

// A route's deadline (the URL map's "timeout"): inherit the dispatcher's --harakiri.
inline constexpr std::chrono::milliseconds inherit_timeout{-1};

struct rule_options {
    std::vector<std::string> methods;  // empty: every method; GET implies HEAD
    bool strict_slashes = true;        // a rule ending in '/' redirects the bare path with 308
    // How long the handler may run before the request is answered 504 and the handler cancelled:
    // inherit_timeout (the dispatcher's default), 0 (no deadline for this route) or a duration.
    // Mounts take it too.
    std::chrono::milliseconds timeout = inherit_timeout;
};

namespace detail {
struct route_node;  // private to url_map.cpp
}

// One entry of a map declaration: a rule, a submount (a prefix over entries) or a mount (a prefix
// handing the rest of the path to a handler). Built with rule(), submount() and mount().
class route_entry {
  public:
    enum class kind { rule, submount, mount };
    kind type = kind::rule;
    std::string pattern;  // rule pattern, or the prefix of a submount / mount
    std::string endpoint;
    handler target;
    rule_options options;
    std::vector<route_entry> children;  // submount only
};

route_entry rule(std::string pattern, std::string endpoint, handler target,
                 rule_options options = {});
route_entry submount(std::string prefix, std::vector<route_entry> entries);
route_entry mount(std::string prefix, handler target, std::string endpoint = {},
                  std::chrono::milliseconds timeout = inherit_timeout);

// Raised while building a map (bad pattern, unknown converter, duplicate rule) and by build().
struct routing_error : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

struct match_result {
    int status = 404;                 // 200 found, 404, 405, 308
    const handler* target = nullptr;  // when 200
    std::string_view endpoint;        // when 200
    route_args args;                  // when 200, typed by converter
    std::vector<std::string>
        allow;                 // 405 (and 200: the methods the matched path allows, for OPTIONS)
    std::string location;      // 308: the path to redirect to (without query string)
    bool is_mount = false;     // 200 by a mount: mount_prefix is moved to SCRIPT_NAME
    std::string mount_prefix;  // the part of the path the mount consumed, e.g. "/legacy"
    std::chrono::milliseconds timeout = inherit_timeout;  // when 200: the route's own deadline
};

class url_map {
  public:
    url_map(std::initializer_list<route_entry> entries);
    explicit url_map(std::vector<route_entry> entries);
    url_map(url_map&&) noexcept;
    url_map& operator=(url_map&&) noexcept;
    ~url_map();

    // `path` is the percent-decoded path relative to the map (a request's path_info). No
    // exceptions: the outcome is in the result. The second form reuses `out`'s storage.
    match_result match(std::string_view method, std::string_view path) const;
    void match(std::string_view method, std::string_view path, match_result& out) const;

    // Reverse routing: the URL path for `endpoint` with `values` filled into its converters
    // (formatted by them, percent-encoded); values that are not rule arguments go to the query
    // string. When several rules share the endpoint, the first whose arguments are all given wins.
    // Throws routing_error when none fits.
    std::string build(std::string_view endpoint,
                      const std::vector<std::pair<std::string, std::string>>& values = {}) const;

    struct rule_info {
        std::string pattern;  // full pattern including submount prefixes
        std::string endpoint;
        std::vector<std::string> methods;  // as declared, plus HEAD when GET is given; empty: any
        route_entry::kind type;
        std::chrono::milliseconds timeout = inherit_timeout;  // the route's "timeout"
    };
    // Every rule and mount, in matching order.
    std::vector<rule_info> rules() const;

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// Per-request deadlines (uWSGI's harakiri, failing one request instead of the worker).
struct dispatch_options {
    // How long a matched handler may run; 0: no deadline. A route's own timeout overrides it.
    std::chrono::milliseconds request_timeout{0};
    // How long a handler cancelled at its deadline may take to end before it counts as stuck
    // (logged, and the process asks its master to replace it).
    std::chrono::milliseconds stuck_grace{10'000};
};

// The handler that serves a map: matches req.path_info, fills req.endpoint and req.args, moves a
// mount's prefix from path_info to script_name, answers 404, 405 (with Allow), 308 (with the query
// string kept) and OPTIONS (204 with Allow) itself, and calls the matched handler otherwise.
// With a deadline (options.request_timeout, or the route's timeout), a handler that has not
// produced its response in time is cancelled (Asio per-operation cancellation: its pending
// operation completes with operation_aborted and its coroutine unwinds) and the client gets 504
// Gateway Timeout; a streamed body still being produced then is cut off and the connection closed.
handler make_dispatcher(std::shared_ptr<const url_map> map, dispatch_options options = {});

}  // namespace corgi
