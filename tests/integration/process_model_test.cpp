// The process model: a master binding the listeners and pre-forked workers inheriting them.
// Workers are found by their parent pid in /proc (never by name) and each one seen is SIGKILLed
// by pid when the test ends, whatever happened, as the master is by child_process.
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

using namespace corgi::test;

namespace {

struct proc_stat {
    pid_t ppid = 0;
    char state = '?';
    unsigned long long start_time = 0;  // clock ticks after boot: tells a reused pid apart
};

std::optional<proc_stat> stat_of(pid_t pid) {
    std::string text = read_file("/proc/" + std::to_string(pid) + "/stat");
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so parse after the last
    // ')'.
    auto close = text.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::vector<std::string> fields;
    std::string field;
    for (char c : text.substr(close + 2)) {
        if (c == ' ') {
            fields.push_back(field);
            field.clear();
        } else {
            field += c;
        }
    }
    fields.push_back(field);
    if (fields.size() < 20) return std::nullopt;
    proc_stat st;
    st.state = fields[0].empty() ? '?' : fields[0][0];
    st.ppid = static_cast<pid_t>(std::stol(fields[1]));
    st.start_time = std::stoull(fields[19]);  // field 22 of stat(5)
    return st;
}

bool alive(pid_t pid) {
    auto st = stat_of(pid);
    return st && st->state != 'Z' && st->state != 'X';
}

// The live (not zombie) children of a process.
std::set<pid_t> children_of(pid_t parent) {
    std::set<pid_t> out;
    DIR* dir = ::opendir("/proc");
    if (!dir) return out;
    while (dirent* e = ::readdir(dir)) {
        char* end = nullptr;
        long pid = std::strtol(e->d_name, &end, 10);
        if (pid <= 0 || *end != '\0') continue;
        auto st = stat_of(static_cast<pid_t>(pid));
        if (st && st->ppid == parent && st->state != 'Z' && st->state != 'X')
            out.insert(static_cast<pid_t>(pid));
    }
    ::closedir(dir);
    return out;
}

// A master with its workers, serving tests/integration/apps/process_apps.py (which answers with
// the pid of the worker). On destruction the master, then every worker ever seen (when its pid
// still names the same process), is SIGKILLed.
class prefork_server {
  public:
    // `--processes workers` and extra flags; waits for the workers to be ready.
    explicit prefork_server(std::size_t workers, std::vector<std::string> extra = {})
        : prefork_server(with_app({"--processes", std::to_string(workers)}, std::move(extra)),
                         workers) {}
    prefork_server(std::vector<std::string> flags, std::size_t workers)
        : server_(std::move(flags), source_dir()) {
        REQUIRE(wait_workers(workers));
    }
    static std::vector<std::string> with_app(std::vector<std::string> a,
                                             std::vector<std::string> extra = {}) {
        for (const char* x : {"--io-threads", "1", "--disable-logging", "--wsgi", "process_apps"})
            a.push_back(x);
        a.push_back("--pythonpath");
        a.push_back(source_dir() + "/tests/integration/apps");
        for (auto& x : extra) a.push_back(std::move(x));
        return a;
    }
    ~prefork_server() {
        server_.process().send_signal(SIGKILL);
        for (const auto& [pid, start] : seen_) {
            auto st = stat_of(pid);
            if (st && st->start_time == start) ::kill(pid, SIGKILL);
        }
    }
    prefork_server(const prefork_server&) = delete;
    prefork_server& operator=(const prefork_server&) = delete;

    child_process& process() { return server_.process(); }
    pid_t master() { return server_.process().pid(); }
    std::uint16_t port() const { return server_.port(); }
    std::string err() { return server_.process().err(); }

    std::set<pid_t> workers() {
        auto pids = children_of(master());
        for (pid_t pid : pids)
            if (auto st = stat_of(pid)) seen_.emplace(pid, st->start_time);
        return pids;
    }
    // Exactly n workers, and as many "ready" lines as workers ever started (n at least).
    bool wait_workers(std::size_t n, clock::duration timeout = 15s) {
        return eventually(
            [&] {
                const auto pids = workers();
                if (pids.size() != n) return false;
                const std::string log = err();
                for (pid_t pid : pids)
                    if (log.find("worker " + std::to_string(pid) + " ready") == std::string::npos)
                        return false;
                return true;
            },
            timeout);
    }
    // Exactly n workers, none of them in `old` (a generation replaced).
    bool replaced(const std::set<pid_t>& old, std::size_t n, clock::duration timeout) {
        return eventually(
            [&] {
                auto now = workers();
                if (now.size() != n) return false;
                for (pid_t pid : now)
                    if (old.count(pid)) return false;
                return true;
            },
            timeout);
    }
    // The pid of the worker that served a fresh connection, or 0.
    pid_t served_by(std::string_view target = "/") {
        int connect_error = 0;
        auto c = http_client::try_tcp(port(), "127.0.0.1", &connect_error);
        std::string why;
        if (!c) {
            why = std::string("connect: ") + std::strerror(connect_error);
        } else if (!c->send(get_request(target, "Connection: close\r\n"))) {
            why = "send: the connection was closed";
        } else if (auto r = c->read_response(); !r) {
            why = c->error();
        } else if (r->status != 200) {
            why = "status " + std::to_string(r->status) + ": " + r->body;
        } else {
            return static_cast<pid_t>(std::stol(r->body));
        }
        std::lock_guard lock(failures_mutex_);
        failures_ += std::string(target) + " failed: " + why + "\n";
        return 0;
    }
    // What went wrong with each request served_by() counted as failed (for INFO).
    std::string failures() {
        std::lock_guard lock(failures_mutex_);
        return failures_;
    }

