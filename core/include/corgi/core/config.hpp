// Server configuration: the settings core and the corgi binary share, filled through the settings
// schema (settings.hpp) from the JSON file, ini files, the environment and flags. Errors name the
// key, flag, variable or ini line; the CLI turns them into exit status 2.
#pragma once

#include <corgi/core/server.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace corgi {

struct config_error : std::runtime_error {
    config_error(std::string pointer, const std::string& message);
    // Where: a JSON pointer ("/routes/3/rule"), with the file in front once known, a flag, an
    // environment variable or an ini line.
    std::string pointer;
    std::string message;  // what is wrong, without the place
};

// What each listener speaks: "http", "uwsgi", "fastcgi" or "scgi".
struct listen_entry {
    std::string protocol;
    listen_address address;
};

// The process model. No workers: one process binds and serves, as it always did. N workers: a
// master binds every listener, forks N workers that inherit the sockets, and supervises them.
struct process_settings {
    std::size_t workers = 0;  // --processes/--workers/-w N; --master alone means 1
    std::string pidfile;      // written at start (by the master if any), removed at exit
    // The master imports the apps before it forks (copy-on-write, import errors at start);
    // false (--lazy-apps): each worker imports them after the fork.
    bool preload = true;
    // A new worker not ready (apps imported, accepting) this long after its fork is killed and
    // counts as failing to boot.
    std::chrono::milliseconds boot_timeout{60000};
    // A ready worker whose io threads have not checked in for this long is killed (SIGABRT, so
    // Python's faulthandler dumps the stacks, then SIGKILL). 0: never.
    std::chrono::milliseconds worker_timeout{30000};
    // Recycling, graceful and one worker at a time (0: off): after max_requests + a random
    // 0..max_requests_jitter requests, above max_rss_mb of resident memory, after
    // max_worker_lifetime.
    std::uint64_t max_requests = 0;
    std::uint64_t max_requests_jitter = 0;
    std::uint64_t max_rss_mb = 0;
    std::chrono::milliseconds max_worker_lifetime{0};
    static constexpr std::size_t max_workers = 1024;
};

// The stats listener (uWSGI's --stats): served by the master (or the single process), one JSON
// document per connection; with `http`, an HTTP server of the JSON, Prometheus text at /metrics
// and the live status page at /_corgi/status.
struct stats_settings {
    std::optional<listen_address> address;
    bool http = false;
};

struct config {
    std::vector<listen_entry> listen;
    server_options server;
    process_settings processes;
    bool access_log = true;
    std::string access_log_format = "common";  // common, combined, json or a {template}
    std::string access_log_file;               // "" : stdout
    std::string error_log_file;                // "" : stderr
    std::string log_level = "info";            // debug, info, warning, error, critical
    std::string error_log_format = "text";     // text or json
    std::vector<std::string> environment;      // KEY=VALUE set by --env / env (already set)
    stats_settings stats;
    nlohmann::json routes = nlohmann::json::array();  // compiled by compile_routes()
};

// Reads a JSON file (errors: config_error with the file name and line for syntax, the key for
// semantics).
nlohmann::json read_json_file(const std::string& path);
// "uwsgi" for "socket"/"uwsgi", "fastcgi", "scgi", "http"; "" for anything else.
std::string normalize_protocol_name(std::string_view name);
// "660" -> 0660; throws config_error at `pointer` when not an octal mode.
unsigned parse_socket_mode(std::string_view text, const std::string& pointer);

}  // namespace corgi
