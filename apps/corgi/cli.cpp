// Flag parsing. Flags mirror uWSGI and Gunicorn where they overlap (--http, --socket, --wsgi,
// --threads ...).
#include "cli.hpp"

#include <corgi/core/log.hpp>

#include <charconv>
#include <cmath>
#include <functional>
#include <map>

namespace corgi::cli {

namespace {

std::uint64_t parse_count(const std::string& flag, const std::string& value) {
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (value.empty() || ec != std::errc() || end != value.data() + value.size())
        throw usage_error(flag + " expects a non-negative integer, got '" + value + "'");
    return n;
}

std::chrono::milliseconds parse_seconds(const std::string& flag, const std::string& value) {
    double s = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), s);
    if (value.empty() || ec != std::errc() || end != value.data() + value.size() || s < 0 ||
        !std::isfinite(s))
        throw usage_error(flag + " expects seconds (a non-negative number), got '" + value + "'");
    return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(s * 1000)));
}

listen_address parse_address(const std::string& flag, const std::string& value) {
    try {
        return listen_address::parse(value);
    } catch (const std::invalid_argument& e) {
        throw usage_error(flag + ": " + e.what());
    }
}

}  // namespace

const char* help_text() {
    return R"(usage: corgi [serve] [options]        serve C++ handlers and WSGI apps
       corgi routes [options]         list the URL map; --match "GET /path"; --build "endpoint k=v"

listeners (repeatable; ADDR is host:port, :port, [::1]:port or unix:/path):
  --http ADDR              HTTP/1.1                  --socket ADDR         uwsgi protocol (nginx uwsgi_pass)
  --fastcgi-socket ADDR    FastCGI (fastcgi_pass)    --scgi-socket ADDR    SCGI (scgi_pass)
  --chmod-socket MODE      mode of unix sockets, e.g. 660
configuration:
  --config FILE.json       settings and routes (flags given after it override it;
                           listener flags replace its `listen`)
  --io-threads N           threads for connections and C++ handlers (default: cores)
python (WSGI):
  --wsgi MODULE[:CALLABLE] app mounted at /      --wsgi-file PATH.py   app from a file, mounted at /
  --callable NAME          default callable name (application)
  --mount /PREFIX=APP      mount a WSGI app (MODULE[:CALLABLE] or PATH.py) at PREFIX (repeatable)
  --pythonpath DIR         add to sys.path (repeatable)        --chdir DIR    change directory first
  --threads N              Python lanes (default 1)           --fibers N     requests per lane (default 100)
  --no-async-views-hook    leave asgiref's async_to_sync (Flask/Django async views) as it is
limits and timeouts (seconds):
  --max-header-bytes N (65536)  --max-body-bytes N (1 GiB)  --max-connections N (10000)
  --max-requests-per-connection N (0: unlimited)
  --header-timeout S (10)  --body-timeout S (60)  --keep-alive-timeout S (60)  --write-timeout S (60)
  --graceful-timeout S (30)
  --limit-request-line N (4094, at most 8190)  --limit-request-fields N (100, at most 32768)
  --limit-request-field-size N (8190)  (Gunicorn's limits; 0: unlimited)
  --lingering-time S (30)  --lingering-timeout S (5)  (read and drop a refused request's rest)
  --harakiri S, --timeout-request S (0: off): past S a request gets 504, its handler cancelled (route "timeout")
  --harakiri-grace S (10): still running S later: logged as stuck, its worker replaced by the master
processes (a master binding the listeners, pre-forked workers inheriting them; see docs/deploy.md):
  --processes N, --workers N, -w N   N workers     --master   a master and 1 worker     --pidfile FILE
  --lazy-apps              import the apps in each worker (default: once in the master, before the fork)
  --boot-timeout S (60)  --worker-timeout S (30: silent io threads -> SIGABRT with Python stacks, SIGKILL)
  recycling, one worker at a time: --max-requests N --max-requests-jitter J --max-rss MB --max-worker-lifetime S
  signals: HUP reload config and code, TERM/INT graceful stop, QUIT stop now, TTIN/TTOU +/-1 worker, USR1 reopen logs
logs: --access-log FILE (stdout)  --error-log FILE (stderr)  --disable-logging (no access log)
  --access-log-format common|combined|json|'{template}'  --forwarded-allow-ips LIST (127.0.0.1,::1; X-Request-Id)
stats: --stats ADDR (JSON per connection, uWSGI's fields)  --stats-http (HTTP: JSON, /metrics, /_corgi/status)
other: --check-config (check the configuration and the URL map, exit 0 or 2)  --help  --version
systemd (docs/deploy.md): NOTIFY_SOCKET (Type=notify, WATCHDOG_USEC); LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES
  (socket activation: fds 3... replace the listeners; protocol: the fd's name, the listener at its address, http)
)";
}

options parse(const std::vector<std::string>& args) {
    options o;
    std::size_t i = 0;
    if (i < args.size() && (args[i] == "serve" || args[i] == "routes")) {
        o.cmd = args[i] == "routes" ? command::routes : command::serve;
        ++i;
    }
    auto& cfg = o.cfg;
    using setter = std::function<void(const std::string& flag, const std::string& value)>;
    // Listener flags replace the config file's `listen` list as a whole (whatever their order), so
    // `--config prod.json --http 127.0.0.1:9000` serves only on 9000.
    std::vector<listen_entry> flag_listeners;
    auto listener = [&](const char* proto) {
        return [&flag_listeners, proto](const std::string& f, const std::string& v) {
            flag_listeners.push_back({proto, parse_address(f, v)});
        };
    };
    auto workers = [&](const std::string& f, const std::string& v) {
        cfg.processes.workers = parse_count(f, v);
        if (cfg.processes.workers == 0 || cfg.processes.workers > process_settings::max_workers)
            throw usage_error(f + " must be between 1 and " +
                              std::to_string(process_settings::max_workers));
    };
    const std::map<std::string, setter, std::less<>> with_value = {
        {"--http", listener("http")},
        {"--http-socket", listener("http")},
        {"--socket", listener("uwsgi")},
        {"--uwsgi-socket", listener("uwsgi")},
        {"--fastcgi-socket", listener("fastcgi")},
        {"--scgi-socket", listener("scgi")},
        {"--config",
         [&](const std::string&, const std::string& v) {
             o.config_files.push_back(v);
             apply_config(cfg, read_json_file(v));
         }},
        // The process model (Gunicorn's names, and uWSGI's --processes).
        {"--processes", workers},
        {"--workers", workers},
        {"-w", workers},
        {"--pidfile",
         [&](const std::string& f, const std::string& v) {
             if (v.empty()) throw usage_error(f + " expects a file path");
             cfg.processes.pidfile = v;
         }},
        {"--boot-timeout",
         [&](const std::string& f, const std::string& v) {
             cfg.processes.boot_timeout = parse_seconds(f, v);
             if (cfg.processes.boot_timeout.count() == 0)
                 throw usage_error(f + " must be more than 0 seconds");
         }},
        {"--worker-timeout",
         [&](const std::string& f, const std::string& v) {
             cfg.processes.worker_timeout = parse_seconds(f, v);
         }},
        {"--max-requests",
         [&](const std::string& f, const std::string& v) {
             cfg.processes.max_requests = parse_count(f, v);
         }},
        {"--max-requests-jitter",
         [&](const std::string& f, const std::string& v) {
             cfg.processes.max_requests_jitter = parse_count(f, v);
         }},
        {"--max-rss",
         [&](const std::string& f, const std::string& v) {
             cfg.processes.max_rss_mb = parse_count(f, v);
             if (cfg.processes.max_rss_mb > 1024 * 1024)
                 throw usage_error(f + " is in MB: at most 1048576");
         }},
        {"--max-worker-lifetime",
         [&](const std::string& f, const std::string& v) {
             cfg.processes.max_worker_lifetime = parse_seconds(f, v);
         }},
        {"--access-log-format",
         [&](const std::string& f, const std::string& v) {
             try {
                 log::validate_access_log_format(v);
             } catch (const std::invalid_argument& e) {
                 throw usage_error(f + ": " + e.what());
             }
             cfg.access_log_format = v;
         }},
        {"--forwarded-allow-ips",
         [&](const std::string& f, const std::string& v) {
             cfg.server.forwarded_allow_ips = peer_trust::split(v);
             try {
                 peer_trust check(cfg.server.forwarded_allow_ips);
             } catch (const std::invalid_argument& e) {
                 throw usage_error(f + ": " + e.what());
             }
         }},
        {"--access-log",
         [&](const std::string& f, const std::string& v) {
             if (v.empty()) throw usage_error(f + " expects a file path");
             cfg.access_log_file = v == "-" ? "" : v;
         }},
        {"--error-log",
         [&](const std::string& f, const std::string& v) {
             if (v.empty()) throw usage_error(f + " expects a file path");
             cfg.error_log_file = v == "-" ? "" : v;
         }},
        {"--io-threads",
         [&](const std::string& f, const std::string& v) {
             cfg.server.io_threads = parse_count(f, v);
             if (cfg.server.io_threads == 0) throw usage_error(f + " must be at least 1");
         }},
        {"--threads",
         [&](const std::string& f, const std::string& v) {
             cfg.python.threads = parse_count(f, v);
             if (cfg.python.threads == 0) throw usage_error(f + " must be at least 1");
         }},
        {"--fibers",
         [&](const std::string& f, const std::string& v) {
             cfg.python.fibers = parse_count(f, v);
             if (cfg.python.fibers == 0) throw usage_error(f + " must be at least 1");
         }},
        {"--fiber-stack-kib",
         [&](const std::string& f, const std::string& v) {
             cfg.python.fiber_stack_kib = parse_count(f, v);
         }},
        {"--wsgi", [&](const std::string&, const std::string& v) { cfg.python.wsgi = v; }},
        {"--module", [&](const std::string&, const std::string& v) { cfg.python.wsgi = v; }},
        {"--wsgi-file",
         [&](const std::string&, const std::string& v) { cfg.python.wsgi_file = v; }},
        {"--callable", [&](const std::string&, const std::string& v) { cfg.python.callable = v; }},
        {"--mount",
         [&](const std::string& f, const std::string& v) {
             auto eq = v.find('=');
             if (eq == std::string::npos || eq == 0 || v[0] != '/' || eq + 1 == v.size())
                 throw usage_error(
                     f + " expects /PREFIX=MODULE[:CALLABLE] or /PREFIX=PATH.py, got '" + v + "'");
             cfg.python.mounts.emplace_back(v.substr(0, eq), v.substr(eq + 1));
         }},
        {"--pythonpath",
         [&](const std::string&, const std::string& v) { cfg.python.pythonpath.push_back(v); }},
        {"--chdir", [&](const std::string&, const std::string& v) { cfg.python.chdir = v; }},
        {"--chmod-socket",
         [&](const std::string& f, const std::string& v) {
             try {
                 cfg.server.unix_socket_mode = parse_socket_mode(v, "");
             } catch (const config_error&) {
                 throw usage_error(f + " expects an octal mode such as 660, got '" + v + "'");
             }
         }},
        {"--max-header-bytes",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.max_header_bytes = parse_count(f, v);
             if (cfg.server.limits.max_header_bytes < 1024)
                 throw usage_error(f + " must be at least 1024");
         }},
        {"--max-body-bytes",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.max_body_bytes = parse_count(f, v);
         }},
        {"--max-connections",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.max_connections = parse_count(f, v);
             if (cfg.server.limits.max_connections == 0)
                 throw usage_error(f + " must be at least 1");
         }},
        {"--max-requests-per-connection",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.max_requests_per_connection = parse_count(f, v);
         }},
        {"--header-timeout",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.header_timeout = parse_seconds(f, v);
         }},
        {"--body-timeout",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.body_timeout = parse_seconds(f, v);
         }},
        {"--keep-alive-timeout",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.idle_timeout = parse_seconds(f, v);
         }},
        {"--write-timeout",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.write_timeout = parse_seconds(f, v);
         }},
        {"--graceful-timeout",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.graceful_timeout = parse_seconds(f, v);
         }},
        // Gunicorn's request limits (same bounds: 0 is unlimited) and nginx's lingering close.
        {"--limit-request-line",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.limit_request_line = parse_count(f, v);
             if (cfg.server.limits.limit_request_line > 8190)
                 throw usage_error(f + " must be between 0 (unlimited) and 8190");
         }},
        {"--limit-request-fields",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.limit_request_fields = parse_count(f, v);
             if (cfg.server.limits.limit_request_fields > 32768)
                 throw usage_error(f + " must be between 0 (unlimited) and 32768");
         }},
        {"--limit-request-field-size",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.limit_request_field_size = parse_count(f, v);
             if (cfg.server.limits.limit_request_field_size > 64 * 1024 * 1024)
                 throw usage_error(f + " must be between 0 (unlimited) and 67108864");
         }},
        {"--lingering-time",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.lingering_time = parse_seconds(f, v);
         }},
        {"--lingering-timeout",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.lingering_timeout = parse_seconds(f, v);
         }},
        // uWSGI's --harakiri (Gunicorn has --timeout, but it kills the worker): a deadline that
        // fails one request.
        {"--harakiri",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.harakiri = parse_seconds(f, v);
         }},
        {"--timeout-request",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.harakiri = parse_seconds(f, v);
         }},
        {"--harakiri-grace",
         [&](const std::string& f, const std::string& v) {
             cfg.server.limits.harakiri_grace = parse_seconds(f, v);
         }},
        {"--stats",
         [&](const std::string& f, const std::string& v) {
             cfg.stats.address = parse_address(f, v);
         }},
        {"--match", [&](const std::string&, const std::string& v) { o.match = v; }},
        {"--build", [&](const std::string&, const std::string& v) { o.build = v; }},
    };
    for (; i < args.size(); ++i) {
        std::string flag = args[i];
        if (flag == "--help" || flag == "-h") {
            o.cmd = command::help;
            return o;
        }
        if (flag == "--version") {
            o.cmd = command::version;
            return o;
        }
        if (flag == "--disable-logging") {
            cfg.access_log = false;
            continue;
        }
        if (flag == "--master") {
            if (cfg.processes.workers == 0) cfg.processes.workers = 1;
            continue;
        }
        if (flag == "--preload") {
            cfg.processes.preload = true;
            continue;
        }
        if (flag == "--stats-http") {
            cfg.stats.http = true;
            continue;
        }
        if (flag == "--check-config") {
            o.cmd = command::check_config;
            continue;
        }
        if (flag == "--lazy-apps") {
            cfg.processes.preload = false;
            continue;
        }
        if (flag == "--no-async-views-hook") {
            cfg.python.async_views_hook = false;
            continue;
        }
        std::string value;
        bool has_value = false;
        if (auto eq = flag.find('='); flag.starts_with("--") && eq != std::string::npos) {
            value = flag.substr(eq + 1);
            flag = flag.substr(0, eq);
            has_value = true;
        }
        auto it = with_value.find(flag);
        if (it == with_value.end())
            throw usage_error("unknown option '" + flag + "' (see corgi --help)");
        if (!has_value) {
            if (i + 1 >= args.size()) throw usage_error(flag + " needs a value");
            value = args[++i];
        }
        if ((flag == "--match" || flag == "--build") && o.cmd != command::routes)
            throw usage_error(flag + " belongs to 'corgi routes'");
        it->second(flag, value);
    }
    if (!flag_listeners.empty()) cfg.listen = std::move(flag_listeners);
    return o;
}

}  // namespace corgi::cli