  private:
    corgi_server server_;
    std::map<pid_t, unsigned long long> seen_;
    std::mutex failures_mutex_;
    std::string failures_;
};

}  // namespace

TEST_CASE("process model: --processes 2 forks two workers that share the listener",
          "[process_model]") {
    prefork_server srv(2);
    const auto workers = srv.workers();
    REQUIRE(workers.size() == 2);
    CHECK(count_of(srv.err(), "corgi: serving http on ") == 1);
    CHECK(srv.err().find("corgi: master " + std::to_string(srv.master()) + ", 2 workers") !=
          std::string::npos);
    // Connections are accepted from one queue by whichever worker gets there first: within a few
    // hundred requests both do.
    std::set<pid_t> served;
    int failures = 0;
    for (int i = 0; i < 400 && served.size() < 2; ++i) {
        pid_t pid = srv.served_by();
        if (pid == 0) ++failures;
        served.insert(pid);
    }
    CHECK(failures == 0);
    CHECK(served == workers);
    auto r = fetch(srv.port(), "/multiprocess");
    REQUIRE(r);
    CHECK(r->body == "True");  // environ["wsgi.multiprocess"] with several workers
}

TEST_CASE("process model: --master alone runs one worker; the master never serves",
          "[process_model]") {
    prefork_server srv(prefork_server::with_app({"--master"}), 1);
    const auto workers = srv.workers();
    REQUIRE(workers.size() == 1);
    const pid_t served = srv.served_by();
    CHECK(served == *workers.begin());
    CHECK(served != srv.master());
    // PEP 3333's wsgi.multiprocess: false with one worker (as Gunicorn says).
    auto r = fetch(srv.port(), "/multiprocess");
    REQUIRE(r);
    CHECK(r->body == "False");
}

TEST_CASE("process model: a worker killed with SIGKILL is logged and replaced by exactly one",
          "[process_model]") {
    prefork_server srv(2);
    const auto before = srv.workers();
    const pid_t victim = *before.begin();
    REQUIRE(::kill(victim, SIGKILL) == 0);
    CHECK(srv.process().wait_for_err(
        "worker " + std::to_string(victim) +
            " exited (signal 9 (SIGKILL), perhaps by the OOM killer); respawning",
        5s));
    REQUIRE(srv.wait_workers(2));
    auto after = srv.workers();
    CHECK(after.count(victim) == 0);
    CHECK(after.count(*std::next(before.begin())) == 1);
    // No duplicate appears later.
    std::this_thread::sleep_for(500ms);
    CHECK(srv.workers() == after);
    for (int i = 0; i < 10; ++i) CHECK(after.count(srv.served_by()) == 1);
}

TEST_CASE("process model: when the master is SIGKILLed its workers exit and the port is freed",
          "[process_model]") {
    prefork_server srv(2);
    const auto workers = srv.workers();
    const auto port = srv.port();
    srv.process().send_signal(SIGKILL);
    REQUIRE(srv.process().wait_exit(5s));
    CHECK(eventually(
        [&] {
            for (pid_t pid : workers)
                if (alive(pid)) return false;
            return true;
        },
        5s));
    // A new server can bind the same port (the single-process demo, which answers /plaintext).
    corgi_server again({"--http", "127.0.0.1:" + std::to_string(port)}, source_dir());
    CHECK(again.port() == port);
    CHECK(answers(port));
}

TEST_CASE("process model: SIGTERM lets an in-flight request finish, then the master exits 0",
          "[process_model]") {
    prefork_server srv(2);
    const auto workers = srv.workers();
    auto client = http_client::tcp(srv.port());
    REQUIRE(client.send(get_request("/sleep?ms=1000")));
    std::this_thread::sleep_for(300ms);  // inside the app now
    srv.process().send_signal(SIGTERM);
    auto r = client.read_response(false, 5s);
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(workers.count(static_cast<pid_t>(std::stol(r->body))) == 1);
    CHECK(srv.process().wait_exit(10s) == std::optional<int>(0));
    for (pid_t pid : workers) CHECK_FALSE(alive(pid));
    CHECK(srv.err().find("corgi: stopped") != std::string::npos);
}

