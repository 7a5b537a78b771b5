// The JSON config file onto struct config. Every error names the offending key as a JSON pointer.
#include <corgi/core/config.hpp>
#include <corgi/core/log.hpp>

#include <cmath>
#include <fstream>
#include <sstream>

namespace corgi {

config_error::config_error(std::string ptr, const std::string& message)
    : std::runtime_error(ptr.empty() ? message : ptr + ": " + message), pointer(std::move(ptr)) {}

nlohmann::json read_json_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw config_error("", "cannot read config file '" + path + "'");
    std::stringstream text;
    text << in.rdbuf();
    try {
        return nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::parse_error& e) {
        throw config_error("", "config file '" + path + "' is not valid JSON: " + e.what());
    }
}

namespace {

std::string child(const std::string& ptr, std::string_view key) {
    std::string escaped;
    for (char c : key) {
        if (c == '~')
            escaped += "~0";
        else if (c == '/')
            escaped += "~1";
        else
            escaped += c;
    }
    return ptr + "/" + escaped;
}

const char* type_name(const nlohmann::json& v) { return v.type_name(); }

std::string as_string(const nlohmann::json& v, const std::string& ptr) {
    if (!v.is_string())
        throw config_error(ptr, std::string("expected a string, got ") + type_name(v));
    return v.get<std::string>();
}

bool as_bool(const nlohmann::json& v, const std::string& ptr) {
    if (!v.is_boolean())
        throw config_error(ptr, std::string("expected true or false, got ") + type_name(v));
    return v.get<bool>();
}

std::uint64_t as_count(const nlohmann::json& v, const std::string& ptr, std::uint64_t min,
                       std::uint64_t max) {
    if (!v.is_number_integer() ||
        (v.is_number_integer() && !v.is_number_unsigned() && v.get<std::int64_t>() < 0))
        throw config_error(ptr, std::string("expected a non-negative integer, got ") + v.dump());
    auto n = v.get<std::uint64_t>();
    if (n < min || n > max)
        throw config_error(
            ptr, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    return n;
}

std::chrono::milliseconds as_seconds(const nlohmann::json& v, const std::string& ptr) {
    if (!v.is_number() || v.get<double>() < 0 || !std::isfinite(v.get<double>()))
        throw config_error(
            ptr, "expected a duration in seconds (a non-negative number), got " + v.dump());
    return std::chrono::milliseconds(
        static_cast<std::int64_t>(std::llround(v.get<double>() * 1000.0)));
}

std::vector<std::string> as_string_list(const nlohmann::json& v, const std::string& ptr) {
    std::vector<std::string> out;
    if (v.is_string()) {
        out.push_back(v.get<std::string>());
    } else if (v.is_array()) {
        for (std::size_t i = 0; i < v.size(); ++i)
            out.push_back(as_string(v[i], child(ptr, std::to_string(i))));
    } else {
        throw config_error(ptr, "expected a string or an array of strings");
    }
    return out;
}

listen_address as_address(const nlohmann::json& v, const std::string& ptr) {
    std::string text = as_string(v, ptr);
    try {
        return listen_address::parse(text);
    } catch (const std::invalid_argument& e) {
        throw config_error(ptr, e.what());
    }
}

template <class F>
void for_each_key(const nlohmann::json& obj, const std::string& ptr, F&& f) {
    if (!obj.is_object())
        throw config_error(ptr, std::string("expected an object, got ") + type_name(obj));
    for (auto it = obj.begin(); it != obj.end(); ++it)
        f(it.key(), it.value(), child(ptr, it.key()));
}

}  // namespace

std::string normalize_protocol_name(std::string_view name) {
    if (name == "socket" || name == "uwsgi") return "uwsgi";
    if (name == "fastcgi" || name == "fastcgi-socket" || name == "fastcgi_socket") return "fastcgi";
    if (name == "scgi" || name == "scgi-socket" || name == "scgi_socket") return "scgi";
    if (name == "http") return "http";
    return {};
}

void apply_config(config& cfg, const nlohmann::json& doc) {
    for_each_key(
        doc, "", [&](const std::string& key, const nlohmann::json& v, const std::string& ptr) {
            if (key == "listen") {
                if (!v.is_array())
                    throw config_error(ptr,
                                       "expected an array of {\"http\": \"host:port\"} objects");
                for (std::size_t i = 0; i < v.size(); ++i) {
                    std::string item = child(ptr, std::to_string(i));
                    if (v[i].is_string()) {  // a bare address is HTTP
                        cfg.listen.push_back({"http", as_address(v[i], item)});
                        continue;
                    }
                    if (!v[i].is_object() || v[i].size() != 1)
                        throw config_error(item,
                                           "expected one {\"http\"|\"uwsgi\"|\"fastcgi\"|\"scgi\": "
                                           "address} object");
                    auto entry = v[i].begin();
                    std::string proto = normalize_protocol_name(entry.key());
                    if (proto.empty())
                        throw config_error(
                            child(item, entry.key()),
                            "unknown protocol (expected http, uwsgi, fastcgi or scgi)");
                    cfg.listen.push_back(
                        {proto, as_address(entry.value(), child(item, entry.key()))});
                }
            } else if (key == "processes" || key == "workers") {
                cfg.processes.workers = as_count(v, ptr, 1, process_settings::max_workers);
            } else if (key == "master") {
                if (as_bool(v, ptr) && cfg.processes.workers == 0) cfg.processes.workers = 1;
            } else if (key == "preload") {
                cfg.processes.preload = as_bool(v, ptr);
            } else if (key == "lazy_apps") {
                cfg.processes.preload = !as_bool(v, ptr);
            } else if (key == "boot_timeout") {
                cfg.processes.boot_timeout = as_seconds(v, ptr);
                if (cfg.processes.boot_timeout.count() == 0)
                    throw config_error(ptr, "a worker needs some time to boot (seconds > 0)");
            } else if (key == "worker_timeout") {
                cfg.processes.worker_timeout = as_seconds(v, ptr);
            } else if (key == "max_requests") {
                cfg.processes.max_requests = as_count(v, ptr, 0, UINT64_MAX);
            } else if (key == "max_requests_jitter") {
                cfg.processes.max_requests_jitter = as_count(v, ptr, 0, UINT64_MAX);
            } else if (key == "max_rss") {
                cfg.processes.max_rss_mb = as_count(v, ptr, 0, 1024 * 1024);
            } else if (key == "max_worker_lifetime") {
                cfg.processes.max_worker_lifetime = as_seconds(v, ptr);
            } else if (key == "pidfile") {
                cfg.processes.pidfile = as_string(v, ptr);
                if (cfg.processes.pidfile.empty()) throw config_error(ptr, "empty path");
            } else if (key == "io_threads") {
                cfg.server.io_threads = as_count(v, ptr, 1, 1024);
            } else if (key == "threads") {
                cfg.python.threads = as_count(v, ptr, 1, 256);
            } else if (key == "fibers") {
                cfg.python.fibers = as_count(v, ptr, 1, 100000);
            } else if (key == "fiber_stack_kib") {
                cfg.python.fiber_stack_kib = as_count(v, ptr, 64, 65536);
            } else if (key == "async_views_hook") {
                cfg.python.async_views_hook = as_bool(v, ptr);
            } else if (key == "wsgi") {
                cfg.python.wsgi = as_string(v, ptr);
            } else if (key == "wsgi_file") {
                cfg.python.wsgi_file = as_string(v, ptr);
            } else if (key == "callable") {
                cfg.python.callable = as_string(v, ptr);
            } else if (key == "mounts") {
                for_each_key(v, ptr,
                             [&](const std::string& prefix, const nlohmann::json& app,
                                 const std::string& p) {
                                 if (prefix.empty() || prefix[0] != '/')
                                     throw config_error(p, "a mount prefix starts with '/'");
                                 cfg.python.mounts.emplace_back(prefix, as_string(app, p));
                             });
            } else if (key == "pythonpath") {
                for (auto& dir : as_string_list(v, ptr)) cfg.python.pythonpath.push_back(dir);
            } else if (key == "chdir") {
                cfg.python.chdir = as_string(v, ptr);
            } else if (key == "access_log") {
                cfg.access_log = as_bool(v, ptr);
            } else if (key == "access_log_format") {
                cfg.access_log_format = as_string(v, ptr);
                try {
                    log::validate_access_log_format(cfg.access_log_format);
                } catch (const std::invalid_argument& e) {
                    throw config_error(ptr, e.what());
                }
            } else if (key == "forwarded_allow_ips") {
                cfg.server.forwarded_allow_ips = v.is_string()
                                                     ? peer_trust::split(v.get<std::string>())
                                                     : as_string_list(v, ptr);
                try {
                    peer_trust check(cfg.server.forwarded_allow_ips);
                } catch (const std::invalid_argument& e) {
                    throw config_error(ptr, e.what());
                }
            } else if (key == "access_log_file") {
                cfg.access_log_file = as_string(v, ptr);
            } else if (key == "error_log_file") {
                cfg.error_log_file = as_string(v, ptr);
            } else if (key == "disable_logging") {
                cfg.access_log = !as_bool(v, ptr);
            } else if (key == "chmod_socket") {
                std::string mode =
                    v.is_number_integer() ? std::to_string(v.get<int>()) : as_string(v, ptr);
                cfg.server.unix_socket_mode = parse_socket_mode(mode, ptr);
            } else if (key == "limits") {
                auto& l = cfg.server.limits;
                for_each_key(
                    v, ptr,
                    [&](const std::string& k, const nlohmann::json& x, const std::string& p) {
                        if (k == "max_header_bytes")
                            l.max_header_bytes = as_count(x, p, 1024, 64 * 1024 * 1024);
                        else if (k == "max_body_bytes")
                            l.max_body_bytes = as_count(x, p, 0, UINT64_MAX);
                        else if (k == "max_connections")
                            l.max_connections = as_count(x, p, 1, 10'000'000);
                        else if (k == "max_requests_per_connection")
                            l.max_requests_per_connection = as_count(x, p, 0, UINT64_MAX);
                        // Gunicorn's request limits (its bounds: a request line of at most 8190
                        // bytes, at most 32768 fields; 0 is unlimited) and nginx's lingering close.
                        else if (k == "limit_request_line")
                            l.limit_request_line = as_count(x, p, 0, 8190);
                        else if (k == "limit_request_fields")
                            l.limit_request_fields = as_count(x, p, 0, 32768);
                        else if (k == "limit_request_field_size")
                            l.limit_request_field_size = as_count(x, p, 0, 64 * 1024 * 1024);
                        else if (k == "lingering_time")
                            l.lingering_time = as_seconds(x, p);
                        else if (k == "lingering_timeout")
                            l.lingering_timeout = as_seconds(x, p);
                        else if (k == "harakiri" || k == "timeout_request")
                            l.harakiri = as_seconds(x, p);
                        else if (k == "harakiri_grace")
                            l.harakiri_grace = as_seconds(x, p);
                        else
                            throw config_error(
                                p,
                                "unknown limit (expected max_header_bytes, max_body_bytes, "
                                "max_connections, max_requests_per_connection, "
                                "limit_request_line, limit_request_fields, "
                                "limit_request_field_size, lingering_time, lingering_timeout, "
                                "harakiri (alias timeout_request) or harakiri_grace)");
                    });
            } else if (key == "timeouts") {
                auto& l = cfg.server.limits;
                for_each_key(
                    v, ptr,
                    [&](const std::string& k, const nlohmann::json& x, const std::string& p) {
                        if (k == "header")
                            l.header_timeout = as_seconds(x, p);
                        else if (k == "body")
                            l.body_timeout = as_seconds(x, p);
                        else if (k == "idle" || k == "keep_alive")
                            l.idle_timeout = as_seconds(x, p);
                        else if (k == "write")
                            l.write_timeout = as_seconds(x, p);
                        else if (k == "graceful")
                            l.graceful_timeout = as_seconds(x, p);
                        else
                            throw config_error(
                                p,
                                "unknown timeout (expected header, body, idle, write or graceful)");
                    });
            } else if (key == "stats") {
                cfg.stats.address = as_address(v, ptr);
            } else if (key == "stats_http") {
                cfg.stats.http = as_bool(v, ptr);
            } else if (key == "routes") {
                if (!v.is_array()) throw config_error(ptr, "expected an array of route entries");
                cfg.routes = v;
            } else {
                throw config_error(ptr, "unknown setting");
            }
        });
}

unsigned parse_socket_mode(std::string_view text, const std::string& ptr) {
    unsigned mode = 0;
    if (text.empty() || text.size() > 4)
        throw config_error(ptr, "expected an octal mode such as 660");
    for (char c : text) {
        if (c < '0' || c > '7') throw config_error(ptr, "expected an octal mode such as 660");
        mode = mode * 8 + unsigned(c - '0');
    }
    return mode;
}

}  // namespace corgi
