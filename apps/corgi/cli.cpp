// The corgi command line over the settings schema: files (--config JSON, --ini uWSGI), then
// CORGI_* variables, then flags, so flags win over the environment and the environment over files.
// Flags mirror uWSGI and Gunicorn where they mean the same (--http, --socket, -w, -b, --timeout).
#include "cli.hpp"

#include "ini_file.hpp"

#include <corgi/core/settings.hpp>

#include <cstdlib>
#include <set>

namespace corgi::cli {

namespace {

// CORGI_* variables that are not settings: the files to read, the master's re-exec state and
// the build's and test suite's own (CORGI_TEST_* too).
const std::set<std::string, std::less<>> not_settings = {
    "CORGI_CONFIG", "CORGI_INI",        "CORGI_MASTER_STATE", "CORGI_CHECK_CONFIG",
    "CORGI_BINARY", "CORGI_SOURCE_DIR", "CORGI_PYTHON",       "CORGI_HELLO_WORLD"};

struct given_flag {
    const setting* s;
    std::string flag;
    std::string value;
};

struct given_file {
    bool ini;
    std::string path;
};

}  // namespace

const char* help_text() {
    return R"(usage: corgi [serve] [options]        serve C++ handlers and WSGI apps
       corgi routes [options]         list the URL map; --match "GET /path"; --build "endpoint k=v"

listeners (repeatable; ADDR is host:port, :port, [::1]:port or unix:/path):
  --http ADDR              HTTP/1.1                  --socket ADDR         uwsgi protocol (nginx uwsgi_pass)
  --fastcgi-socket ADDR    FastCGI (fastcgi_pass)    --scgi-socket ADDR    SCGI (scgi_pass)
  --chmod-socket MODE      mode of unix sockets, e.g. 660
configuration (flags > CORGI_* variables > files; every setting: docs/configuration.md):
  --config FILE.json  --ini FILE.ini[:SECTION] (uWSGI)  --print-config (effective, JSON)  --check-config
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
  --log-level debug|info|warning|error|critical (info)  --error-log-format text|json
stats: --stats ADDR (JSON per connection, uWSGI's fields)  --stats-http (HTTP: JSON, /metrics, /_corgi/status)
Gunicorn's command line: corgi -w 4 -b 127.0.0.1:8000 --timeout 30 --access-logfile - app:app   --help --version
systemd (docs/deploy.md): NOTIFY_SOCKET, WATCHDOG_USEC; socket activation: LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES
)";
}

options parse(const std::vector<std::string>& args, char** environment) {
    options o;
    settings_schema schema;
    add_core_settings(schema, o.cfg);
#ifdef CORGI_WITH_WSGI
    wsgi::add_python_settings(schema, o.cfg.python);
#endif

    std::size_t i = 0;
    if (i < args.size() && (args[i] == "serve" || args[i] == "routes")) {
        o.cmd = args[i] == "routes" ? command::routes : command::serve;
        ++i;
    }
    std::vector<given_flag> flags;
    std::vector<given_file> files;
    std::string app_module;  // Gunicorn's positional APP_MODULE
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
        if (flag == "--check-config") {
            o.cmd = command::check_config;
            continue;
        }
        if (flag == "--print-config") {
            o.cmd = command::print_config;
            continue;
        }
        if (flag.empty() || flag[0] != '-') {
            if (!app_module.empty())
                throw usage_error("unexpected argument '" + flag + "' (one APP_MODULE, given '" +
                                  app_module + "')");
            app_module = flag;
            continue;
        }
        std::string value;
        bool has_value = false;
        if (auto eq = flag.find('='); flag.starts_with("--") && eq != std::string::npos) {
            value = flag.substr(eq + 1);
            flag = flag.substr(0, eq);
            has_value = true;
        }
        auto take_value = [&] {
            if (has_value) return;
            if (i + 1 >= args.size()) throw usage_error(flag + " needs a value");
            value = args[++i];
        };
        if (flag == "--config" || flag == "--ini" || flag == "-c") {
            take_value();
            bool ini =
                flag == "--ini" || value.ends_with(".ini") || value.find(".ini:") != value.npos;
            if (flag == "-c" && value.ends_with(".py"))
                throw usage_error("-c " + value +
                                  ": Gunicorn's Python config files are not read; give the same "
                                  "settings as flags, a JSON file (--config) or an ini (--ini)");
            files.push_back({ini, value});
            if (!ini) o.config_files.push_back(value);
            continue;
        }
        if (flag == "--match" || flag == "--build") {
            take_value();
            if (o.cmd != command::routes) throw usage_error(flag + " belongs to 'corgi routes'");
            (flag == "--match" ? o.match : o.build) = value;
            continue;
        }
        if (flag == "-k" || flag == "--worker-class") {
            // Gunicorn's worker class has no meaning here: each worker serves C++ on io threads
            // and Python on fiber lanes.
            take_value();
            o.warnings.push_back(flag + " " + value +
                                 " ignored: corgi's workers serve C++ on io threads and Python "
                                 "on fiber lanes");
            continue;
        }
        if (flag == "-n" || flag == "--name") {
            take_value();
            o.warnings.push_back(flag + " " + value +
                                 " ignored: corgi does not rename its processes");
            continue;
        }
        const setting* s = schema.find_flag(flag);
        if (!s && !flag.starts_with("--") && flag.size() > 2) {  // -w4, -b127.0.0.1:8000
            if (const setting* short_flag = schema.find_flag(flag.substr(0, 2));
                short_flag && short_flag->type != setting_type::boolean) {
                flags.push_back({short_flag, flag.substr(0, 2), flag.substr(2)});
                continue;
            }
        }
        if (!s && flag.starts_with("--no-")) {  // --no-FLAG: a boolean set to false
            s = schema.find_flag("--" + flag.substr(5));
            if (s && s->type == setting_type::boolean && !has_value) {
                flags.push_back({s, flag, "false"});
                continue;
            }
            s = nullptr;
        }
        if (!s) throw usage_error("unknown option '" + flag + "' (see corgi --help)");
        if (s->type == setting_type::boolean) {
            // A switch takes no separate value: "--preload false" would make "false" the
            // APP_MODULE.
            if (!has_value && i + 1 < args.size()) {
                const std::string& next = args[i + 1];
                if (next == "true" || next == "false" || next == "yes" || next == "no" ||
                    next == "on" || next == "off" || next == "0" || next == "1")
                    throw usage_error(flag + " takes no value: write " + flag + "=" + next);
            }
            flags.push_back({s, flag, has_value ? value : "true"});
            continue;
        }
        take_value();
        flags.push_back({s, flag, value});
    }