TEST_CASE("process model: SIGHUP replaces every worker one at a time without failing a request",
          "[process_model]") {
    prefork_server srv(2);
    const auto old_workers = srv.workers();
    std::atomic<bool> done{false};
    std::atomic<int> ok{0}, failed{0};
    std::thread load([&] {
        const auto deadline = clock::now() + 20s;
        while (!done && clock::now() < deadline) {
            if (srv.served_by() != 0)
                ++ok;
            else
                ++failed;
            std::this_thread::sleep_for(5ms);
        }
    });
    std::this_thread::sleep_for(200ms);
    srv.process().send_signal(SIGHUP);
    const bool replaced = srv.process().wait_for_err("every worker replaced", 15s);
    const bool settled = srv.replaced(old_workers, 2, 10s);
    std::this_thread::sleep_for(200ms);
    done = true;
    load.join();
    INFO(srv.err());
    INFO(srv.failures());
    CHECK(replaced);
    CHECK(settled);
    CHECK(failed == 0);
    CHECK(ok > 10);
    for (pid_t pid : srv.workers()) CHECK(old_workers.count(pid) == 0);
    CHECK(old_workers.count(srv.served_by()) == 0);
}

TEST_CASE("process model: three SIGHUPs under load from two clients, slow requests included",
          "[process_model]") {
    prefork_server srv(2);
    std::atomic<bool> done{false};
    std::atomic<int> ok{0}, failed{0};
    auto client = [&](std::string target) {
        const auto deadline = clock::now() + 40s;
        while (!done && clock::now() < deadline) {
            if (srv.served_by(target) != 0)
                ++ok;
            else
                ++failed;
        }
    };
    std::thread fast(client, "/"), slow(client, "/sleep?ms=300");
    std::set<pid_t> generation = srv.workers();
    bool all_replaced = true;
    for (int reload = 1; reload <= 3; ++reload) {
        std::this_thread::sleep_for(200ms);
        srv.process().send_signal(SIGHUP);
        const std::set<pid_t> old = generation;
        const bool replaced = eventually(
            [&] {
                if (count_of(srv.err(), "every worker replaced") < std::size_t(reload))
                    return false;
                generation = srv.workers();
                if (generation.size() != 2) return false;
                for (pid_t pid : generation)
                    if (old.count(pid)) return false;
                return true;
            },
            15s);
        all_replaced = all_replaced && replaced;
    }
    std::this_thread::sleep_for(200ms);
    done = true;
    fast.join();
    slow.join();
    INFO(srv.err());
    INFO(srv.failures());
    CHECK(all_replaced);
    CHECK(failed == 0);
    CHECK(ok > 20);
}

TEST_CASE("process model: SIGTTIN adds a worker, SIGTTOU removes one but never the last",
          "[process_model]") {
    temp_file pidfile("corgi.pid");
    prefork_server srv(1, {"--pidfile", pidfile.path});
    CHECK(read_file(pidfile.path) == std::to_string(srv.master()) + "\n");
    srv.process().send_signal(SIGTTIN);
    CHECK(srv.wait_workers(2));
    srv.process().send_signal(SIGTTIN);
    CHECK(srv.wait_workers(3));
    srv.process().send_signal(SIGTTOU);
    CHECK(srv.wait_workers(2));
    srv.process().send_signal(SIGTTOU);
    CHECK(srv.wait_workers(1));
    srv.process().send_signal(SIGTTOU);
    std::this_thread::sleep_for(500ms);
    CHECK(srv.workers().size() == 1);
    CHECK(srv.served_by() != 0);
    srv.process().send_signal(SIGTERM);
    CHECK(srv.process().wait_exit(10s) == std::optional<int>(0));
    struct stat st {};
    CHECK(::stat(pidfile.path.c_str(), &st) != 0);  // removed at exit
}

TEST_CASE(
    "process model: with --lazy-apps an app that fails to import in the workers stops the "
    "master with its traceback",
    "[process_model]") {
    child_process p(
        {corgi_binary(), "--processes", "2", "--lazy-apps", "--http", "127.0.0.1:0", "--pythonpath",
         source_dir() + "/tests/wsgi/integration/apps", "--wsgi", "broken_import"},
        source_dir());
    auto status = p.wait_exit(10s);
    INFO(p.err());
    REQUIRE(status);
    CHECK(*status != 0);
    CHECK(*status < 128);  // an exit, not a signal
    CHECK(p.err().find("Traceback") != std::string::npos);
    CHECK(p.err().find("corgi_no_such_module_for_the_test") != std::string::npos);
    CHECK(p.err().find("failed to boot") != std::string::npos);
}

TEST_CASE("process model: bad --processes values exit 2 naming the flag", "[process_model]") {
    for (std::vector<std::string> args :
         {std::vector<std::string>{"--processes", "0"}, {"--workers", "many"}, {"-w", "100000"}}) {
        args.insert(args.begin(), corgi_binary());
        auto r = run(args, source_dir(), 5s);
        INFO(args[1] << " " << args[2] << ": " << r.err);
        CHECK(r.exit_code == 2);
        CHECK(r.err.find(args[1]) != std::string::npos);
    }
}

