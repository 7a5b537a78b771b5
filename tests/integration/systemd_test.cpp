// systemd and containers: sd_notify messages read from a NOTIFY_SOCKET this test owns; socket
// activation with sockets this test binds and passes as descriptors 3, 4, ... (as systemd does);
// the unit files of examples/systemd started the way systemd would; corgi as PID 1 of a new pid
// namespace (what `docker stop` relies on). Every process is ended by its pid, descendants first.
#include "proxy_wire.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

using namespace corgi::test;

namespace {

long long monotonic_usec() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<long long>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

bool contains(const std::string& text, std::string_view needle) {
    return text.find(needle) != std::string::npos;
}

// ---- processes ----------------------------------------------------------------------------------

struct proc_stat {
    pid_t ppid = 0;
    char state = '?';
};

std::optional<proc_stat> stat_of(pid_t pid) {
    const std::string text = read_file("/proc/" + std::to_string(pid) + "/stat");
    // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
    const auto close = text.rfind(')');
    if (close == std::string::npos || close + 4 >= text.size()) return std::nullopt;
    proc_stat st;
    st.state = text[close + 2];
    st.ppid = static_cast<pid_t>(std::atol(text.c_str() + close + 4));
    return st;
}

// The children of a process with their state ('Z': a zombie nobody reaped).
std::map<pid_t, char> children_of(pid_t parent) {
    std::map<pid_t, char> out;
    DIR* dir = ::opendir("/proc");
    if (!dir) return out;
    while (dirent* e = ::readdir(dir)) {
        char* end = nullptr;
        const long pid = std::strtol(e->d_name, &end, 10);
        if (pid <= 0 || *end != '\0') continue;
        auto st = stat_of(static_cast<pid_t>(pid));
        if (st && st->ppid == parent) out.emplace(static_cast<pid_t>(pid), st->state);
    }
    ::closedir(dir);
    return out;
}

std::set<pid_t> live_children(pid_t parent) {
    std::set<pid_t> out;
    for (const auto& [pid, state] : children_of(parent))
        if (state != 'Z' && state != 'X') out.insert(pid);
    return out;
}

std::vector<pid_t> descendants_of(pid_t root) {
    std::vector<pid_t> out;
    for (const auto& [pid, state] : children_of(root)) {
        for (pid_t d : descendants_of(pid)) out.push_back(d);
        out.push_back(pid);
    }
    return out;
}

// A corgi process (directly, or under unshare) whose descendants (workers, a namespace's init)
// are SIGKILLed by pid before the process itself, whatever the test did.
struct corgi_run {
    child_process proc;
    struct descendants_guard {
        pid_t root;
        ~descendants_guard() {
            for (pid_t pid : descendants_of(root)) ::kill(pid, SIGKILL);
        }
    } guard{proc.pid()};  // declared after proc: destroyed before it

    corgi_run(std::vector<std::string> argv, const spawn_options& options)
        : proc(std::move(argv), options) {}
    pid_t pid() const { return proc.pid(); }
    std::string err() const { return proc.err(); }
};

std::vector<std::string> corgi_args(std::vector<std::string> args) {
    args.insert(args.begin(), corgi_binary());
    return args;
}

// ---- the service manager's end of sd_notify -----------------------------------------------------

// One datagram and its sender (the kernel's SCM_CREDENTIALS, as systemd reads them).
struct notification {
    std::string text;
    pid_t sender = 0;
    clock::time_point at;

    std::vector<std::string> lines() const { return lines_of(text); }
    bool has(std::string_view line) const {
        for (const auto& l : lines())
            if (l == line) return true;
        return false;
    }
    std::optional<std::string> value(std::string_view key) const {
        const std::string prefix = std::string(key) + "=";
        for (const auto& l : lines())
            if (l.starts_with(prefix)) return l.substr(prefix.size());
        return std::nullopt;
    }
};

// A unix datagram socket this test binds, a file under /tmp or an abstract name.
class notify_socket {
  public:
    explicit notify_socket(bool abstract = false) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd_ >= 0);
        int one = 1;
        REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) == 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        socklen_t len = 0;
        if (abstract) {
            address_ = "@" + temp_path("notify").substr(5);  // "/tmp/" off: a name, not a path
            std::memcpy(a.sun_path + 1, address_.data() + 1, address_.size() - 1);
            len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size());
        } else {
            address_ = path_ = temp_path("notify");
            std::memcpy(a.sun_path, path_.data(), path_.size());
            len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path_.size() + 1);
        }
        REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) == 0);
    }
    ~notify_socket() {
        ::close(fd_);
        if (!path_.empty()) ::unlink(path_.c_str());
    }
    notify_socket(const notify_socket&) = delete;
    notify_socket& operator=(const notify_socket&) = delete;

    std::string env() const { return "NOTIFY_SOCKET=" + address_; }

    std::optional<notification> receive(clock::duration timeout) {
        pollfd p{fd_, POLLIN, 0};
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
        if (::poll(&p, 1, static_cast<int>(std::max<long long>(ms, 0))) <= 0) return std::nullopt;
        char data[4096];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
        iovec io{data, sizeof data};
        msghdr msg{};
        msg.msg_iov = &io;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        const ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT);
        if (n < 0) return std::nullopt;
        notification note;
        note.text.assign(data, static_cast<std::size_t>(n));
        note.at = clock::now();
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                ucred cred{};
                std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
                note.sender = cred.pid;
            }
        received_.push_back(note);
        return note;
    }

    // Receives until a datagram with this line arrives (earlier ones stay in all()).
    std::optional<notification> wait_for(std::string_view line, clock::duration timeout) {
        const auto deadline = clock::now() + timeout;
        while (clock::now() < deadline)
            if (auto n = receive(deadline - clock::now()); n && n->has(line)) return n;
        return std::nullopt;
    }
    const std::vector<notification>& all() const { return received_; }

  private:
    int fd_ = -1;
    std::string address_, path_;
    std::vector<notification> received_;
};

