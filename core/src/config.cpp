// core's settings (listeners, server, limits, timeouts, logs, processes, stats, routes) in the
// settings schema, and the JSON file reader.
#include <corgi/core/config.hpp>
#include <corgi/core/log.hpp>
#include <corgi/core/settings.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include <cmath>
#include <fstream>
#include <sstream>

namespace corgi {

config_error::config_error(std::string ptr, const std::string& text)
    : std::runtime_error(ptr.empty() ? text : ptr + ": " + text),
      pointer(std::move(ptr)),
      message(text) {}

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

std::chrono::milliseconds to_ms(const nlohmann::json& seconds) {
    return std::chrono::milliseconds(
        static_cast<std::int64_t>(std::llround(seconds.get<double>() * 1000.0)));
}

listen_address to_address(const nlohmann::json& v) {
    return listen_address::parse(v.get<std::string>());
}

// Gunicorn's --bind: HOST:PORT, HOST (port 8000), unix:PATH; fd://N is systemd's business here.
nlohmann::json gunicorn_bind(std::string_view text) {
    if (text.starts_with("fd://"))
        throw config_error("",
                           "fd:// binds are not supported: pass sockets by systemd socket "
                           "activation (LISTEN_FDS, docs/deploy.md)");
    if (text.starts_with("/")) return "unix:" + std::string(text);
    if (text.starts_with("[") && text.ends_with("]")) return std::string(text) + ":8000";
    if (!text.starts_with("unix:") && !text.starts_with("[") &&
        text.find(':') == std::string_view::npos)
        return std::string(text) + ":8000";
    return std::string(text);
}

nlohmann::json file_or_dash(const std::string& path) { return path.empty() ? "-" : path; }

// One listener kind: each use adds a listener; all of them fill `listen`.
setting listener_setting(config& cfg, std::string key, std::string proto,
                         std::vector<std::string> flags, std::vector<std::string> ini) {
    setting s;
    s.keys = {std::move(key)};
    s.type = setting_type::address;
    s.flags = std::move(flags);
    s.ini = std::move(ini);
    s.group = "listen";
    s.set = [&cfg, proto](const nlohmann::json& v) {
        cfg.listen.push_back({proto, to_address(v)});
    };
    s.clear = [&cfg] { cfg.listen.clear(); };
    return s;
}

}  // namespace

std::string normalize_protocol_name(std::string_view name) {
    if (name == "socket" || name == "uwsgi") return "uwsgi";
    if (name == "fastcgi" || name == "fastcgi-socket" || name == "fastcgi_socket") return "fastcgi";
    if (name == "scgi" || name == "scgi-socket" || name == "scgi_socket") return "scgi";
    if (name == "http") return "http";
    return {};
}