TEST_CASE("process model: a unix socket is served by the workers and removed by the master",
          "[process_model]") {
    temp_file sock("w.sock");
    prefork_server srv(
        prefork_server::with_app({"--processes", "2", "--http", "unix:" + sock.path}), 2);
    auto ask = [&] {
        auto c = http_client::try_unix_socket(sock.path);
        if (!c || !c->send(get_request("/", "Connection: close\r\n"))) return false;
        auto r = c->read_response();
        return r && r->status == 200 && srv.workers().count(std::stol(r->body)) == 1;
    };
    CHECK(ask());
    // A worker leaving (here: killed) takes the socket file with it only if it owned it: it
    // does not, the master does.
    const pid_t victim = *srv.workers().begin();
    ::kill(victim, SIGKILL);
    CHECK(srv.process().wait_for_err("worker " + std::to_string(victim) + " exited", 5s));
    REQUIRE(srv.wait_workers(2));
    struct stat st {};
    CHECK(::lstat(sock.path.c_str(), &st) == 0);
    CHECK(ask());
    srv.process().send_signal(SIGTERM);
    CHECK(srv.process().wait_exit(10s) == std::optional<int>(0));
    CHECK(::lstat(sock.path.c_str(), &st) != 0);
}

TEST_CASE("process model: `processes` and `master` come from the JSON config too",
          "[process_model]") {
    temp_file cfg("p.json", R"({"processes": 2, "pidfile": "/dev/null/never"})");
    // Flags after --config override it: the pidfile is a real path.
    temp_file pidfile("p.pid");
    prefork_server srv(prefork_server::with_app({"--config", cfg.path, "--pidfile", pidfile.path}),
                       2);
    CHECK(read_file(pidfile.path) == std::to_string(srv.master()) + "\n");

    temp_file master_cfg("m.json", R"({"master": true})");
    prefork_server one(prefork_server::with_app({"--config", master_cfg.path}), 1);
    CHECK(one.served_by() == *one.workers().begin());

    temp_file bad("bad.json", R"({"processes": 0})");
    auto r = run({corgi_binary(), "--config", bad.path}, source_dir(), 5s);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("/processes") != std::string::npos);
}

TEST_CASE("process model: a crash-looping worker is respawned with backoff, the others serve",
          "[process_model]") {
    prefork_server srv(2);
    const auto workers = srv.workers();
    const pid_t healthy = *workers.begin();
    pid_t victim = *std::next(workers.begin());
    // Kill the replacement as soon as it appears, three times: the delays double.
    for (int round = 0; round < 3; ++round) {
        REQUIRE(::kill(victim, SIGKILL) == 0);
        REQUIRE(srv.process().wait_for_err("worker " + std::to_string(victim) + " exited", 5s));
        pid_t next = 0;
        REQUIRE(eventually(
            [&] {
                for (pid_t pid : srv.workers())
                    if (pid != healthy && pid != victim) next = pid;
                return next != 0;
            },
            5s));
        const pid_t served = srv.served_by();
        CHECK((served == healthy || served == next));  // the new one, once it is ready
        victim = next;
    }
    const std::string log = srv.err();
    CHECK(log.find("respawning in 200 ms") != std::string::npos);
    CHECK(log.find("respawning in 400 ms") != std::string::npos);
    CHECK(srv.workers().count(healthy) == 1);
}

// A module in a temporary directory that the test rewrites between reloads.
struct temp_app_dir {
    std::string dir = temp_path("apps");
    temp_app_dir() { REQUIRE(::mkdir(dir.c_str(), 0700) == 0); }
    ~temp_app_dir() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);  // the module and its __pycache__
    }
    std::string module(const std::string& name) const { return dir + "/" + name + ".py"; }
    // An app answering "VERSION PID"; IMPORTED_BY and the postfork pids on /who.
    void write_versioned(const std::string& name, const std::string& version) const {
        write_file(module(name),
                   "import os\nimport corgi\nVERSION = '" + version +
                       "'\nIMPORTED_BY = os.getpid()\n\n"
                       "def application(environ, start_response):\n"
                       "    body = f'{VERSION} {os.getpid()} {IMPORTED_BY}'.encode()\n"
                       "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                       "    return [body]\n");
    }
};

std::vector<std::string> answer_fields(std::uint16_t port) {
    auto r = fetch(port, "/");
    if (!r || r->status != 200) return {};
    std::vector<std::string> out;
    std::istringstream in(r->body);
    for (std::string f; in >> f;) out.push_back(f);
    return out;
}