    // Files first (in order), then the environment, then flags.
    if (files.empty()) {
        if (const char* path = std::getenv("CORGI_CONFIG"); path && *path)
            files.push_back({false, path});
        if (const char* path = std::getenv("CORGI_INI"); path && *path)
            files.push_back({true, path});
        for (const auto& f : files)
            if (!f.ini) o.config_files.push_back(f.path);
    }
    for (const auto& f : files) {
        if (f.ini)
            read_ini_file(schema, f.path, o.warnings);
        else {
            nlohmann::json doc = read_json_file(f.path);
            if (doc.is_object() && doc.contains("routes")) o.cfg.routes_origin = f.path;
            schema.apply_document(doc, f.path);
        }
    }
    schema.apply_environment(environment, [&](const std::string& name) {
        if (!not_settings.contains(name) && !name.starts_with("CORGI_TEST_"))
            o.warnings.push_back("environment variable " + name +
                                 " is not a corgi setting; ignored");
    });
    for (const auto& f : flags)
        schema.apply_text(*f.s, f.value, f.flag, setting_source::command_line);
    if (!app_module.empty()) {
        if (!schema.find_key("wsgi"))
            throw usage_error("APP_MODULE '" + app_module + "': this corgi is built without WSGI");
        schema.apply_text(*schema.find_key("wsgi"), app_module, "APP_MODULE '" + app_module + "'",
                          setting_source::command_line);
    }
    if (o.cmd == command::print_config) o.effective = schema.effective();
    return o;
}

}  // namespace corgi::cli
