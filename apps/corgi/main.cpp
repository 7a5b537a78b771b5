// corgi: serve C++ handlers and WSGI apps over HTTP/1.1, uwsgi, FastCGI and SCGI; or inspect the
// URL map.
#include "cli.hpp"
#include "demo_handlers.hpp"
#include "log_files.hpp"
#include "master.hpp"
#include "stats_server.hpp"
#include "systemd.hpp"

#include <corgi/core/log.hpp>
#include <corgi/core/route_config.hpp>
#include <corgi/core/server.hpp>
#include <corgi/core/stats.hpp>
#include <corgi/core/supervision.hpp>
#include <corgi/protocols/protocols.hpp>
#ifdef CORGI_WITH_WSGI
#include <corgi/wsgi/wsgi.hpp>
#endif

#include <nlohmann/json.hpp>

#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

namespace {

using namespace corgi;

#ifdef CORGI_SANITIZE
// Tests read this line: under ASan the sanitizer, not corgi, reports fiber stack overflows, and its
// allocator makes memory figures meaningless.
constexpr const char* version_text = "corgi 0.1.0 (sanitizers: address,undefined)";
#else
constexpr const char* version_text = "corgi 0.1.0";
#endif

// --wsgi / --wsgi-file / --mount become mount entries after the config's own routes, so one map
// serves both.
nlohmann::json all_routes(const cli::settings& cfg) {
    nlohmann::json routes = cfg.routes;
    for (const auto& [prefix, app] : cfg.python.mounts)
        routes.push_back({{"mount", prefix}, {"wsgi", app}});
    if (!cfg.python.wsgi.empty()) routes.push_back({{"mount", "/"}, {"wsgi", cfg.python.wsgi}});
    if (!cfg.python.wsgi_file.empty())
        routes.push_back({{"mount", "/"}, {"wsgi", cfg.python.wsgi_file}});
    return routes;
}

std::shared_ptr<url_map> build_map(const cli::settings& cfg, bool load_python) {
    nlohmann::json routes = all_routes(cfg);
    if (routes.empty()) return std::make_shared<url_map>(demo::routes());
    route_targets targets;
    targets.handlers = demo::handlers();
    if (load_python) {
#ifdef CORGI_WITH_WSGI
        targets.wsgi = [](const nlohmann::json& entry, const std::string&) {
            return wsgi::load(entry.at("wsgi").get<std::string>());
        };
#endif
    } else {
        // `corgi routes` shows the map without starting Python.
        targets.wsgi = [](const nlohmann::json&, const std::string&) -> handler {
            return [](request&) -> task<response> { co_return response::error(503); };
        };
    }
    try {
        return compile_routes(routes, targets);
    } catch (const config_error& e) {
        if (cfg.routes_origin.empty()) throw;
        throw config_error(cfg.routes_origin + ": " + e.pointer, e.message);
    }
}

dispatch_options dispatch_options_of(const cli::settings& cfg) {
    return {.request_timeout = cfg.server.limits.harakiri,
            .stuck_grace = cfg.server.limits.harakiri_grace};
}

nlohmann::json value_to_json(const route_value& v) {
    return std::visit([](const auto& x) { return nlohmann::json(x); }, v);
}

int routes_command(const cli::options& o) {
    auto map = build_map(o.cfg, false);
    if (!o.match.empty()) {
        std::istringstream in(o.match);
        std::string method, target;
        if (!(in >> method >> target) || target.empty() || target[0] != '/') {
            std::cerr << "corgi: --match expects \"METHOD /path\"\n";
            return 2;
        }
        auto q = target.find('?');
        std::string path = percent_decode(target.substr(0, q));
        match_result m = map->match(method, path);
        nlohmann::json out = {{"status", m.status}};
        if (m.status == 200) {
            out["endpoint"] = std::string(m.endpoint);
            nlohmann::json args = nlohmann::json::object();
            for (const auto& [name, value] : m.args) args[name] = value_to_json(value);
            out["args"] = args;
            if (m.is_mount) out["mount"] = m.mount_prefix;
            // The route's own deadline in seconds (0: none); absent: the global --harakiri.
            if (m.timeout != inherit_timeout)
                out["timeout"] = std::chrono::duration<double>(m.timeout).count();
        } else if (m.status == 405) {
            out["allow"] = m.allow;
        } else if (m.status == 308) {
            out["location"] = m.location + (q == std::string::npos ? "" : target.substr(q));
        }
        std::cout << out.dump() << "\n";
        return 0;
    }
    if (!o.build.empty()) {
        std::istringstream in(o.build);
        std::string endpoint, item;
        in >> endpoint;
        std::vector<std::pair<std::string, std::string>> values;
        while (in >> item) {
            auto eq = item.find('=');
            if (eq == std::string::npos) {
                std::cerr << "corgi: --build expects \"endpoint key=value ...\", got '" << item
                          << "'\n";
                return 2;
            }
            values.emplace_back(item.substr(0, eq), item.substr(eq + 1));
        }
        try {
            std::cout << map->build(endpoint, values) << "\n";
        } catch (const routing_error& e) {
            std::cerr << "corgi: " << e.what() << "\n";
            return 1;
        }
        return 0;
    }
    auto rules = map->rules();
    std::size_t w_rule = 4, w_endpoint = 8, w_methods = 7;
    bool timeouts = false;  // the TIMEOUT column appears when a route sets its own
    std::vector<std::string> methods_of;
    for (const auto& r : rules) {
        w_rule = std::max(w_rule, r.pattern.size());
        w_endpoint = std::max(w_endpoint, r.endpoint.size());
        std::string methods;
        for (const auto& m : r.methods) methods += (methods.empty() ? "" : ",") + m;
        methods_of.push_back(methods.empty() ? "*" : methods);
        w_methods = std::max(w_methods, methods_of.back().size());
        timeouts = timeouts || r.timeout != inherit_timeout;
    }
    auto pad = [](std::string s, std::size_t w) {
        return s.size() < w ? s + std::string(w - s.size(), ' ') : s;
    };
    // "-": the global --harakiri; "off": no deadline on this route; else seconds.
    auto timeout_text = [](std::chrono::milliseconds t) -> std::string {
        if (t == inherit_timeout) return "-";
        if (t.count() == 0) return "off";
        std::ostringstream s;
        s << std::chrono::duration<double>(t).count() << "s";
        return s.str();
    };
    std::cout << pad("RULE", w_rule) << "  " << pad("ENDPOINT", w_endpoint) << "  KIND      "
              << (timeouts ? pad("METHODS", w_methods) + "  TIMEOUT" : std::string("METHODS"))
              << "\n";
    for (std::size_t i = 0; i < rules.size(); ++i) {
        const auto& r = rules[i];
        const char* kind = r.type == route_entry::kind::mount ? "mount" : "rule";
        std::cout << pad(r.pattern, w_rule) << "  " << pad(r.endpoint, w_endpoint) << "  "
                  << pad(kind, 8) << "  "
                  << (timeouts ? pad(methods_of[i], w_methods) + "  " + timeout_text(r.timeout)
                               : methods_of[i])
                  << "\n";
    }
    return 0;
}

// Prints what went wrong the way the command line reports it; returns the exit status.
int report_error(std::exception_ptr error) {
    try {
        std::rethrow_exception(error);
    } catch (const systemd::environment_error& e) {
        std::cerr << "corgi: " << e.what() << "\n";
        return 2;
    } catch (const cli::usage_error& e) {
        std::cerr << "corgi: " << e.what() << "\n";
        return 2;
    } catch (const config_error& e) {
        // what() names the place: the flag, variable, "FILE: /json/pointer" or "FILE:LINE".
        std::cerr << "corgi: config error: " << e.what() << "\n";
        return 2;
    } catch (const routing_error& e) {
        std::cerr << "corgi: bad URL map: " << e.what() << "\n";
        return 2;
#ifdef CORGI_WITH_WSGI
    } catch (const wsgi::load_error& e) {
        std::cerr << "corgi: cannot load the WSGI app: " << e.what() << "\n";
        return 1;
#endif
    } catch (const std::system_error& e) {
        std::cerr << "corgi: " << e.what() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "corgi: " << e.what() << "\n";
        return 1;
    }
}

bool needs_python([[maybe_unused]] const cli::settings& cfg) {
#ifdef CORGI_WITH_WSGI
    return cfg.python.enabled() || all_routes(cfg).dump().find("\"wsgi\"") != std::string::npos;
#else
    return false;
#endif
}

// python_on_io_threads = auto: Python runs on the io threads (no hand-off between threads) when
// every route is Python, so no C++ route can wait behind it, and the io thread count is the lane
// count (or unset: it becomes the lane count). With the placement on, there is one lane per io
// thread.
void resolve_lane_placement([[maybe_unused]] cli::settings& cfg) {
#ifdef CORGI_WITH_WSGI
    auto& placement = cfg.python.python_on_io_threads;
    if (placement == wsgi::lane_placement::automatic) {
        const bool cpp_routes = all_routes(cfg).dump().find("\"handler\"") != std::string::npos;
        const bool same_count =
            cfg.server.io_threads == 0 || cfg.server.io_threads == cfg.python.threads;
        placement = !cpp_routes && same_count ? wsgi::lane_placement::io_threads
                                              : wsgi::lane_placement::own_threads;
    }
    if (placement == wsgi::lane_placement::io_threads) {
        if (cfg.server.io_threads == 0) cfg.server.io_threads = cfg.python.threads;
        cfg.python.threads = cfg.server.io_threads;
    }
#endif
}

void print_capacity(const cli::settings& cfg) {
    std::cerr << "corgi: " << cfg.server.limits.max_connections << " max connections, "
              << (cfg.server.io_threads ? cfg.server.io_threads
                                        : std::thread::hardware_concurrency())
              << " io thread(s)\n";
}

#ifdef CORGI_WITH_WSGI
// A request still spins in Python after the graceful timeout: the logs are flushed and the process
// ends without running destructors (its lane thread still runs Python).
[[noreturn]] void exit_leaving_stuck_python(const std::string& pidfile) {
    if (!pidfile.empty()) ::unlink(pidfile.c_str());
    log::flush();
    std::cerr << "corgi: stopped\n";
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    ::_exit(0);
}

// Python on an io thread that spins (or blocks in C) past the graceful timeout keeps run() from
// returning: the server's control thread ends the process as a stuck lane thread would.
void exit_when_python_is_stuck(server_options& options, std::string pidfile) {
    options.on_stuck_thread = [pidfile = std::move(pidfile)] {
        log::warning("wsgi: a request is still running Python on an io thread " +
                     std::to_string(server_options::stuck_wait.count()) +
                     " s after the graceful timeout (a loop or a blocking C call): the process "
                     "exits without finalizing the interpreter");
        exit_leaving_stuck_python(pidfile);
    };
}
#endif

// A unix socket file this process bound, removed when it stops.
struct unix_path_guard {
    std::string path;
    explicit unix_path_guard(std::string p) : path(std::move(p)) {}
    ~unix_path_guard() { ::unlink(path.c_str()); }
    unix_path_guard(const unix_path_guard&) = delete;
    unix_path_guard& operator=(const unix_path_guard&) = delete;
};

// The pidfile of a single-process server (a master writes its own); throws when it cannot be
// written.
struct pidfile_guard {
    std::string path;
    explicit pidfile_guard(std::string p) : path(std::move(p)) { master::write_pidfile(path); }
    ~pidfile_guard() {
        if (!path.empty()) ::unlink(path.c_str());
    }
    pidfile_guard(const pidfile_guard&) = delete;
    pidfile_guard& operator=(const pidfile_guard&) = delete;
};

// systemd's variables, read (and unset) before anything starts a thread, forks or imports an app.
// Sockets passed by socket activation replace the configured listeners; without them,
// 127.0.0.1:8000 when none is configured.
std::vector<systemd::activated_socket> take_systemd_environment(config& cfg) {
    systemd::take_notify_environment();
    std::vector<systemd::activated_socket> activated = systemd::take_listeners();
    if (!activated.empty()) {
        cfg.listen = systemd::activated_listen_entries(activated, cfg.listen);
        std::cerr << "corgi: socket activation: " << activated.size()
                  << " listener(s) from LISTEN_FDS, nothing bound here\n";
    } else if (cfg.listen.empty()) {
        cfg.listen.push_back({"http", listen_address::parse("127.0.0.1:8000")});
    }
    return activated;
}

int serve_command(cli::options& o) {
    cli::settings& cfg = o.cfg;
    const std::vector<systemd::activated_socket> activated = take_systemd_environment(cfg);
    log::set_access_log_enabled(cfg.access_log);
    cfg.python.harakiri_grace = cfg.server.limits.harakiri_grace;
    const bool python = needs_python(cfg);
    if (python) resolve_lane_placement(cfg);
#ifdef CORGI_WITH_WSGI
    if (python) wsgi::start_interpreter(cfg.python);
#endif
    std::shared_ptr<url_map> map = build_map(cfg, true);
#ifdef CORGI_WITH_WSGI
    if (python) exit_when_python_is_stuck(cfg.server, cfg.processes.pidfile);
#endif
    server srv(cfg.server);
    srv.set_handler(make_dispatcher(map, dispatch_options_of(cfg)));
#ifdef CORGI_WITH_WSGI
    if (python) wsgi::start_lanes(srv);
#endif
    std::string serving;  // for systemd's STATUS=
    for (std::size_t i = 0; i < cfg.listen.size(); ++i) {
        const listen_entry& l = cfg.listen[i];
        protocol proto = protocols::by_name(l.protocol);
        listen_address bound = activated.empty() ? srv.listen(l.address, std::move(proto))
                                                 : srv.adopt(activated[i].fd, std::move(proto));
        std::cerr << "corgi: serving " << l.protocol << " on " << bound.to_string() << "\n";
        serving += (serving.empty() ? "serving " : ", ") + l.protocol + " on " + bound.to_string();
    }
    print_capacity(cfg);
    // --stats in a single process: the figures are this process's, served from a thread.
    std::optional<master::stats_server> stats_listener;
    static master::stats_sources stats_sources;
    stats_sources.single = &stats::current();
    stats_sources.server_pid = ::getpid();
    stats_sources.io_threads = cfg.server.io_threads
                                   ? cfg.server.io_threads
                                   : std::max(1u, std::thread::hardware_concurrency());
    const std::vector<int> listener_fds = srv.listener_fds();
    for (std::size_t i = 0; i < cfg.listen.size() && i < listener_fds.size(); ++i)
        stats_sources.sockets.push_back(
            {listener_fds[i], cfg.listen[i].address.to_string(), cfg.listen[i].protocol});
    master::install_exposition(&stats_sources);
    std::optional<unix_path_guard> stats_path;
    if (cfg.stats.address) {
        bound_listener b = bind_listener(*cfg.stats.address, cfg.server.unix_socket_mode);
        if (b.address.is_unix) stats_path.emplace(b.address.path);
        std::cerr << "corgi: stats on " << b.address.to_string()
                  << (cfg.stats.http ? " (HTTP)" : "") << "\n";
        stats_listener.emplace(b.fd, cfg.stats.http, stats_sources);
        stats_listener->start_thread();
    }
    if (::getpid() == 1)
        std::cerr << "corgi: running as PID 1 without a master: orphaned processes are not "
                     "reaped (use --master, whose master reaps every child, or an init)\n";
    pidfile_guard pidfile(cfg.processes.pidfile);
    log_files::reopen_on_sigusr1();
    // The hooks a worker runs after its fork run here too: every serving process runs them once.
    supervision::run_worker_start_hooks();
#ifdef CORGI_WITH_WSGI
    if (python) wsgi::run_postfork_hooks();
#endif
    systemd::server_notifier notifier(srv, serving);
    srv.run();
    if (stats_listener) stats_listener->stop();
    master::install_exposition(nullptr);
#ifdef CORGI_WITH_WSGI
    if (python) {
        wsgi::shutdown();
        if (wsgi::stuck_at_shutdown()) exit_leaving_stuck_python(cfg.processes.pidfile);
    }
#endif
    std::cerr << "corgi: stopped\n";
    return 0;
}

// One pre-forked worker: the listeners are the master's sockets, adopted; the apps were imported
// by the master before the fork (preloaded) or are imported here (--lazy-apps).
int worker_main(cli::settings cfg, const std::vector<master::inherited_state::listener>& listeners,
                std::shared_ptr<url_map> preloaded, const std::function<void()>& ready) {
    try {
        systemd::forget_notify();  // the master speaks for the service
        const bool python = needs_python(cfg);
        log_files::reopen_on_sigusr1();
#ifdef CORGI_WITH_WSGI
        // The lanes start with the server (they may run on its io threads).
        if (python && !preloaded) wsgi::start_interpreter(cfg.python);
#endif
        std::shared_ptr<url_map> map = preloaded ? preloaded : build_map(cfg, true);
        // Post-fork hooks (C++ callbacks, @corgi.postfork functions): reconnect what must not be
        // shared with the master or the other workers.
        supervision::run_worker_start_hooks();
#ifdef CORGI_WITH_WSGI
        if (python) wsgi::run_postfork_hooks();
#endif
        // SIGINT is the master's (it forwards it as SIGTERM): the server stops on SIGTERM only.
        cfg.server.handle_signals = true;
        cfg.server.stop_on_sigint = false;
#ifdef CORGI_WITH_WSGI
        if (python) exit_when_python_is_stuck(cfg.server, "");
#endif
        server srv(cfg.server);
        srv.set_handler(make_dispatcher(map, dispatch_options_of(cfg)));
        for (const auto& l : listeners) srv.adopt(l.fd, protocols::by_name(l.protocol));
#ifdef CORGI_WITH_WSGI
        if (python) wsgi::start_lanes(srv);
#endif
        // Ready once run() has started the acceptors (posted after them).
        net::post(srv.main_context(),
                  [&srv, &ready] { net::post(srv.main_context(), [&ready] { ready(); }); });
        srv.run();
#ifdef CORGI_WITH_WSGI
        if (python) {
            wsgi::shutdown();
            if (wsgi::stuck_at_shutdown()) exit_leaving_stuck_python("");
        }
#endif
        return 0;
    } catch (...) {
        return report_error(std::current_exception());
    }
}

int master_command(cli::options& o, const std::vector<std::string>& argv) {
    cli::settings& cfg = o.cfg;
    const std::vector<systemd::activated_socket> activated = take_systemd_environment(cfg);
    log::set_access_log_enabled(cfg.access_log);
    cfg.python.harakiri_grace = cfg.server.limits.harakiri_grace;
    master::options mo;
    mo.workers = cfg.processes.workers;
    mo.graceful_timeout = cfg.server.limits.graceful_timeout;
    mo.boot_timeout = cfg.processes.boot_timeout;
    mo.worker_timeout = cfg.processes.worker_timeout;
    mo.max_requests = cfg.processes.max_requests;
    mo.max_requests_jitter = cfg.processes.max_requests_jitter;
    mo.max_rss_mb = cfg.processes.max_rss_mb;
    mo.max_worker_lifetime = cfg.processes.max_worker_lifetime;
    if (needs_python(cfg)) resolve_lane_placement(cfg);
    mo.io_threads = cfg.server.io_threads ? cfg.server.io_threads
                                          : std::max(1u, std::thread::hardware_concurrency());
    mo.pidfile = cfg.processes.pidfile;
    mo.argv = argv;
    mo.reopen_logs = [] { log_files::reopen(); };
    mo.inherited = master::take_inherited_state();
    cfg.python.multiprocess = cfg.processes.workers > 1;
    // Preloading (the default): the apps are imported here, once, before any fork; the workers
    // start only their lanes. A failed import at start ends the master (exit 1, the traceback in
    // stderr); after a reload's re-exec the old workers keep serving instead.
    std::shared_ptr<url_map> preloaded;
    if (cfg.processes.preload) {
        try {
#ifdef CORGI_WITH_WSGI
            if (needs_python(cfg)) {
                wsgi::start_interpreter(cfg.python);
                mo.before_fork = [] { wsgi::before_fork(); };
                mo.after_fork_in_parent = [] { wsgi::after_fork_in_parent(); };
                mo.after_fork_in_child = [] { wsgi::after_fork_in_child(); };
            }
#endif
            preloaded = build_map(cfg, true);
        } catch (...) {
            if (!mo.inherited) throw;
            report_error(std::current_exception());
            mo.cannot_spawn =
                "the apps failed to import at the last reload (above); fix them and "
                "send SIGHUP again";
            std::cerr << "corgi: reload failed: " << mo.cannot_spawn
                      << "; the running workers keep serving\n";
        }
    }
    if (mo.inherited) {
        // The sockets are the ones the first master bound: listeners are not re-bound on reload.
        mo.listeners = mo.inherited->listeners;
        bool same = mo.listeners.size() == cfg.listen.size();
        for (std::size_t i = 0; same && i < cfg.listen.size(); ++i)
            same = mo.listeners[i].protocol == cfg.listen[i].protocol;
        if (!same)
            std::cerr << "corgi: the listeners in the new configuration differ from the running "
                         "ones; they take effect at the next restart\n";
        mo.unix_paths = mo.inherited->unix_paths;
    } else {
        try {
            for (std::size_t i = 0; i < cfg.listen.size(); ++i) {
                const listen_entry& l = cfg.listen[i];
                protocols::by_name(l.protocol);  // an unknown protocol fails here, before any fork
                bound_listener b = activated.empty()
                                       ? bind_listener(l.address, cfg.server.unix_socket_mode)
                                       : bound_listener{activated[i].fd, activated[i].address};
                mo.listeners.push_back({b.fd, l.protocol, b.address.to_string()});
                // An activated socket's file is its socket unit's to remove.
                if (b.address.is_unix && activated.empty()) mo.unix_paths.push_back(b.address.path);
                std::cerr << "corgi: serving " << l.protocol << " on " << b.address.to_string()
                          << "\n";
            }
        } catch (...) {
            for (const auto& l : mo.listeners) ::close(l.fd);
            for (const auto& path : mo.unix_paths) ::unlink(path.c_str());
            throw;
        }
    }
    mo.stats_http = cfg.stats.http;
    if (mo.inherited && mo.inherited->stats_fd >= 0) {
        mo.stats_fd = mo.inherited->stats_fd;  // kept across the re-exec, as the listeners
    } else if (cfg.stats.address) {
        try {
            bound_listener b = bind_listener(*cfg.stats.address, cfg.server.unix_socket_mode);
            mo.stats_fd = b.fd;
            if (b.address.is_unix) mo.unix_paths.push_back(b.address.path);
            std::cerr << "corgi: stats on " << b.address.to_string()
                      << (cfg.stats.http ? " (HTTP)" : "") << "\n";
        } catch (...) {
            if (!mo.inherited) {
                for (const auto& l : mo.listeners) ::close(l.fd);
                for (const auto& path : mo.unix_paths) ::unlink(path.c_str());
            }
            throw;
        }
    }
    // Not for the configuration check that a reload execs (the workers inherit them by fork).
    for (const auto& l : mo.listeners) ::fcntl(l.fd, F_SETFD, FD_CLOEXEC);
    print_capacity(cfg);
    std::cerr.flush();
    const auto listeners = mo.listeners;
    return master::run(mo, [&cfg, &listeners, &preloaded](const std::function<void()>& ready) {
        return worker_main(cfg, listeners, preloaded, ready);
    });
}

// What a master runs before it re-executes itself on HUP: the new command line and configuration
// are read and checked (the URL map compiled, the protocols known), nothing is bound or imported.
int check_config_command(const cli::options& o) {
    for (const auto& l : o.cfg.listen) protocols::by_name(l.protocol);
    build_map(o.cfg, false);
    return 0;
}

}  // namespace