TEST_CASE("process model: SIGHUP with an app that no longer imports keeps the old workers",
          "[process_model]") {
    for (bool lazy : {false, true}) {
        DYNAMIC_SECTION((lazy ? "--lazy-apps" : "preloaded")) {
            temp_app_dir apps;
            apps.write_versioned("reloaded_app", "v1");
            std::vector<std::string> flags{
                "--processes",  "2",      "--io-threads", "1",           "--disable-logging",
                "--pythonpath", apps.dir, "--wsgi",       "reloaded_app"};
            if (lazy) flags.push_back("--lazy-apps");
            prefork_server srv(flags, 2);
            const auto workers = srv.workers();
            write_file(apps.module("reloaded_app"),
                       "raise RuntimeError('broken on purpose for the reload test')\n");
            srv.process().send_signal(SIGHUP);
            // Lazy: the new worker fails to boot; preloaded: the re-executed master fails to
            // import.
            CHECK(srv.process().wait_for_err(lazy ? "reload abandoned, the old workers keep serving"
                                                  : "the running workers keep serving",
                                             10s));
            CHECK(srv.err().find("broken on purpose") != std::string::npos);
            std::this_thread::sleep_for(300ms);
            CHECK(srv.workers() == workers);
            for (int i = 0; i < 5; ++i) {
                auto f = answer_fields(srv.port());
                REQUIRE(f.size() == 3);
                CHECK(f[0] == "v1");
                CHECK(workers.count(std::stol(f[1])) == 1);
            }
            CHECK(srv.process().running());
            // Fixed: the next HUP reloads.
            apps.write_versioned("reloaded_app", "v2");
            srv.process().send_signal(SIGHUP);
            CHECK(srv.replaced(workers, 2, 15s));
            for (int i = 0; i < 5; ++i) {
                auto f = answer_fields(srv.port());
                REQUIRE(f.size() == 3);
                CHECK(f[0] == "v2");
            }
        }
    }
}

TEST_CASE("process model: SIGQUIT stops at once, in-flight requests included", "[process_model]") {
    prefork_server srv(1);
    const auto workers = srv.workers();
    auto client = http_client::tcp(srv.port());
    REQUIRE(client.send(get_request("/sleep?ms=5000")));
    std::this_thread::sleep_for(300ms);
    const auto start = clock::now();
    srv.process().send_signal(SIGQUIT);
    CHECK(srv.process().wait_exit(3s) == std::optional<int>(0));
    CHECK(clock::now() - start < 3s);
    CHECK_FALSE(client.read_response(false, 2s));
    for (pid_t pid : workers) CHECK(eventually([&] { return !alive(pid); }, 3s));
}

TEST_CASE("process model: --pidfile works without a master too", "[process_model]") {
    temp_file pidfile("single.pid");
    corgi_server srv({"--pidfile", pidfile.path}, source_dir());
    CHECK(read_file(pidfile.path) == std::to_string(srv.process().pid()) + "\n");
    CHECK(children_of(srv.process().pid()).empty());
    srv.process().send_signal(SIGTERM);
    CHECK(srv.process().wait_exit(10s) == std::optional<int>(0));
    struct stat st {};
    CHECK(::stat(pidfile.path.c_str(), &st) != 0);
}

TEST_CASE("process model: a pidfile that cannot be written stops the start, exit 1",
          "[process_model]") {
    const std::string pidfile = temp_path("no-such-dir") + "/corgi.pid";
    for (std::vector<std::string> extra : {std::vector<std::string>{}, {"--processes", "2"}}) {
        std::vector<std::string> argv{corgi_binary(), "--http", "127.0.0.1:0", "--pidfile",
                                      pidfile};
        argv.insert(argv.end(), extra.begin(), extra.end());
        auto r = run(argv, source_dir(), 10s);
        INFO(r.err);
        CHECK(r.exit_code == 1);
        CHECK(r.err.find("cannot write the pidfile " + pidfile) != std::string::npos);
        CHECK(r.err.find("worker") == std::string::npos);  // nothing was forked
    }
}

TEST_CASE("process model: --preload imports the apps once in the master, before the fork",
          "[process_model][preload]") {
    prefork_server srv(prefork_server::with_app({"--processes", "2", "--preload"}), 2);
    const auto workers = srv.workers();
    const std::string master = std::to_string(srv.master());
    for (int i = 0; i < 5; ++i) {
        auto r = fetch(srv.port(), "/imported-by");
        REQUIRE(r);
        CHECK(r->body == master);
    }
    // The workers serve (a fiber that sleeps included) and are still replaced by HUP: forked
    // again from the master, with the apps it imported.
    CHECK(workers.count(srv.served_by("/sleep?ms=50")) == 1);
    srv.process().send_signal(SIGHUP);
    CHECK(srv.process().wait_for_err("every worker replaced", 10s));
    CHECK(srv.replaced(workers, 2, 10s));
    auto r = fetch(srv.port(), "/imported-by");
    REQUIRE(r);
    CHECK(r->body == master);
    CHECK(srv.workers().count(srv.served_by()) == 1);
    srv.process().send_signal(SIGTERM);
    CHECK(srv.process().wait_exit(10s) == std::optional<int>(0));
}