void add_core_settings(settings_schema& schema, config& cfg) {
    // --- listeners
    {
        setting s;
        s.keys = {"listen"};
        s.type = setting_type::json;
        s.group = "listen";
        s.set = [&cfg](const nlohmann::json& v) {
            if (!v.is_array())
                throw config_error("", "expected an array of {\"http\": \"host:port\"} objects");
            for (std::size_t i = 0; i < v.size(); ++i) {
                std::string item = "/" + std::to_string(i);
                auto parse = [&](const nlohmann::json& a, const std::string& ptr) {
                    if (!a.is_string()) throw config_error(ptr, "expected an address string");
                    try {
                        return to_address(a);
                    } catch (const std::invalid_argument& e) {
                        throw config_error(ptr, e.what());
                    }
                };
                if (v[i].is_string()) {  // a bare address is HTTP
                    cfg.listen.push_back({"http", parse(v[i], item)});
                    continue;
                }
                if (!v[i].is_object() || v[i].size() != 1)
                    throw config_error(
                        item,
                        "expected one {\"http\"|\"uwsgi\"|\"fastcgi\"|\"scgi\": address} object");
                auto entry = v[i].begin();
                std::string proto = normalize_protocol_name(entry.key());
                if (proto.empty())
                    throw config_error(json_pointer_child(item, entry.key()),
                                       "unknown protocol (expected http, uwsgi, fastcgi or scgi)");
                cfg.listen.push_back(
                    {proto, parse(entry.value(), json_pointer_child(item, entry.key()))});
            }
        };
        s.clear = [&cfg] { cfg.listen.clear(); };
        s.get = [&cfg] {
            nlohmann::json out = nlohmann::json::array();
            for (const auto& l : cfg.listen) out.push_back({{l.protocol, l.address.to_string()}});
            return out;
        };
        schema.add(std::move(s));
    }
    schema.add(listener_setting(cfg, "http", "http", {"--http", "--http-socket"},
                                {"http", "http-socket"}));
    schema.add(listener_setting(cfg, "socket", "uwsgi", {"--socket", "--uwsgi-socket"},
                                {"socket", "uwsgi-socket"}));
    schema.add(listener_setting(cfg, "fastcgi_socket", "fastcgi", {"--fastcgi-socket"},
                                {"fastcgi-socket"}));
    schema.add(listener_setting(cfg, "scgi_socket", "scgi", {"--scgi-socket"}, {"scgi-socket"}));
    {
        setting s = listener_setting(cfg, "bind", "http", {"--bind", "-b"}, {});
        s.from_text = gunicorn_bind;
        schema.add(std::move(s));
    }
    {
        setting s;
        s.keys = {"chmod_socket"};
        s.type = setting_type::mode;
        s.flags = {"--chmod-socket"};
        s.ini = {"chmod-socket"};
        // uWSGI: chmod-socket without a value is 666.
        s.from_text = [](std::string_view t) {
            return t.empty() || t == "true" ? "666" : std::string(t);
        };
        s.set = [&cfg](const nlohmann::json& v) {
            cfg.server.unix_socket_mode = parse_socket_mode(
                v.is_string() ? v.get<std::string>() : std::to_string(v.get<std::uint64_t>()), "");
        };
        s.get = [&cfg]() -> nlohmann::json {
            if (cfg.server.unix_socket_mode == 0) return nullptr;
            char text[16];
            std::snprintf(text, sizeof text, "%o", cfg.server.unix_socket_mode);
            return text;
        };
        schema.add(std::move(s));
    }

    // --- server
    {
        setting s =
            count_setting({"io_threads"}, {"--io-threads"}, {}, cfg.server.io_threads, 1, 1024);
        s.get = [&cfg]() -> nlohmann::json {  // unset: one per core
            if (cfg.server.io_threads == 0) return nullptr;
            return cfg.server.io_threads;
        };
        schema.add(std::move(s));
    }
    {
        setting s;
        s.keys = {"forwarded_allow_ips"};
        s.type = setting_type::list;
        s.flags = {"--forwarded-allow-ips"};
        s.from_text = [](std::string_view t) {
            nlohmann::json out = nlohmann::json::array();
            for (auto& e : peer_trust::split(t)) out.push_back(e);
            return out;
        };
        s.set = [&cfg](const nlohmann::json& v) {
            std::vector<std::string> entries = peer_trust::split(v.get<std::string>());
            peer_trust check(entries);  // std::invalid_argument names a bad entry
            for (auto& e : entries) cfg.server.forwarded_allow_ips.push_back(std::move(e));
        };
        s.clear = [&cfg] { cfg.server.forwarded_allow_ips.clear(); };
        s.get = [&cfg] { return cfg.server.forwarded_allow_ips; };
        schema.add(std::move(s));
    }

    // --- limits
    auto& l = cfg.server.limits;
    schema.add(count_setting({"limits/max_header_bytes"}, {"--max-header-bytes"}, {"buffer-size"},
                             l.max_header_bytes, 1024, 64 * 1024 * 1024));
    schema.add(count_setting({"limits/max_body_bytes"}, {"--max-body-bytes"}, {}, l.max_body_bytes,
                             0, UINT64_MAX));
    schema.add(count_setting({"limits/max_connections"},
                             {"--max-connections", "--worker-connections"}, {}, l.max_connections,
                             1, 10'000'000));
    schema.add(count_setting({"limits/max_requests_per_connection"},
                             {"--max-requests-per-connection"}, {}, l.max_requests_per_connection,
                             0, UINT64_MAX));
    // Gunicorn's request limits (its bounds: a request line of at most 8190 bytes, at most 32768
    // fields; 0 is unlimited) and nginx's lingering close.
    schema.add(count_setting({"limits/limit_request_line"}, {"--limit-request-line"}, {},
                             l.limit_request_line, 0, 8190));
    schema.add(count_setting({"limits/limit_request_fields"}, {"--limit-request-fields"}, {},
                             l.limit_request_fields, 0, 32768));
    schema.add(count_setting({"limits/limit_request_field_size"}, {"--limit-request-field-size"},
                             {}, l.limit_request_field_size, 0, 64 * 1024 * 1024));
    schema.add(
        seconds_setting({"limits/lingering_time"}, {"--lingering-time"}, {}, l.lingering_time));
    schema.add(seconds_setting({"limits/lingering_timeout"}, {"--lingering-timeout"}, {},
                               l.lingering_timeout));
    // uWSGI's harakiri (Gunicorn's --timeout kills the worker: that is worker_timeout): a
    // deadline that fails one request.
    schema.add(seconds_setting({"limits/harakiri", "limits/timeout_request"},
                               {"--harakiri", "--timeout-request"}, {"harakiri"}, l.harakiri));
    schema.add(
        seconds_setting({"limits/harakiri_grace"}, {"--harakiri-grace"}, {}, l.harakiri_grace));

    // --- timeouts
    schema.add(seconds_setting({"timeouts/header"}, {"--header-timeout"}, {}, l.header_timeout));
    schema.add(seconds_setting({"timeouts/body"}, {"--body-timeout"}, {}, l.body_timeout));
    schema.add(seconds_setting({"timeouts/idle", "timeouts/keep_alive"},
                               {"--keep-alive-timeout", "--keep-alive"}, {}, l.idle_timeout));
    schema.add(seconds_setting({"timeouts/write"}, {"--write-timeout"}, {}, l.write_timeout));
    schema.add(seconds_setting({"timeouts/graceful"}, {"--graceful-timeout"},
                               {"worker-reload-mercy"}, l.graceful_timeout));

    // --- logs
    schema.add(bool_setting({"access_log"}, {"--access-log-enabled"}, {}, cfg.access_log));
    {
        setting s;
        s.keys = {"disable_logging"};
        s.type = setting_type::boolean;
        s.flags = {"--disable-logging"};
        s.ini = {"disable-logging"};
        s.set = [&cfg](const nlohmann::json& v) { cfg.access_log = !v.get<bool>(); };
        schema.add(std::move(s));
    }
    {
        setting s =
            text_setting({"access_log_format"}, {"--access-log-format"}, {}, cfg.access_log_format);
        s.set = [&cfg](const nlohmann::json& v) {
            log::validate_access_log_format(v.get<std::string>());
            cfg.access_log_format = v.get<std::string>();
        };
        schema.add(std::move(s));
    }
    auto log_file = [&](std::string key, std::vector<std::string> flags, std::string& field) {
        setting s;
        s.keys = {std::move(key)};
        s.flags = std::move(flags);
        s.set = [&field](const nlohmann::json& v) {
            const auto& path = v.get<std::string>();
            if (path.empty())
                throw std::invalid_argument("expects a file path, or - for the default");
            field = path == "-" ? "" : path;
        };
        s.get = [&field] { return file_or_dash(field); };
        return s;
    };
    schema.add(
        log_file("access_log_file", {"--access-logfile", "--access-log"}, cfg.access_log_file));
    schema.add(log_file("error_log_file", {"--error-logfile", "--error-log", "--log-file"},
                        cfg.error_log_file));
    {
        // uWSGI's logto: every log line to one file.
        setting s;
        s.keys = {"logto"};
        s.ini = {"logto"};
        s.set = [&cfg](const nlohmann::json& v) {
            if (v.get<std::string>().empty()) throw std::invalid_argument("expects a file path");
            cfg.access_log_file = cfg.error_log_file = v.get<std::string>();
        };
        schema.add(std::move(s));
    }
    {
        setting s = text_setting({"log_level"}, {"--log-level"}, {}, cfg.log_level);
        s.set = [&cfg](const nlohmann::json& v) {
            std::string level = v.get<std::string>();
            for (char& c : level)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            log::validate_level(level);
            cfg.log_level = level;
        };
        schema.add(std::move(s));
    }
    {
        setting s =
            text_setting({"error_log_format"}, {"--error-log-format"}, {}, cfg.error_log_format);
        s.set = [&cfg](const nlohmann::json& v) {
            std::string format = v.get<std::string>();
            for (char& c : format)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            log::validate_error_format(format);
            cfg.error_log_format = format;
        };
        schema.add(std::move(s));
    }

    // --- processes (a master binding the listeners, pre-forked workers inheriting them)
    auto& p = cfg.processes;
    {
        setting s =
            count_setting({"workers", "processes"}, {"--workers", "--processes", "-w"},
                          {"processes", "workers"}, p.workers, 1, process_settings::max_workers);
        s.get = [&p]() -> nlohmann::json {  // unset: one process serves, no master
            if (p.workers == 0) return nullptr;
            return p.workers;
        };
        schema.add(std::move(s));
    }
    {
        setting s;
        s.keys = {"master"};
        s.type = setting_type::boolean;
        s.flags = {"--master"};
        s.ini = {"master"};
        s.set = [&p](const nlohmann::json& v) {
            if (v.get<bool>() && p.workers == 0) p.workers = 1;
        };
        schema.add(std::move(s));
    }
    schema.add(bool_setting({"preload"}, {"--preload"}, {}, p.preload));
    {
        setting s;
        s.keys = {"lazy_apps"};
        s.type = setting_type::boolean;
        s.flags = {"--lazy-apps"};
        s.ini = {"lazy-apps"};
        s.set = [&p](const nlohmann::json& v) { p.preload = !v.get<bool>(); };
        schema.add(std::move(s));
    }
    {
        setting s = seconds_setting({"boot_timeout"}, {"--boot-timeout"}, {}, p.boot_timeout);
        s.set = [&p](const nlohmann::json& v) {
            if (v.get<double>() <= 0)
                throw std::invalid_argument("a worker needs some time to boot (seconds > 0)");
            p.boot_timeout = to_ms(v);
        };
        schema.add(std::move(s));
    }
    // Gunicorn's --timeout: a worker silent this long is killed and replaced.
    schema.add(seconds_setting({"worker_timeout"}, {"--worker-timeout", "--timeout", "-t"}, {},
                               p.worker_timeout));
    schema.add(count_setting({"max_requests"}, {"--max-requests"}, {"max-requests"}, p.max_requests,
                             0, UINT64_MAX));
    schema.add(count_setting({"max_requests_jitter"}, {"--max-requests-jitter"}, {},
                             p.max_requests_jitter, 0, UINT64_MAX));
    schema.add(
        count_setting({"max_rss"}, {"--max-rss"}, {"reload-on-rss"}, p.max_rss_mb, 0, 1024 * 1024));
    schema.add(seconds_setting({"max_worker_lifetime"}, {"--max-worker-lifetime"},
                               {"max-worker-lifetime"}, p.max_worker_lifetime));
    {
        setting s = text_setting({"pidfile"}, {"--pidfile", "--pid", "-p"}, {"pidfile"}, p.pidfile);
        s.set = [&p](const nlohmann::json& v) {
            if (v.get<std::string>().empty()) throw std::invalid_argument("expects a file path");
            p.pidfile = v.get<std::string>();
        };
        s.get = [&p]() -> nlohmann::json {
            if (p.pidfile.empty()) return nullptr;
            return p.pidfile;
        };
        schema.add(std::move(s));
    }
    {
        // Gunicorn's --env and uWSGI's env: KEY=VALUE into the environment, before any app is
        // imported.
        setting s;
        s.keys = {"env"};
        s.type = setting_type::list;
        s.flags = {"--env", "-e"};
        s.ini = {"env"};
        s.set = [&cfg](const nlohmann::json& v) {
            const auto& text = v.get<std::string>();
            auto eq = text.find('=');
            if (eq == 0 || eq == std::string::npos)
                throw std::invalid_argument("expects KEY=VALUE, got '" + text + "'");
            ::setenv(text.substr(0, eq).c_str(), text.substr(eq + 1).c_str(), 1);
            cfg.environment.push_back(text);
        };
        s.get = [&cfg]() -> nlohmann::json {
            if (cfg.environment.empty()) return nullptr;
            return cfg.environment;
        };
        schema.add(std::move(s));
    }

    // --- stats
    {
        setting s;
        s.keys = {"stats"};
        s.type = setting_type::address;
        s.flags = {"--stats"};
        s.ini = {"stats"};
        s.set = [&cfg](const nlohmann::json& v) { cfg.stats.address = to_address(v); };
        s.get = [&cfg]() -> nlohmann::json {
            if (!cfg.stats.address) return nullptr;
            return cfg.stats.address->to_string();
        };
        schema.add(std::move(s));
    }
    schema.add(bool_setting({"stats_http"}, {"--stats-http"}, {"stats-http"}, cfg.stats.http));

    // --- the URL map (compiled by compile_routes)
    {
        setting s;
        s.keys = {"routes"};
        s.type = setting_type::json;
        s.set = [&cfg](const nlohmann::json& v) {
            if (!v.is_array()) throw config_error("", "expected an array of route entries");
            cfg.routes = v;
        };
        s.get = [&cfg] { return cfg.routes; };
        schema.add(std::move(s));
    }
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