extern "C" char** environ;

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    cli::options o;
    try {
        o = cli::parse(args, environ);
        log::set_level(o.cfg.log_level);
        log::set_error_format(o.cfg.error_log_format);
        for (const auto& w : o.warnings) std::cerr << "corgi: warning: " << w << "\n";
        if (o.cmd == cli::command::help) {
            std::cout << cli::help_text();
            return 0;
        }
        if (o.cmd == cli::command::version) {
            std::cout << version_text << "\n";
            return 0;
        }
        // Absolute first: wsgi::initialize changes to it again, and a relative path would then
        // miss.
        if (!o.cfg.python.chdir.empty())
            o.cfg.python.chdir = std::filesystem::absolute(o.cfg.python.chdir).string();
        if (!o.cfg.python.chdir.empty() && ::chdir(o.cfg.python.chdir.c_str()) != 0) {
            std::cerr << "corgi: cannot chdir to '" << o.cfg.python.chdir << "'\n";
            return 2;
        }
        if (o.cmd == cli::command::routes) return routes_command(o);
        if (o.cmd == cli::command::print_config) {
            check_config_command(o);  // the settings are valid, the URL map compiles
            std::cout << o.effective.dump(2) << "\n";
            return 0;
        }
        if (o.cmd == cli::command::check_config || std::getenv(master::check_config_env)) {
            int code = check_config_command(o);
            if (o.cmd == cli::command::check_config) std::cout << "corgi: configuration OK\n";
            return code;
        }
        log_files::open(o.cfg.access_log_file, o.cfg.error_log_file);
        log::set_access_log_format(o.cfg.access_log_format);
        if (o.cfg.processes.workers > 0) {
            std::vector<std::string> command_line(argv, argv + argc);
            return master_command(o, command_line);
        }
        return serve_command(o);
    } catch (...) {
        return report_error(std::current_exception());
    }
}