TEST_CASE("process model: --preload with an app that fails to import forks no worker",
          "[process_model][preload]") {
    child_process p(
        {corgi_binary(), "--processes", "2", "--preload", "--http", "127.0.0.1:0", "--pythonpath",
         source_dir() + "/tests/wsgi/integration/apps", "--wsgi", "broken_import"},
        source_dir());
    auto status = p.wait_exit(10s);
    INFO(p.err());
    REQUIRE(status);
    CHECK(*status == 1);
    CHECK(p.err().find("corgi_no_such_module_for_the_test") != std::string::npos);
    CHECK(p.err().find("worker") == std::string::npos);
}

TEST_CASE(
    "process model: apps are preloaded by default, --lazy-apps imports them in each worker; "
    "post-fork hooks run once in every worker",
    "[process_model][preload]") {
    {
        prefork_server srv(2);
        const std::string master = std::to_string(srv.master());
        auto r = fetch(srv.port(), "/imported-by");
        REQUIRE(r);
        CHECK(r->body == master);
        // @corgi.postfork ran in the worker itself (the list is per process after the fork).
        for (int i = 0; i < 4; ++i) {
            auto who = fetch(srv.port(), "/postfork");
            auto pid = fetch(srv.port(), "/");
            REQUIRE(who);
            CHECK(srv.workers().count(std::stol(who->body)) == 1);
            CHECK(who->body.find(',') == std::string::npos);
        }
    }
    {
        prefork_server srv(prefork_server::with_app({"--processes", "2", "--lazy-apps"}), 2);
        std::set<std::string> importers;
        for (int i = 0; i < 200 && importers.size() < 2; ++i) {
            auto r = fetch(srv.port(), "/imported-by");
            REQUIRE(r);
            importers.insert(r->body);
        }
        std::set<std::string> workers;
        for (pid_t pid : srv.workers()) workers.insert(std::to_string(pid));
        CHECK(importers == workers);
        auto who = fetch(srv.port(), "/postfork");
        REQUIRE(who);
        CHECK(srv.workers().count(std::stol(who->body)) == 1);
    }
    {
        // The C++ hook (corgi::supervision::at_worker_start) of the demo's /process route.
        prefork_server srv({"--processes", "2", "--io-threads", "1", "--disable-logging"}, 2);
        for (int i = 0; i < 4; ++i) {
            auto r = fetch(srv.port(), "/process");
            REQUIRE(r);
            std::string pid = r->body.substr(4, r->body.find(' ') - 4);
            CHECK(srv.workers().count(std::stol(pid)) == 1);
            CHECK(r->body == "pid=" + pid + " worker_start_hook_pid=" + pid + "\n");
        }
    }
}

TEST_CASE(
    "process model: SIGHUP re-executes the master (same pid) and reloads code and "
    "configuration, preloaded or lazy, without failing a request",
    "[process_model]") {
    for (bool lazy : {false, true}) {
        DYNAMIC_SECTION((lazy ? "--lazy-apps" : "preloaded")) {
            temp_app_dir apps;
            apps.write_versioned("versioned_app", "v1");
            temp_file cfg("reload.json", R"({"processes": 2})");
            std::vector<std::string> flags{
                "--config", cfg.path, "--io-threads", "1", "--disable-logging", "--pythonpath",
                apps.dir,   "--wsgi", "versioned_app"};
            if (lazy) flags.push_back("--lazy-apps");
            prefork_server srv(flags, 2);
            const pid_t master = srv.master();
            std::atomic<bool> done{false};
            std::atomic<int> ok{0}, failed{0};
            std::thread load([&] {
                const auto deadline = clock::now() + 60s;
                while (!done && clock::now() < deadline) {
                    if (answer_fields(srv.port()).size() == 3)
                        ++ok;
                    else
                        ++failed;
                    std::this_thread::sleep_for(2ms);
                }
            });
            auto generation_serves = [&](const std::string& version, std::size_t count) {
                return eventually(
                    [&] {
                        auto now = srv.workers();
                        if (now.size() != count) return false;
                        for (int i = 0; i < 6; ++i) {
                            auto f = answer_fields(srv.port());
                            if (f.size() != 3 || f[0] != version || !now.count(std::stol(f[1])))
                                return false;
                            // Preloaded: imported by the (re-executed) master; lazy: by the worker.
                            if (f[2] != (lazy ? f[1] : std::to_string(master))) return false;
                        }
                        return true;
                    },
                    20s);
            };
            apps.write_versioned("versioned_app", "v2");
            srv.process().send_signal(SIGHUP);
            CHECK(generation_serves("v2", 2));
            // The configuration is read again too: three workers now.
            write_file(cfg.path, R"({"processes": 3})");
            apps.write_versioned("versioned_app", "v3");
            srv.process().send_signal(SIGHUP);
            CHECK(generation_serves("v3", 3));
            done = true;
            load.join();
            INFO(srv.err());
            CHECK(srv.master() == master);
            CHECK(srv.process().running());
            CHECK(count_of(srv.err(), "re-executing the master (pid " + std::to_string(master) +
                                          " stays)") == 2);
            CHECK(failed == 0);
            CHECK(ok > 20);
        }
    }
}