// ---- sockets that the test binds, as systemd's socket units do -------------------------------

struct owned_fd {
    int fd = -1;
    explicit owned_fd(int f) : fd(f) {}
    ~owned_fd() {
        if (fd >= 0) ::close(fd);
    }
    owned_fd(owned_fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
    owned_fd(const owned_fd&) = delete;
    owned_fd& operator=(const owned_fd&) = delete;
};

struct tcp_listener {
    owned_fd socket;
    std::uint16_t port = 0;
};

// A socket on 127.0.0.1:0 (or another loopback host), bound, listening (or not, on request).
tcp_listener bind_tcp(int type = SOCK_STREAM, bool listening = true) {
    owned_fd s(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
    REQUIRE(s.fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    if (listening) REQUIRE(::listen(s.fd, 64) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(s.fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    return {std::move(s), ntohs(a.sin_port)};
}

owned_fd bind_unix(const std::string& path) {
    owned_fd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(s.fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof a.sun_path);
    std::memcpy(a.sun_path, path.data(), path.size());
    REQUIRE(::bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(s.fd, 64) == 0);
    return s;
}

// What systemd sets for a socket-activated service: the sockets from fd 3 on, their count, their
// names and the service's own pid.
spawn_options activation(std::vector<int> fds, std::string names,
                         std::vector<std::string> env = {}) {
    spawn_options o;
    env.push_back("LISTEN_FDS=" + std::to_string(fds.size()));
    if (!names.empty()) env.push_back("LISTEN_FDNAMES=" + names);
    o.env = std::move(env);
    o.pass_fds = std::move(fds);
    o.set_listen_pid = true;
    return o;
}

spawn_options with_env(std::vector<std::string> env) {
    spawn_options o;
    o.env = std::move(env);
    return o;
}

// One uwsgi request (what nginx's uwsgi_pass sends) and whatever comes back until the server
// closes the connection (uwsgi answers one request per connection).
std::string uwsgi_get(http_client& c, const std::string& path) {
    const std::string packet = uwsgi_packet({{"REQUEST_METHOD", "GET"},
                                             {"REQUEST_URI", path},
                                             {"PATH_INFO", path},
                                             {"QUERY_STRING", ""},
                                             {"SERVER_PROTOCOL", "HTTP/1.1"},
                                             {"REMOTE_ADDR", "127.0.0.1"},
                                             {"SERVER_NAME", "test"},
                                             {"SERVER_PORT", "80"},
                                             {"HTTP_HOST", "test"}});
    REQUIRE(c.send(packet));
    return c.read_until_close();
}

// "serving PROTO on ADDRESS" lines, as printed once the listeners are set up.
std::vector<std::string> serving_lines(child_process& proc, std::size_t n) {
    return wait_for_addresses(proc, "corgi: serving ", n, 15s);
}

// A WSGI app in a fresh directory, removed with the guard.
struct app_dir {
    std::string path = temp_path("app");
    explicit app_dir(const std::string& module_source) {
        REQUIRE(::mkdir(path.c_str(), 0700) == 0);
        write_file(path + "/systemd_app.py", module_source);
    }
    ~app_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);  // the module and its __pycache__
    }
    void rewrite(const std::string& module_source) const {
        write_file(path + "/systemd_app.py", module_source);
    }
};

// ---- unit files and Dockerfiles, read as systemd and docker read them
// ----------------------------

// A unit file: sections of KEY=VALUE assignments, a key repeatable (ListenStream=); only whole
// lines starting with '#' or ';' are comments (systemd has no trailing comments); a line ending in
// a backslash continues on the next one.
struct unit_file {
    std::map<std::string, std::multimap<std::string, std::string>> sections;

    static unit_file parse(const std::string& text) {
        unit_file u;
        std::string section, pending;
        for (std::string line : lines_of(text)) {
            if (!pending.empty()) line = pending + " " + line, pending.clear();
            const auto first = line.find_first_not_of(" \t");
            if (first == std::string::npos || line[first] == '#' || line[first] == ';') continue;
            if (line.back() == '\\') {
                pending = line.substr(0, line.size() - 1);
                continue;
            }
            if (line[first] == '[') {
                section = line.substr(first + 1, line.find(']') - first - 1);
                u.sections[section];
                continue;
            }
            const auto eq = line.find('=');
            if (eq == std::string::npos) continue;
            auto trim = [](std::string s) {
                s.erase(0, s.find_first_not_of(" \t"));
                s.erase(s.find_last_not_of(" \t") + 1);
                return s;
            };
            u.sections[section].emplace(trim(line.substr(0, eq)), trim(line.substr(eq + 1)));
        }
        return u;
    }
    std::optional<std::string> get(const std::string& section, const std::string& key) const {
        auto s = sections.find(section);
        if (s == sections.end()) return std::nullopt;
        auto range = s->second.equal_range(key);
        if (range.first == range.second) return std::nullopt;
        return std::prev(range.second)->second;  // the last assignment wins
    }
    std::vector<std::string> all(const std::string& section, const std::string& key) const {
        std::vector<std::string> out;
        auto s = sections.find(section);
        if (s == sections.end()) return out;
        auto range = s->second.equal_range(key);
        for (auto it = range.first; it != range.second; ++it) out.push_back(it->second);
        return out;
    }
};

// ExecStart= split into words (whitespace; double quotes group).
std::vector<std::string> split_command(const std::string& line) {
    std::vector<std::string> words;
    std::string word;
    bool quoted = false, any = false;
    for (char c : line) {
        if (c == '"') {
            quoted = !quoted;
            any = true;
        } else if (!quoted && (c == ' ' || c == '\t')) {
            if (any) words.push_back(word);
            word.clear();
            any = false;
        } else {
            word += c;
            any = true;
        }
    }
    if (any) words.push_back(word);
    return words;
}

std::string renamed(std::string text, const std::map<std::string, std::string>& renames) {
    for (const auto& [from, to] : renames)
        for (auto pos = text.find(from); pos != std::string::npos;
             pos = text.find(from, pos + to.size()))
            text.replace(pos, from.size(), to);
    return text;
}

std::optional<std::string> flag_value(const std::vector<std::string>& argv,
                                      const std::string& flag) {
    for (std::size_t i = 0; i + 1 < argv.size(); ++i)
        if (argv[i] == flag) return argv[i + 1];
    return std::nullopt;
}

// The instructions of a Dockerfile's last stage, continuation lines joined.
std::vector<std::pair<std::string, std::string>> dockerfile_final_stage(const std::string& text) {
    std::vector<std::pair<std::string, std::string>> out;
    std::string pending;
    for (std::string line : lines_of(text)) {
        const auto first = line.find_first_not_of(" \t");
        if (first == std::string::npos || line[first] == '#') continue;
        line = pending + line.substr(first);
        pending.clear();
        if (line.back() == '\\') {
            pending = line.substr(0, line.size() - 1);
            continue;
        }
        const auto space = line.find(' ');
        std::string instruction = line.substr(0, space);
        std::string args = space == std::string::npos ? "" : line.substr(space + 1);
        if (instruction == "FROM") out.clear();
        out.emplace_back(instruction, args);
    }
    return out;
}

std::string path_exists_text(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 ? "exists" : "missing";
}

const char* const unshare_binary = "/usr/bin/unshare";
const char* const nsenter_binary = "/usr/bin/nsenter";

// A pid namespace needs CAP_SYS_ADMIN; a sandbox without it cannot run the PID 1 tests.
std::optional<std::string> pid_namespace_unavailable() {
    if (::access(unshare_binary, X_OK) != 0) return std::string(unshare_binary) + " is missing";
    auto r = run({unshare_binary, "--pid", "--fork", "--mount-proc", "/bin/true"}, {}, 10s);
    if (r.exit_code != 0) return "unshare --pid --fork --mount-proc fails here: " + r.err;
    return std::nullopt;
}

// The pid, in this test's namespace, of what runs as PID 1 under unshare (its only child).
pid_t namespace_init(pid_t unshare_pid) {
    pid_t init = 0;
    eventually(
        [&] {
            const auto kids = live_children(unshare_pid);
            if (kids.size() == 1) init = *kids.begin();
            return init != 0;
        },
        10s);
    return init;
}

// The last field of NSpid in /proc/PID/status: its pid inside its own namespace.
std::string pid_inside_namespace(pid_t pid) {
    for (const auto& line : lines_of(read_file("/proc/" + std::to_string(pid) + "/status")))
        if (line.starts_with("NSpid:")) return line.substr(line.find_last_of(" \t") + 1);
    return "";
}

}  // namespace

// ================================================================================================
// sd_notify

TEST_CASE(
    "systemd: a single process sends READY=1 with its STATUS once it accepts, STOPPING=1 "
    "on SIGTERM",
    "[systemd]") {
    notify_socket manager;
    corgi_run corgi(corgi_args({"--http", "127.0.0.1:0", "--io-threads", "1", "--disable-logging"}),
                    with_env({manager.env()}));
    const std::uint16_t port = port_of(serving_lines(corgi.proc, 1).at(0));
    auto ready = manager.wait_for("READY=1", 15s);
    REQUIRE(ready);
    CHECK(ready->value("STATUS") == "serving http on 127.0.0.1:" + std::to_string(port));
    CHECK(ready->sender == corgi.pid());
    CHECK(answers(port));

    corgi.proc.send_signal(SIGTERM);
    auto stopping = manager.wait_for("STOPPING=1", 10s);
    REQUIRE(stopping);
    CHECK(contains(stopping->value("STATUS").value_or(""), "SIGTERM"));
    CHECK(corgi.proc.wait_exit(15s) == 0);
    std::size_t readies = 0;
    for (const auto& n : manager.all()) readies += n.has("READY=1");
    CHECK(readies == 1);
}

TEST_CASE("systemd: NOTIFY_SOCKET may name an abstract socket (@name)", "[systemd]") {
    notify_socket manager(/*abstract=*/true);
    corgi_run corgi(corgi_args({"--http", "127.0.0.1:0", "--io-threads", "1", "--disable-logging"}),
                    with_env({manager.env()}));
    serving_lines(corgi.proc, 1);
    auto ready = manager.wait_for("READY=1", 15s);
    REQUIRE(ready);
    CHECK(ready->sender == corgi.pid());
}

TEST_CASE(
    "systemd: the master sends READY=1 once every worker is ready, RELOADING=1 with "
    "MONOTONIC_USEC on HUP, READY=1 when replaced, STOPPING=1 on TERM; workers never notify",
    "[systemd]") {
    notify_socket manager;
    corgi_run corgi(corgi_args({"--processes", "2", "--http", "127.0.0.1:0", "--io-threads", "1",
                                "--disable-logging"}),
                    with_env({manager.env()}));
    const std::uint16_t port = port_of(serving_lines(corgi.proc, 1).at(0));
    auto ready = manager.wait_for("READY=1", 20s);
    REQUIRE(ready);
    CHECK(ready->value("STATUS") == "2 workers ready, 2 wanted");
    // The master logs each worker's readiness before it tells systemd.
    CHECK(count_of(corgi.err(), " ready\n") == 2);
    CHECK(answers(port));
    const std::set<pid_t> first_generation = live_children(corgi.pid());
    REQUIRE(first_generation.size() == 2);

    const long long before_hup = monotonic_usec();
    corgi.proc.send_signal(SIGHUP);
    auto reloading = manager.wait_for("RELOADING=1", 10s);
    const long long after_reloading = monotonic_usec();
    REQUIRE(reloading);
    const std::string usec = reloading->value("MONOTONIC_USEC").value_or("");
    REQUIRE_FALSE(usec.empty());
    // CLOCK_MONOTONIC is one clock for every process: the stamp was taken between the two reads.
    CHECK(std::stoll(usec) >= before_hup);
    CHECK(std::stoll(usec) <= after_reloading);

    auto reloaded = manager.wait_for("READY=1", 30s);
    REQUIRE(reloaded);
    CHECK(contains(reloaded->value("STATUS").value_or(""), "every worker replaced"));
    CHECK(eventually(
        [&] {
            const auto now = live_children(corgi.pid());
            if (now.size() != 2) return false;
            for (pid_t pid : now)
                if (first_generation.count(pid)) return false;
            return true;
        },
        10s));
    CHECK(answers(port));

    corgi.proc.send_signal(SIGTERM);
    auto stopping = manager.wait_for("STOPPING=1", 10s);
    REQUIRE(stopping);
    CHECK(corgi.proc.wait_exit(20s) == 0);
    for (const auto& n : manager.all()) {
        INFO(n.text);
        CHECK(n.sender == corgi.pid());
    }
}

TEST_CASE("systemd: WATCHDOG=1 every WATCHDOG_USEC / 2, from a single process and from a master",
          "[systemd]") {
    for (const bool master : {false, true}) {
        INFO((master ? "master and 2 workers" : "single process"));
        notify_socket manager;
        std::vector<std::string> args = {"--http", "127.0.0.1:0", "--io-threads", "1",
                                         "--disable-logging"};
        if (master) args.insert(args.end(), {"--processes", "2"});
        // 0.4 s: a ping every 0.2 s.
        corgi_run corgi(corgi_args(args), with_env({manager.env(), "WATCHDOG_USEC=400000"}));
        REQUIRE(manager.wait_for("READY=1", 20s));
        std::vector<clock::time_point> pings;
        const auto until = clock::now() + 2400ms;
        while (clock::now() < until)
            if (auto n = manager.receive(until - clock::now()); n && n->has("WATCHDOG=1")) {
                pings.push_back(n->at);
                CHECK(n->sender == corgi.pid());
            }
        // About 12 in 2.4 s. A loaded machine may delay a ping; none comes twice as often.
        CHECK(pings.size() >= 6);
        CHECK(pings.size() <= 16);
        REQUIRE(pings.size() >= 3);
        std::vector<long long> gaps;
        for (std::size_t i = 1; i < pings.size(); ++i)
            gaps.push_back(
                std::chrono::duration_cast<std::chrono::milliseconds>(pings[i] - pings[i - 1])
                    .count());
        std::sort(gaps.begin(), gaps.end());
        const long long median = gaps[gaps.size() / 2];
        CHECK(median >= 150);
        CHECK(median <= 350);
    }
}

TEST_CASE("systemd: no WATCHDOG=1 when WATCHDOG_PID names another process", "[systemd]") {
    notify_socket manager;
    corgi_run corgi(corgi_args({"--http", "127.0.0.1:0", "--io-threads", "1", "--disable-logging"}),
                    with_env({manager.env(), "WATCHDOG_USEC=200000",
                              "WATCHDOG_PID=" + std::to_string(::getpid())}));
    REQUIRE(manager.wait_for("READY=1", 15s));
    // Ten periods of silence.
    CHECK_FALSE(manager.wait_for("WATCHDOG=1", 1s));
}

#ifdef CORGI_TEST_WITH_WSGI
TEST_CASE(
    "systemd: a replacement whose new worker fails to boot ends with READY=1 and a STATUS "
    "saying the old workers keep serving",
    "[systemd]") {
    const std::string good =
        "import os\n\ndef application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [str(os.getpid()).encode()]\n";
    for (bool lazy : {false, true}) {
        DYNAMIC_SECTION((lazy ? "--lazy-apps: the new worker fails to boot"
                              : "preloaded: the re-executed master fails to import")) {
            app_dir app(good);
            notify_socket manager;
            std::vector<std::string> args{"--processes",
                                          "2",
                                          "--http",
                                          "127.0.0.1:0",
                                          "--io-threads",
                                          "1",
                                          "--disable-logging",
                                          "--pythonpath",
                                          app.path,
                                          "--wsgi",
                                          "systemd_app"};
            if (lazy) args.push_back("--lazy-apps");
            corgi_run corgi(corgi_args(args), with_env({manager.env()}));
            const std::uint16_t port = port_of(serving_lines(corgi.proc, 1).at(0));
            REQUIRE(manager.wait_for("READY=1", 30s));
            const auto workers = live_children(corgi.pid());
            app.rewrite("raise RuntimeError('broken on purpose for the systemd test')\n");
            corgi.proc.send_signal(SIGHUP);
            REQUIRE(manager.wait_for("RELOADING=1", 10s));
            auto ready = manager.wait_for("READY=1", 30s);
            REQUIRE(ready);
            const std::string status = ready->value("STATUS").value_or("");
            CHECK(contains(status, lazy ? "reload abandoned" : "reload failed"));
            CHECK(contains(status, "the old workers keep serving"));
            auto r = fetch(port, "/");
            REQUIRE(r);
            CHECK(r->status == 200);
            CHECK(workers.count(static_cast<pid_t>(std::stol(r->body))) == 1);
        }
    }
}

TEST_CASE(
    "systemd: apps see neither the notify nor the activation variables, nor an inheritable "
    "listening socket",
    "[systemd]") {
    app_dir app(
        "import os\n\nNAMES = ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'LISTEN_PID',\n"
        "         'LISTEN_FDS', 'LISTEN_FDNAMES']\n\n"
        "def application(environ, start_response):\n"
        "    seen = [n for n in NAMES if n in os.environ]\n"
        "    body = (','.join(seen) or 'none') + ' inheritable=' + str(os.get_inheritable(3))\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [body.encode()]\n");
    notify_socket manager;
    auto listener = bind_tcp();
    for (const bool master : {false, true}) {
        INFO((master ? "master and 1 worker" : "single process"));
        std::vector<std::string> args = {"--io-threads", "1",      "--disable-logging",
                                         "--pythonpath", app.path, "--wsgi",
                                         "systemd_app"};
        if (master) args.push_back("--master");
        corgi_run corgi(corgi_args(args), activation({listener.socket.fd}, "http",
                                                     {manager.env(), "WATCHDOG_USEC=60000000"}));
        REQUIRE(manager.wait_for("READY=1", 30s));
        auto r = fetch(listener.port, "/");
        REQUIRE(r);
        CHECK(r->body == "none inheritable=False");
        corgi.proc.send_signal(SIGTERM);
        CHECK(corgi.proc.wait_exit(20s) == 0);
    }
}
#endif

// ================================================================================================
// socket activation

TEST_CASE(
    "socket activation: a single process serves the socket passed as fd 3 and binds "
    "nothing itself",
    "[systemd]") {
    auto listener = bind_tcp();
    corgi_run corgi(corgi_args({"--io-threads", "1", "--disable-logging"}),
                    activation({listener.socket.fd}, "http"));
    const auto lines = serving_lines(corgi.proc, 1);
    CHECK(lines.at(0) == "http on 127.0.0.1:" + std::to_string(listener.port));
    auto r = fetch(listener.port, "/plaintext");
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "Hello, World!");
    // Without activation it would have bound the default 127.0.0.1:8000 and said so.
    CHECK(count_of(corgi.err(), "corgi: serving ") == 1);
    CHECK(contains(corgi.err(), "socket activation: 1 listener(s) from LISTEN_FDS"));
    corgi.proc.send_signal(SIGTERM);
    CHECK(corgi.proc.wait_exit(15s) == 0);
}

TEST_CASE("socket activation: two sockets named http and uwsgi speak those protocols",
          "[systemd]") {
    auto http = bind_tcp();
    auto uwsgi = bind_tcp();
    corgi_run corgi(corgi_args({"--io-threads", "1", "--disable-logging"}),
                    activation({http.socket.fd, uwsgi.socket.fd}, "http:uwsgi"));
    const auto lines = serving_lines(corgi.proc, 2);
    CHECK(lines.at(0) == "http on 127.0.0.1:" + std::to_string(http.port));
    CHECK(lines.at(1) == "uwsgi on 127.0.0.1:" + std::to_string(uwsgi.port));
    auto r = fetch(http.port, "/plaintext");
    REQUIRE(r);
    CHECK(r->body == "Hello, World!");
    auto c = http_client::tcp(uwsgi.port);
    const std::string answer = uwsgi_get(c, "/plaintext");
    CHECK(answer.starts_with("HTTP/1.1 200"));
    CHECK(answer.ends_with("Hello, World!"));
}

TEST_CASE(
    "socket activation: a master's workers serve the activated sockets; an unnamed socket "
    "takes the protocol of the configured listener at its address, and its file is left "
    "to systemd",
    "[systemd]") {
    temp_file socket_path("uwsgi.sock");
    auto http = bind_tcp();
    auto uwsgi = bind_unix(socket_path.path);
    // systemd names sockets after their unit when FileDescriptorName= is not set.
    corgi_run corgi(corgi_args({"--processes", "2", "--io-threads", "1", "--disable-logging",
                                "--socket", "unix:" + socket_path.path, "--http", "127.0.0.1:1"}),
                    activation({http.socket.fd, uwsgi.fd}, "corgi.socket:corgi.socket"));
    const auto lines = serving_lines(corgi.proc, 2);
    CHECK(lines.at(0) == "http on 127.0.0.1:" + std::to_string(http.port));
    CHECK(lines.at(1) == "uwsgi on unix:" + socket_path.path);
    CHECK(contains(corgi.err(),
                   "http on 127.0.0.1:1 is configured but not among the activated sockets"));
    REQUIRE(corgi.proc.wait_for_err("corgi: master ", 10s));
    CHECK(eventually([&] { return count_of(corgi.err(), " ready\n") == 2; }, 20s));
    auto r = fetch(http.port, "/plaintext");
    REQUIRE(r);
    CHECK(r->body == "Hello, World!");
    auto c = http_client::unix_socket(socket_path.path);
    const std::string answer = uwsgi_get(c, "/plaintext");
    CHECK(answer.starts_with("HTTP/1.1 200"));
    CHECK(answer.ends_with("Hello, World!"));

    corgi.proc.send_signal(SIGTERM);
    CHECK(corgi.proc.wait_exit(20s) == 0);
    CHECK(path_exists_text(socket_path.path) == "exists");
}

TEST_CASE("socket activation: a malformed environment exits 2 and names what is wrong",
          "[systemd]") {
    auto listening = bind_tcp();
    owned_fd regular_file(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    auto not_listening = bind_tcp(SOCK_STREAM, /*listening=*/false);
    auto datagram = bind_tcp(SOCK_DGRAM, /*listening=*/false);
    struct bad_case {
        const char* what;
        spawn_options options;
        std::vector<std::string> extra_args;
        std::string expected;
    };
    auto raw = [](std::vector<std::string> env, std::vector<int> fds, bool own_pid) {
        spawn_options o;
        o.env = std::move(env);
        o.pass_fds = std::move(fds);
        o.set_listen_pid = own_pid;
        return o;
    };
    const int lfd = listening.socket.fd;
    std::vector<bad_case> cases = {
        {"LISTEN_FDS not a number",
         raw({"LISTEN_FDS=two"}, {lfd}, true),
         {},
         "corgi: LISTEN_FDS: expected a positive number of descriptors, got 'two'"},
        {"LISTEN_FDS zero",
         raw({"LISTEN_FDS=0"}, {lfd}, true),
         {},
         "corgi: LISTEN_FDS: expected a positive number of descriptors, got '0'"},
        {"LISTEN_PID not a number",
         raw({"LISTEN_FDS=1", "LISTEN_PID=me"}, {lfd}, false),
         {},
         "corgi: LISTEN_PID: expected a process id, got 'me'"},
        {"a file, not a socket",
         activation({regular_file.fd}, "http"),
         {},
         "corgi: LISTEN_FDS: descriptor 3 (\"http\") is not a socket"},
        {"a socket that does not listen",
         activation({not_listening.socket.fd}, ""),
         {},
         "corgi: LISTEN_FDS: descriptor 3 is not listening"},
        {"a datagram socket",
         activation({datagram.socket.fd}, ""),
         {},
         "corgi: LISTEN_FDS: descriptor 3 is not a stream socket"},
        {"the second of two is not a socket",
         activation({lfd, regular_file.fd}, ""),
         {},
         "corgi: LISTEN_FDS: descriptor 4 is not a socket"},
        {"fewer names than sockets",
         activation({lfd, lfd}, "http"),
         {},
         "corgi: LISTEN_FDNAMES: 1 name(s) for 2 descriptor(s) in LISTEN_FDS ('http')"},
        {"master mode, LISTEN_FDS not a number",
         raw({"LISTEN_FDS=x"}, {lfd}, true),
         {"--processes", "2"},
         "corgi: LISTEN_FDS: expected a positive number"},
        {"WATCHDOG_USEC not a number",
         raw({"NOTIFY_SOCKET=/tmp/corgi-none", "WATCHDOG_USEC=soon"}, {}, false),
         {},
         "corgi: WATCHDOG_USEC: expected microseconds (a number), got 'soon'"},
        {"NOTIFY_SOCKET neither a path nor an abstract name",
         raw({"NOTIFY_SOCKET=run/notify"}, {}, false),
         {},
         "corgi: NOTIFY_SOCKET: 'run/notify'"},
    };
    for (auto& c : cases) {
        INFO(c.what);
        std::vector<std::string> args = {"--http", "127.0.0.1:0", "--disable-logging"};
        args.insert(args.end(), c.extra_args.begin(), c.extra_args.end());
        corgi_run corgi(corgi_args(args), c.options);
        CHECK(corgi.proc.wait_exit(10s) == 2);
        INFO(corgi.err());
        CHECK(contains(corgi.err(), c.expected));
        CHECK_FALSE(contains(corgi.err(), "corgi: serving"));  // nothing started, nothing forked
        CHECK_FALSE(contains(corgi.err(), "corgi: master"));
    }
}

TEST_CASE(
    "socket activation: LISTEN_FDS meant for another process is ignored; the configured "
    "listeners are bound",
    "[systemd]") {
    auto listener = bind_tcp();
    spawn_options o;
    o.env = {"LISTEN_FDS=1", "LISTEN_PID=" + std::to_string(::getpid())};
    o.pass_fds = {listener.socket.fd};
    corgi_run corgi(corgi_args({"--http", "127.0.0.1:0", "--io-threads", "1", "--disable-logging"}),
                    o);
    const std::uint16_t port = port_of(serving_lines(corgi.proc, 1).at(0));
    CHECK(port != listener.port);
    CHECK(contains(corgi.err(),
                   "LISTEN_FDS is for process " + std::to_string(::getpid()) + ", not this one"));
    CHECK(answers(port));
}

// ================================================================================================
// examples/systemd: the unit files of docs/deploy.md

namespace {

struct example_units {
    unit_file service =
        unit_file::parse(read_file(source_dir() + "/examples/systemd/corgi.service"));
    unit_file socket = unit_file::parse(read_file(source_dir() + "/examples/systemd/corgi.socket"));
};

double seconds_of(const std::string& value) { return std::stod(value); }  // "35" (no unit suffix)

}  // namespace

TEST_CASE(
    "examples/systemd: the units say what corgi needs (notify, HUP reload, TERM to the "
    "master, a stop timeout above the graceful timeout, a watchdog)",
    "[systemd]") {
    example_units units;
    const auto& s = units.service;
    CHECK(s.get("Service", "Type") == "notify");
    CHECK(s.get("Service", "NotifyAccess") == "main");
    CHECK(s.get("Service", "ExecReload") == "/bin/kill -HUP $MAINPID");
    CHECK(s.get("Service", "KillSignal") == "SIGTERM");
    const std::string kill_mode = s.get("Service", "KillMode").value_or("control-group");
    CHECK((kill_mode == "mixed" || kill_mode == "main"));
    const auto exec = split_command(s.get("Service", "ExecStart").value_or(""));
    REQUIRE(exec.size() > 1);
    CHECK(exec[0] == "/usr/local/bin/corgi");
    const auto graceful = flag_value(exec, "--graceful-timeout");
    REQUIRE(graceful);
    REQUIRE(s.get("Service", "TimeoutStopSec"));
    // The master kills stragglers 1 s after the graceful timeout; systemd must wait longer.
    CHECK(seconds_of(*s.get("Service", "TimeoutStopSec")) > std::stod(*graceful) + 1);
    REQUIRE(s.get("Service", "WatchdogSec"));
    CHECK(seconds_of(*s.get("Service", "WatchdogSec")) > 0);
    CHECK(contains(s.get("Unit", "Requires").value_or(""), "corgi.socket"));
    // RuntimeDirectory= would delete /run/corgi, and the socket unit's socket file in it, when
    // the service stops.
    CHECK_FALSE(s.get("Service", "RuntimeDirectory"));
    CHECK(units.socket.all("Socket", "ListenStream").size() == 2);
    CHECK(units.socket.get("Socket", "Accept").value_or("no") == "no");
}

#ifdef CORGI_TEST_WITH_WSGI
TEST_CASE(
    "examples/systemd: ExecStart, started as systemd would start it with the sockets of "
    "corgi.socket, serves both, reloads on ExecReload and stops on KillSignal",
    "[systemd]") {
    example_units units;
    const auto& s = units.service;
    // What exists only on a real host is replaced: the installed binary by the built one,
    // /run/corgi by a fresh directory, the app's WorkingDirectory by the container example's app,
    // and each TCP address by the same host with a free port (fixed ports may be taken here).
    const std::string run_dir = temp_path("run");
    REQUIRE(::mkdir(run_dir.c_str(), 0700) == 0);
    struct cleanup {
        std::string dir;
        ~cleanup() {
            std::error_code ec;
            std::filesystem::remove_all(dir, ec);
        }
    } guard{run_dir};
    std::map<std::string, std::string> renames = {
        {"/usr/local/bin/corgi", corgi_binary()},
        {"/run/corgi", run_dir},
        {"/srv/corgi", source_dir() + "/examples/container/app"}};

    std::vector<owned_fd> sockets;
    std::vector<int> fds;
    std::vector<std::string> expected_lines;
    for (const auto& listen : units.socket.all("Socket", "ListenStream")) {
        if (listen.starts_with("/")) {
            const std::string path = renamed(listen, renames);
            sockets.push_back(bind_unix(path));
        } else {
            REQUIRE(listen.starts_with("127.0.0.1:"));  // loopback only in a test
            auto l = bind_tcp();
            renames[listen] = "127.0.0.1:" + std::to_string(l.port);
            sockets.push_back(std::move(l.socket));
        }
        fds.push_back(sockets.back().fd);
    }
    std::vector<std::string> argv = split_command(s.get("Service", "ExecStart").value_or(""));
    for (auto& word : argv) word = renamed(word, renames);
    REQUIRE(argv.at(0) == corgi_binary());
    // FileDescriptorName= defaults to the socket unit's name.
    const std::string name =
        units.socket.get("Socket", "FileDescriptorName").value_or("corgi.socket");
    std::string names;
    for (std::size_t i = 0; i < fds.size(); ++i) names += (i ? ":" : "") + name;
    notify_socket manager;
    const long long watchdog_usec =
        static_cast<long long>(seconds_of(s.get("Service", "WatchdogSec").value_or("0")) * 1e6);
    spawn_options o = activation(fds, names,
                                 {manager.env(), "WATCHDOG_USEC=" + std::to_string(watchdog_usec),
                                  "PYTHONDONTWRITEBYTECODE=1"});
    o.cwd = renamed(s.get("Service", "WorkingDirectory").value_or("/"), renames);
    corgi_run corgi(argv, o);

    const auto lines = serving_lines(corgi.proc, 2);
    CHECK(lines.at(0) == "uwsgi on unix:" + run_dir + "/uwsgi.sock");
    CHECK(lines.at(1) == "http on " + renames.at("127.0.0.1:8000"));
    auto ready = manager.wait_for("READY=1", 60s);  // Type=notify: started once this arrives
    REQUIRE(ready);
    CHECK(ready->value("STATUS") == "4 workers ready, 4 wanted");
    const auto port = port_of(renames.at("127.0.0.1:8000"));
    auto r = fetch(port, "/");
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "Hello from corgi in a container\n");
    auto c = http_client::unix_socket(run_dir + "/uwsgi.sock");
    CHECK(uwsgi_get(c, "/").ends_with("Hello from corgi in a container\n"));

    // ExecReload= (kill -HUP $MAINPID), then systemd waits for READY=1 again.
    REQUIRE(::kill(corgi.pid(), SIGHUP) == 0);
    REQUIRE(manager.wait_for("RELOADING=1", 10s));
    REQUIRE(manager.wait_for("READY=1", 60s));
    CHECK(fetch(port, "/").value_or(http_response{}).status == 200);

    // KillSignal= to the main process (KillMode=mixed), within TimeoutStopSec.
    REQUIRE(::kill(corgi.pid(), SIGTERM) == 0);
    REQUIRE(manager.wait_for("STOPPING=1", 10s));
    const auto stop_timeout = std::chrono::milliseconds(static_cast<long long>(
        seconds_of(s.get("Service", "TimeoutStopSec").value_or("0")) * 1000));
    CHECK(corgi.proc.wait_exit(stop_timeout) == 0);
}
#endif

TEST_CASE("examples/systemd: systemd-analyze verify accepts the units", "[systemd]") {
    const char* analyze = "/usr/bin/systemd-analyze";
    if (::access(analyze, X_OK) != 0) {
        WARN(
            "not checked: systemd-analyze is not installed here (the systemd package is not a "
            "build dependency); the units are still parsed and started by the other tests");
        return;
    }
    // Verified as installed: the same files, with ExecStart's binary where verify looks for it.
    const std::string dir = temp_path("units");
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    struct cleanup {
        std::string dir;
        ~cleanup() {
            std::error_code ec;
            std::filesystem::remove_all(dir, ec);
        }
    } guard{dir};
    const std::map<std::string, std::string> renames = {{"/usr/local/bin/corgi", corgi_binary()}};
    for (const char* unit : {"corgi.service", "corgi.socket"})
        write_file(dir + "/" + unit,
                   renamed(read_file(source_dir() + "/examples/systemd/" + unit), renames));
    auto r = run({analyze, "verify", "--man=no", dir + "/corgi.service", dir + "/corgi.socket"}, {},
                 60s);
    INFO(r.out + r.err);
    CHECK(r.exit_code == 0);
    // Warnings about other units of the host are not ours; any about corgi's are.
    for (const auto& line : lines_of(r.out + r.err)) {
        INFO(line);
        CHECK_FALSE(contains(line, "corgi."));
    }
}

// ================================================================================================
// containers: corgi as PID 1

TEST_CASE("container: a single process as PID 1 of a pid namespace stops on SIGTERM with exit 0",
          "[systemd][container]") {
    if (auto why = pid_namespace_unavailable()) {
        WARN("not checked: " + *why);
        return;
    }
    corgi_run ns({unshare_binary, "--pid", "--fork", "--mount-proc", "--kill-child", corgi_binary(),
                  "--http", "127.0.0.1:0", "--io-threads", "1", "--disable-logging"},
                 spawn_options{});
    const pid_t init = namespace_init(ns.pid());
    REQUIRE(init != 0);
    CHECK(pid_inside_namespace(init) == "1");
    const std::uint16_t port = port_of(serving_lines(ns.proc, 1).at(0));
    CHECK(answers(port));
    CHECK(contains(ns.err(), "running as PID 1 without a master"));
    // PID 1 gets only the signals it has a handler for: corgi must have installed one.
    REQUIRE(::kill(init, SIGTERM) == 0);
    CHECK(ns.proc.wait_exit(15s) == 0);  // unshare exits with its child's status
    CHECK(contains(ns.err(), "corgi: stopped"));
}

#ifdef CORGI_TEST_WITH_WSGI
TEST_CASE(
    "examples/container: the Dockerfile's ENTRYPOINT and CMD as PID 1 of a pid namespace: "
    "dead workers and orphans are reaped, SIGTERM (its STOPSIGNAL) stops it with exit 0",
    "[systemd][container]") {
    const auto stage =
        dockerfile_final_stage(read_file(source_dir() + "/examples/container/Dockerfile"));
    std::map<std::string, std::string> instructions;
    for (const auto& [instruction, args] : stage) instructions[instruction] = args;
    CHECK(instructions["STOPSIGNAL"] == "SIGTERM");
    // The exec (JSON) form: with the shell form /bin/sh would be PID 1, and it forwards nothing.
    const auto entrypoint = nlohmann::json::parse(instructions["ENTRYPOINT"]);
    const auto cmd = nlohmann::json::parse(instructions["CMD"]);
    REQUIRE(entrypoint.is_array());
    REQUIRE(cmd.is_array());
    if (auto why = pid_namespace_unavailable()) {
        WARN("PID 1 behaviour not checked: " + *why);
        return;
    }
    // The container has a network namespace of its own, where 0.0.0.0:8000 is free; this test
    // shares the host's, so it listens on a free loopback port instead. The app is the one the
    // image copies to its WORKDIR.
    const std::map<std::string, std::string> renames = {
        {"/usr/local/bin/corgi", corgi_binary()},
        {"0.0.0.0:8000", "127.0.0.1:0"},
        {"/srv/app", source_dir() + "/examples/container/app"}};
    std::vector<std::string> argv = {unshare_binary, "--pid", "--fork", "--mount-proc",
                                     "--kill-child"};
    for (const auto& word : entrypoint) argv.push_back(renamed(word.get<std::string>(), renames));
    for (const auto& word : cmd) argv.push_back(renamed(word.get<std::string>(), renames));
    REQUIRE(argv.at(5) == corgi_binary());
    const auto workers_wanted = flag_value(argv, "--processes");
    REQUIRE(workers_wanted);
    spawn_options o = with_env({"PYTHONDONTWRITEBYTECODE=1"});
    o.cwd = renamed(instructions["WORKDIR"], renames);
    corgi_run ns(argv, o);

    const pid_t init = namespace_init(ns.pid());
    REQUIRE(init != 0);
    CHECK(pid_inside_namespace(init) == "1");
    const std::uint16_t port = port_of(serving_lines(ns.proc, 1).at(0));
    const std::size_t wanted = std::stoul(*workers_wanted);
    REQUIRE(eventually([&] { return count_of(ns.err(), " ready\n") == wanted; }, 30s));
    CHECK(contains(ns.err(), "corgi: master 1, "));
    auto r = fetch(port, "/");
    REQUIRE(r);
    CHECK(r->body == "Hello from corgi in a container\n");
    const std::set<pid_t> workers = live_children(init);
    REQUIRE(workers.size() == wanted);

    // An orphan: a process whose parent exits is adopted by PID 1, which must wait() for it.
    if (::access(nsenter_binary, X_OK) == 0) {
        auto spawn = run({nsenter_binary, "--target", std::to_string(init), "--pid", "--",
                          "/bin/sh", "-c", "sleep 1 & exit 0"},
                         {}, 10s);
        REQUIRE(spawn.exit_code == 0);
        CHECK(eventually([&] { return live_children(init).size() == wanted + 1; }, 2s));
        CHECK(eventually(
            [&] {
                const auto kids = children_of(init);
                return kids.size() == wanted &&
                       std::none_of(kids.begin(), kids.end(),
                                    [](const auto& k) { return k.second == 'Z'; });
            },
            10s));
    } else {
        WARN("orphan reaping not checked: " + std::string(nsenter_binary) + " is missing");
    }

    // A worker that dies is reaped (no zombie left) and replaced.
    const pid_t victim = *workers.begin();
    REQUIRE(::kill(victim, SIGKILL) == 0);
    CHECK(eventually([&] { return !stat_of(victim); }, 10s));
    CHECK(eventually(
        [&] {
            const auto kids = live_children(init);
            return kids.size() == wanted && !kids.count(victim);
        },
        20s));

    // docker stop: STOPSIGNAL to PID 1.
    REQUIRE(::kill(init, SIGTERM) == 0);
    CHECK(ns.proc.wait_exit(20s) == 0);
    CHECK(contains(ns.err(), "corgi: stopped"));
}
#endif

// ================================================================================================
// docs

TEST_CASE("docs/deploy.md shows the example unit files and the Dockerfile as they are",
          "[systemd]") {
    const std::string deploy = read_file(source_dir() + "/docs/deploy.md");
    for (const char* file : {"examples/systemd/corgi.service", "examples/systemd/corgi.socket",
                             "examples/container/Dockerfile"}) {
        INFO(file);
        const std::string text = read_file(source_dir() + "/" + file);
        REQUIRE_FALSE(text.empty());
        CHECK(contains(deploy, text));
    }
}