TEST_CASE("process model: a SIGHUP with a broken configuration is refused; the workers serve on",
          "[process_model]") {
    temp_file cfg("broken.json", R"({"processes": 2})");
    prefork_server srv(prefork_server::with_app({"--config", cfg.path}), 2);
    const auto workers = srv.workers();
    write_file(cfg.path, R"({"processes": "many"})");
    srv.process().send_signal(SIGHUP);
    CHECK(srv.process().wait_for_err("reload refused: the new configuration has errors", 10s));
    CHECK(srv.err().find("/processes") != std::string::npos);
    CHECK(srv.err().find("re-executing") == std::string::npos);
    std::this_thread::sleep_for(300ms);
    CHECK(srv.workers() == workers);
    CHECK(workers.count(srv.served_by()) == 1);
}

TEST_CASE("process model: --check-config reads and checks everything, then exits",
          "[process_model]") {
    auto good = run({corgi_binary(), "--processes", "2", "--http", "127.0.0.1:1", "--check-config"},
                    source_dir(), 5s);
    CHECK(good.exit_code == 0);
    CHECK(good.out.find("configuration OK") != std::string::npos);
    CHECK(good.err.find("serving") == std::string::npos);  // nothing bound
    temp_file bad_routes("routes.json",
                         R"({"routes": [{"rule": "/<int:x", "endpoint": "hello"}]})");
    auto bad =
        run({corgi_binary(), "--config", bad_routes.path, "--check-config"}, source_dir(), 5s);
    CHECK(bad.exit_code == 2);
    CHECK(bad.err.find("/routes/0/rule") != std::string::npos);
    auto bad_flag =
        run({corgi_binary(), "--max-requests", "x", "--check-config"}, source_dir(), 5s);
    CHECK(bad_flag.exit_code == 2);
    CHECK(bad_flag.err.find("--max-requests") != std::string::npos);
}

TEST_CASE(
    "process model: a worker not ready within --boot-timeout is killed; at start the "
    "master gives up",
    "[process_model]") {
    temp_app_dir apps;
    write_file(apps.module("slow_boot"),
               "import time\ntime.sleep(30)\n\ndef application(environ, start_response):\n"
               "    start_response('200 OK', [])\n    return [b'']\n");
    child_process p({corgi_binary(), "--processes", "1", "--lazy-apps", "--boot-timeout", "1",
                     "--http", "127.0.0.1:0", "--pythonpath", apps.dir, "--wsgi", "slow_boot"},
                    source_dir());
    auto status = p.wait_exit(15s);
    INFO(p.err());
    REQUIRE(status);
    CHECK(*status == 1);
    CHECK(p.err().find("(--boot-timeout); killing it") != std::string::npos);
    CHECK(p.err().find("did not become ready in time") != std::string::npos);
}

TEST_CASE(
    "process model: a worker whose io thread stops checking in is aborted (Python's "
    "stacks in the log) and replaced",
    "[process_model]") {
    prefork_server srv(2, {"--worker-timeout", "1"});
    const auto before = srv.workers();
    const pid_t victim = *before.begin();
    // A stopped process runs no io thread: exactly what a hung one looks like to the master.
    REQUIRE(::kill(victim, SIGSTOP) == 0);
    REQUIRE(srv.process().wait_for_err(
        "worker " + std::to_string(victim) + ": io thread 0 has not checked in for", 10s));
    // SIGABRT is pending: let it run, so that faulthandler writes the stacks.
    ::kill(victim, SIGCONT);
    CHECK(srv.process().wait_for_err("Fatal Python error: Aborted", 5s));
    CHECK(
        srv.process().wait_for_err("worker " + std::to_string(victim) + " exited (signal 6", 10s));
    REQUIRE(srv.wait_workers(2));
    CHECK(srv.workers().count(victim) == 0);
    CHECK(srv.workers().count(*std::next(before.begin())) == 1);  // the healthy one stays
    INFO(srv.err());
    CHECK(srv.err().find("(most recent call first)") !=
          std::string::npos);  // faulthandler's stacks
    // A worker that stays stopped is SIGKILLed after the abort.
    const pid_t second = *srv.workers().begin();
    REQUIRE(::kill(second, SIGSTOP) == 0);
    CHECK(srv.process().wait_for_err(
        "worker " + std::to_string(second) + " still there after SIGABRT; killing it", 15s));
    CHECK(srv.wait_workers(2));
}

TEST_CASE("process model: --max-requests with jitter recycles a worker gracefully, one at a time",
          "[process_model]") {
    prefork_server srv(1, {"--max-requests", "20", "--max-requests-jitter", "10"});
    std::set<pid_t> seen;
    int failed = 0, requests = 0;
    const auto deadline = clock::now() + 30s;
    while (seen.size() < 4 && clock::now() < deadline) {
        pid_t pid = srv.served_by();
        ++requests;
        if (pid == 0) ++failed;
        seen.insert(pid);
        // One worker serving, plus its successor while it boots, plus at most the predecessor
        // still finishing its exit: a successor is started only once the previous one is ready.
        CHECK(srv.workers().size() <= 3);
    }
    INFO(srv.err());
    CHECK(failed == 0);
    CHECK(seen.size() >= 4);
    // A worker serves its 20..30 requests, and a few more while its successor boots.
    CHECK(requests >= 3 * 20);
    const std::string log = srv.err();
    CHECK(log.find("requests served (--max-requests)") != std::string::npos);
    // Every limit was 20 + 0..10.
    for (auto pos = log.find("to be replaced: "); pos != std::string::npos;
         pos = log.find("to be replaced: ", pos + 1)) {
        const int n = std::stoi(log.substr(pos + 16));
        CHECK(n >= 20);
        CHECK(n <= 30);
    }
}

TEST_CASE("process model: --max-rss and --max-worker-lifetime recycle workers", "[process_model]") {
    {
        prefork_server srv(1, {"--max-rss", "1"});  // every worker is above 1 MB
        const pid_t first = *srv.workers().begin();
        CHECK(srv.process().wait_for_err("MB resident (--max-rss 1)", 10s));
        CHECK(eventually([&] { return srv.workers().size() == 1 && !srv.workers().count(first); },
                         15s));
        CHECK(srv.served_by() != 0);
    }
    {
        prefork_server srv(2, {"--max-worker-lifetime", "1"});
        const auto first = srv.workers();
        CHECK(srv.process().wait_for_err("(--max-worker-lifetime)", 10s));
        CHECK(srv.replaced(first, 2, 20s));
        CHECK(srv.served_by() != 0);
    }
}

TEST_CASE("process model: a worker killed mid-request is logged with the requests it had in flight",
          "[process_model]") {
    prefork_server srv(1);
    const pid_t victim = *srv.workers().begin();
    std::vector<http_client> clients;
    for (int i = 0; i < 3; ++i) {
        clients.push_back(http_client::tcp(srv.port()));
        REQUIRE(clients.back().send(get_request("/sleep?ms=5000")));
    }
    std::this_thread::sleep_for(500ms);
    REQUIRE(::kill(victim, SIGKILL) == 0);
    CHECK(srv.process().wait_for_err("worker " + std::to_string(victim) +
                                         " exited (signal 9 (SIGKILL), perhaps by the OOM killer, "
                                         "3 requests in flight lost); respawning",
                                     5s));
    INFO(srv.err());
    CHECK(srv.wait_workers(1));
}

TEST_CASE("process model: SIGUSR1 reopens --access-log and --error-log after a rotation",
          "[process_model]") {
    for (bool master : {false, true}) {
        DYNAMIC_SECTION((master ? "master and workers" : "single process")) {
            temp_file access("access.log");
            temp_file errors("error.log");
            std::vector<std::string> args{"--access-log", access.path,    "--error-log",
                                          errors.path,    "--io-threads", "1"};
            if (master) args.insert(args.end(), {"--processes", "2"});
            child_process p(
                [&] {
                    std::vector<std::string> argv{corgi_binary(), "--http", "127.0.0.1:0"};
                    argv.insert(argv.end(), args.begin(), args.end());
                    return argv;
                }(),
                source_dir());
            std::uint16_t port = 0;
            REQUIRE(eventually(
                [&] {
                    const std::string log = read_file(errors.path);
                    auto pos = log.find("serving http on 127.0.0.1:");
                    if (pos == std::string::npos) return false;
                    if (master && count_of(log, " ready") < 2) return false;
                    port = static_cast<std::uint16_t>(std::stoi(log.substr(pos + 26)));
                    return true;
                },
                10s));
            CHECK(p.err().empty());  // the error log went to the file
            REQUIRE(fetch(port, "/plaintext"));
            CHECK(eventually(
                [&] { return read_file(access.path).find("/plaintext") != std::string::npos; },
                3s));
            // logrotate: move the files away, then USR1.
            const std::string rotated = access.path + ".1", rotated_err = errors.path + ".1";
            REQUIRE(::rename(access.path.c_str(), rotated.c_str()) == 0);
            REQUIRE(::rename(errors.path.c_str(), rotated_err.c_str()) == 0);
            p.send_signal(SIGUSR1);
            std::this_thread::sleep_for(500ms);
            for (int i = 0; i < 6; ++i) REQUIRE(fetch(port, "/json"));  // both workers, likely
            CHECK(eventually(
                [&] { return read_file(access.path).find("/json") != std::string::npos; }, 3s));
            CHECK(read_file(rotated).find("/json") == std::string::npos);
            p.send_signal(SIGTERM);
            CHECK(p.wait_exit(10s) == std::optional<int>(0));
            CHECK(read_file(errors.path).find("stopped") != std::string::npos);
            std::remove(rotated.c_str());
            std::remove(rotated_err.c_str());
        }
    }
}
