// Child processes, a deadline-bound raw socket HTTP client and helpers for the integration tests.
#include "test_support.hpp"

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace corgi::test {

namespace {

// A test must never die of SIGPIPE because the server closed first.
[[maybe_unused]] const bool sigpipe_ignored = [] {
    ::signal(SIGPIPE, SIG_IGN);
    return true;
}();

bool iequal(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

int remaining_ms(clock::time_point deadline) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(left);
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// connect() bounded in time (a full backlog must not hang a test).
bool connect_with_timeout(int fd, const sockaddr* sa, socklen_t len, int* error) {
    set_nonblocking(fd);
    if (::connect(fd, sa, len) == 0) return true;
    if (errno != EINPROGRESS) {
        if (error) *error = errno;
        return false;
    }
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 3000) != 1) {
        if (error) *error = ETIMEDOUT;
        return false;
    }
    int err = 0;
    socklen_t err_len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
    if (err != 0) {
        if (error) *error = err;
        return false;
    }
    return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// files and environment

std::string required_env(const char* name) {
    const char* v = std::getenv(name);
    if (!v || !*v)
        throw std::runtime_error(std::string("environment variable ") + name +
                                 " is not set (run via ctest)");
    return v;
}

std::string corgi_binary() { return required_env("CORGI_BINARY"); }
std::string source_dir() { return required_env("CORGI_SOURCE_DIR"); }

std::string temp_path(std::string_view stem) {
    static std::atomic<unsigned> counter{0};
    return "/tmp/corgi-it-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
           std::string(stem);
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void write_file(const std::string& path, std::string_view content) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    if (!out) throw std::runtime_error("cannot write " + path);
}

temp_file::temp_file(std::string_view stem, std::string_view content) : path(temp_path(stem)) {
    write_file(path, content);
}

temp_file::~temp_file() { ::unlink(path.c_str()); }

std::string demo_config_text() {
    auto doc = nlohmann::json::parse(read_file(source_dir() + "/examples/demo.json"));
    doc["listen"] = nlohmann::json::array({{{"http", "127.0.0.1:0"}}});
    return doc.dump();
}

// ---------------------------------------------------------------------------------------------------------------
// child_process

child_process::child_process(std::vector<std::string> argv, std::string cwd)
    : child_process(std::move(argv), spawn_options{std::move(cwd), {}, {}, false}) {}

child_process::child_process(std::vector<std::string> argv, const spawn_options& options)
    : out_path_(temp_path("stdout")), err_path_(temp_path("stderr")) {
    if (argv.empty()) throw std::invalid_argument("child_process: empty argv");
    // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    const bool own_env = !options.env.empty() || options.set_listen_pid;
    std::vector<std::string> env_strings;
    if (own_env) {
        auto name_of = [](std::string_view kv) { return kv.substr(0, kv.find('=')); };
        for (char** e = environ; *e; ++e) {
            bool replaced =
                std::string_view(*e).starts_with("LISTEN_PID=") && options.set_listen_pid;
            for (const auto& kv : options.env) replaced = replaced || name_of(kv) == name_of(*e);
            if (!replaced) env_strings.emplace_back(*e);
        }
        for (const auto& kv : options.env) env_strings.push_back(kv);
        // Room for the digits of a pid, written in the child.
        if (options.set_listen_pid) env_strings.push_back("LISTEN_PID=" + std::string(20, '\0'));
    }
    std::vector<char*> envp;
    for (auto& kv : env_strings) envp.push_back(kv.data());
    envp.push_back(nullptr);
    char* listen_pid_digits =
        options.set_listen_pid ? env_strings.back().data() + std::strlen("LISTEN_PID=") : nullptr;
    // Copies above any descriptor the child is to receive, so that no dup2 below overwrites one
    // still to be moved; close-on-exec, as they are only the source of the dup2.
    const int first_high = 3 + static_cast<int>(options.pass_fds.size());
    std::vector<int> high_fds;
    for (int fd : options.pass_fds) {
        int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, first_high);
        if (copy < 0) throw std::runtime_error("child_process: cannot duplicate a descriptor");
        high_fds.push_back(copy);
    }
    int out_fd = ::open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int err_fd = ::open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out_fd < 0 || err_fd < 0 || null_fd < 0)
        throw std::runtime_error("child_process: cannot open output files");
    pid_ = ::fork();
    if (pid_ == 0) {
        if (!options.cwd.empty() && ::chdir(options.cwd.c_str()) != 0) ::_exit(126);
        ::dup2(null_fd, 0);
        ::dup2(out_fd, 1);
        ::dup2(err_fd, 2);
        for (std::size_t i = 0; i < high_fds.size(); ++i)
            if (::dup2(high_fds[i], 3 + static_cast<int>(i)) < 0) ::_exit(125);
        if (listen_pid_digits) {
            char digits[20];
            int n = 0;
            for (pid_t p = ::getpid(); p > 0; p /= 10)
                digits[n++] = static_cast<char>('0' + p % 10);
            for (int i = 0; i < n; ++i) listen_pid_digits[i] = digits[n - 1 - i];
            listen_pid_digits[n] = '\0';
        }
        ::signal(SIGPIPE, SIG_DFL);
        if (own_env)
            ::execve(args[0], args.data(), envp.data());
        else
            ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(out_fd);
    ::close(err_fd);
    ::close(null_fd);
    for (int fd : high_fds) ::close(fd);
    if (pid_ < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
}

child_process::~child_process() {
    if (pid_ > 0 && !status_) {
        ::kill(pid_, SIGKILL);
        int st = 0;
        ::waitpid(pid_, &st, 0);
    }
    ::unlink(out_path_.c_str());
    ::unlink(err_path_.c_str());
}

void child_process::send_signal(int sig) {
    if (pid_ > 0 && !status_) ::kill(pid_, sig);
}

std::optional<int> child_process::wait_exit(clock::duration timeout) {
    auto deadline = clock::now() + timeout;
    while (!status_) {
        int st = 0;
        pid_t r = ::waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
            status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
        if (clock::now() >= deadline) break;
        std::this_thread::sleep_for(10ms);
    }
    return status_;
}

bool child_process::running() { return !wait_exit(0ms).has_value(); }

bool child_process::wait_for(const std::string& path, std::string_view needle,
                             clock::duration timeout) {
    auto deadline = clock::now() + timeout;
    for (;;) {
        if (read_file(path).find(needle) != std::string::npos) return true;
        if (clock::now() >= deadline || !running())
            return read_file(path).find(needle) != std::string::npos;
        std::this_thread::sleep_for(20ms);
    }
}

bool child_process::wait_for_err(std::string_view needle, clock::duration timeout) {
    return wait_for(err_path_, needle, timeout);
}

bool child_process::wait_for_out(std::string_view needle, clock::duration timeout) {
    return wait_for(out_path_, needle, timeout);
}

run_result run(std::vector<std::string> argv, std::string cwd, clock::duration timeout) {
    child_process p(std::move(argv), std::move(cwd));
    run_result r;
    auto status = p.wait_exit(timeout);
    r.exit_code = status ? *status : -1;
    r.out = p.out();
    r.err = p.err();
    return r;
}

// ---------------------------------------------------------------------------------------------------------------
// corgi_server

std::vector<std::string> wait_for_addresses(child_process& proc, std::string_view prefix,
                                            std::size_t count, clock::duration timeout) {
    auto deadline = clock::now() + timeout;
    for (;;) {
        std::vector<std::string> found;
        std::string err = proc.err();
        for (std::size_t pos = err.find(prefix); pos != std::string::npos;
             pos = err.find(prefix, pos + 1)) {
            auto start = pos + prefix.size();
            auto end = err.find('\n', start);
            if (end == std::string::npos) break;  // the line is still being written
            found.push_back(err.substr(start, end - start));
        }
        if (found.size() >= count) return found;
        if (clock::now() >= deadline || !proc.running())
            throw std::runtime_error("the server did not report " + std::to_string(count) +
                                     " listening address(es); its stderr:\n" + proc.err());
        std::this_thread::sleep_for(10ms);
    }
}

std::uint16_t port_of(const std::string& address) {
    if (address.starts_with("unix:")) return 0;
    auto colon = address.rfind(':');
    if (colon == std::string::npos) throw std::runtime_error("no port in '" + address + "'");
    return static_cast<std::uint16_t>(std::stoul(address.substr(colon + 1)));
}

namespace {
std::vector<std::string> with_default_listener(std::vector<std::string> args) {
    for (const auto& a : args)
        if (a.starts_with("--http") || a.starts_with("--socket") ||
            a.starts_with("--fastcgi-socket") || a.starts_with("--scgi-socket"))
            return args;
    args.push_back("--http");
    args.push_back("127.0.0.1:0");
    return args;
}

std::vector<std::string> corgi_argv(std::vector<std::string> args) {
    std::vector<std::string> argv{corgi_binary()};
    for (auto& a : with_default_listener(std::move(args))) argv.push_back(std::move(a));
    return argv;
}
}  // namespace

corgi_server::corgi_server(std::vector<std::string> args, std::string cwd, std::size_t listeners)
    : proc_(corgi_argv(std::move(args)), std::move(cwd)) {
    // "corgi: serving http on 127.0.0.1:PORT" (any protocol): the part after " on ".
    for (auto& line : wait_for_addresses(proc_, "corgi: serving ", listeners)) {
        auto on = line.find(" on ");
        std::string address = on == std::string::npos ? line : line.substr(on + 4);
        ports_.push_back(port_of(address));
        addresses_.push_back(std::move(address));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// http_response

std::optional<std::string> http_response::header(std::string_view name) const {
    for (const auto& [n, v] : headers)
        if (iequal(n, name)) return v;
    return std::nullopt;
}

std::size_t http_response::header_count(std::string_view name) const {
    std::size_t n = 0;
    for (const auto& h : headers)
        if (iequal(h.first, name)) ++n;
    return n;
}

// ---------------------------------------------------------------------------------------------------------------
// http_client

std::optional<http_client> http_client::try_tcp(std::uint16_t port, const std::string& host,
                                                int* error) {
    bool v6 = host.find(':') != std::string::npos;
    int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (error) *error = errno;
        return std::nullopt;
    }
    bool ok = false;
    if (v6) {
        sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        a.sin6_port = htons(port);
        ::inet_pton(AF_INET6, host.c_str(), &a.sin6_addr);
        ok = connect_with_timeout(fd, reinterpret_cast<sockaddr*>(&a), sizeof a, error);
    } else {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
        ok = connect_with_timeout(fd, reinterpret_cast<sockaddr*>(&a), sizeof a, error);
    }
    if (!ok) {
        ::close(fd);
        return std::nullopt;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return http_client(fd);
}

http_client http_client::tcp(std::uint16_t port, const std::string& host) {
    int error = 0;
    auto c = try_tcp(port, host, &error);
    if (!c)
        throw std::runtime_error("cannot connect to " + host + ":" + std::to_string(port) + ": " +
                                 std::strerror(error));
    return std::move(*c);
}

std::optional<http_client> http_client::try_unix_socket(const std::string& path, int* error) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (error) *error = errno;
        return std::nullopt;
    }
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    if (!connect_with_timeout(fd, reinterpret_cast<sockaddr*>(&a), sizeof a, error)) {
        ::close(fd);
        return std::nullopt;
    }
    return http_client(fd);
}

http_client http_client::unix_socket(const std::string& path) {
    int error = 0;
    auto c = try_unix_socket(path, &error);
    if (!c)
        throw std::runtime_error("cannot connect to unix:" + path + ": " + std::strerror(error));
    return std::move(*c);
}

http_client::http_client(http_client&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      buffer_(std::move(other.buffer_)),
      drained_(std::move(other.drained_)),
      error_(std::move(other.error_)) {}

http_client& http_client::operator=(http_client&& other) noexcept {
    if (this != &other) {
        close();
        fd_ = std::exchange(other.fd_, -1);
        buffer_ = std::move(other.buffer_);
        drained_ = std::move(other.drained_);
        error_ = std::move(other.error_);
    }
    return *this;
}

http_client::~http_client() { close(); }

void http_client::close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

void http_client::shutdown_write() {
    if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

bool http_client::send(std::string_view data) {
    auto deadline = clock::now() + default_timeout;
    while (!data.empty()) {
        ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
        if (n > 0) {
            data.remove_prefix(static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            pollfd p{fd_, POLLOUT, 0};
            if (::poll(&p, 1, remaining_ms(deadline)) <= 0) {
                error_ = "send timed out";
                return false;
            }
            continue;
        }
        error_ = std::string("send failed: ") + std::strerror(errno);
        return false;
    }
    return true;
}

http_client::fill http_client::fill_buffer(clock::time_point deadline) {
    for (;;) {
        char chunk[16384];
        ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
        if (n > 0) {
            buffer_.append(chunk, static_cast<std::size_t>(n));
            return fill::data;
        }
        if (n == 0) return fill::eof;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            int left = remaining_ms(deadline);
            if (left == 0) return fill::timeout;
            pollfd p{fd_, POLLIN, 0};
            int r = ::poll(&p, 1, left);
            if (r == 0) return fill::timeout;
            continue;
        }
        reset_ = errno == ECONNRESET;
        return errno == ECONNRESET ? fill::eof : fill::error;
    }
}

std::size_t http_client::need_line(std::size_t from, clock::time_point deadline) {
    for (;;) {
        auto end = buffer_.find("\r\n", from);
        if (end != std::string::npos) return end;
        auto r = fill_buffer(deadline);
        if (r != fill::data) {
            error_ = r == fill::timeout ? "timed out waiting for a line"
                                        : "connection closed mid-response";
            return std::string::npos;
        }
    }
}

bool http_client::need_bytes(std::size_t n, clock::time_point deadline) {
    while (buffer_.size() < n) {
        auto r = fill_buffer(deadline);
        if (r != fill::data) {
            error_ = r == fill::timeout ? "timed out waiting for the body"
                                        : "connection closed mid-body";
            return false;
        }
    }
    return true;
}

bool http_client::read_at_least(std::size_t n, clock::duration timeout) {
    return need_bytes(n, clock::now() + timeout);
}

std::optional<http_response> http_client::read_response(bool head_request,
                                                        clock::duration timeout) {
    auto deadline = clock::now() + timeout;
    error_.clear();
    // The head: everything up to the empty line.
    std::size_t head_end;
    for (;;) {
        head_end = buffer_.find("\r\n\r\n");
        if (head_end != std::string::npos) break;
        auto r = fill_buffer(deadline);
        if (r != fill::data) {
            error_ = r == fill::timeout ? "timed out waiting for a response"
                                        : (buffer_.empty() ? "connection closed before a response"
                                                           : "connection closed mid-header");
            return std::nullopt;
        }
    }
    http_response res;
    std::string_view head(buffer_.data(), head_end);
    auto line_end = head.find("\r\n");
    std::string_view status_line = head.substr(0, line_end);
    auto sp1 = status_line.find(' ');
    if (sp1 == std::string_view::npos || !status_line.starts_with("HTTP/")) {
        error_ = "malformed status line: " + std::string(status_line);
        return std::nullopt;
    }
    res.version = std::string(status_line.substr(0, sp1));
    auto sp2 = status_line.find(' ', sp1 + 1);
    try {
        res.status = std::stoi(std::string(status_line.substr(sp1 + 1, sp2 - sp1 - 1)));
    } catch (const std::exception&) {
        error_ = "malformed status code: " + std::string(status_line);
        return std::nullopt;
    }
    if (sp2 != std::string_view::npos) res.reason = std::string(status_line.substr(sp2 + 1));
    std::string_view rest =
        line_end == std::string_view::npos ? std::string_view() : head.substr(line_end + 2);
    while (!rest.empty()) {
        auto e = rest.find("\r\n");
        std::string_view line = rest.substr(0, e);
        rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
        auto colon = line.find(':');
        if (colon == std::string_view::npos) {
            error_ = "malformed header line: " + std::string(line);
            return std::nullopt;
        }
        res.headers.emplace_back(std::string(line.substr(0, colon)),
                                 std::string(trim(line.substr(colon + 1))));
    }
    buffer_.erase(0, head_end + 4);

    // The body, framed as RFC 9112 section 6.3 says.
    if (head_request || (res.status >= 100 && res.status < 200) || res.status == 204 ||
        res.status == 304)
        return res;
    auto te = res.header("Transfer-Encoding");
    if (te && iequal(trim(*te), "chunked")) {
        res.chunked = true;
        for (;;) {
            auto e = need_line(0, deadline);
            if (e == std::string::npos) return std::nullopt;
            std::size_t size = 0;
            try {
                size = std::stoul(buffer_.substr(0, e), nullptr, 16);
            } catch (const std::exception&) {
                error_ = "malformed chunk size: " + buffer_.substr(0, e);
                return std::nullopt;
            }
            buffer_.erase(0, e + 2);
            if (size == 0) {
                // Trailers, then the empty line.
                for (;;) {
                    auto t = need_line(0, deadline);
                    if (t == std::string::npos) return std::nullopt;
                    buffer_.erase(0, t + 2);
                    if (t == 0) return res;
                }
            }
            if (!need_bytes(size + 2, deadline)) return std::nullopt;
            if (buffer_.compare(size, 2, "\r\n") != 0) {
                error_ = "chunk data not followed by CRLF";
                return std::nullopt;
            }
            res.body.append(buffer_, 0, size);
            buffer_.erase(0, size + 2);
        }
    }
    if (auto cl = res.header("Content-Length")) {
        std::size_t n = std::stoul(*cl);
        if (!need_bytes(n, deadline)) return std::nullopt;
        res.body = buffer_.substr(0, n);
        buffer_.erase(0, n);
        return res;
    }
    // Close-delimited.
    for (;;) {
        auto r = fill_buffer(deadline);
        if (r == fill::data) continue;
        if (r == fill::timeout) {
            error_ = "timed out waiting for a close-delimited body to end";
            return std::nullopt;
        }
        res.body = std::move(buffer_);
        buffer_.clear();
        return res;
    }
}

bool http_client::wait_closed(clock::duration timeout) {
    auto deadline = clock::now() + timeout;
    for (;;) {
        auto r = fill_buffer(deadline);
        drained_ += buffer_;
        buffer_.clear();
        if (r == fill::data) continue;
        return r == fill::eof || r == fill::error;
    }
}

http_client::stream_end http_client::wait_end(clock::duration timeout) {
    auto deadline = clock::now() + timeout;
    reset_ = false;
    for (;;) {
        auto r = fill_buffer(deadline);
        drained_ += buffer_;
        buffer_.clear();
        if (r == fill::data) continue;
        if (r == fill::timeout) return stream_end::timeout;
        return r == fill::eof && !reset_ ? stream_end::eof : stream_end::reset;
    }
}

std::string http_client::read_until_close(clock::duration timeout) {
    auto deadline = clock::now() + timeout;
    while (fill_buffer(deadline) == fill::data) {
    }
    return std::exchange(buffer_, std::string());
}

// ---------------------------------------------------------------------------------------------------------------
// helpers

std::string get_request(std::string_view target, std::string_view extra_headers,
                        std::string_view method) {
    std::string r;
    r += method;
    r += ' ';
    r += target;
    r += " HTTP/1.1\r\nHost: test\r\n";
    r += extra_headers;
    r += "\r\n";
    return r;
}

std::optional<http_response> fetch(std::uint16_t port, std::string_view target,
                                   std::string_view method) {
    auto c = http_client::try_tcp(port);
    if (!c) return std::nullopt;
    if (!c->send(get_request(target, "Connection: close\r\n", method))) return std::nullopt;
    return c->read_response(method == "HEAD");
}

bool answers(std::uint16_t port) {
    auto r = fetch(port, "/plaintext");
    return r && r->status == 200 && r->body == "Hello, World!";
}

std::vector<std::string> split_list(std::string_view s) {
    std::vector<std::string> out;
    while (!s.empty()) {
        auto comma = s.find(',');
        auto item = trim(s.substr(0, comma));
        if (!item.empty()) out.emplace_back(item);
        if (comma == std::string_view::npos) break;
        s.remove_prefix(comma + 1);
    }
    return out;
}

std::vector<std::string> lines_of(std::string_view s) {
    std::vector<std::string> out;
    while (!s.empty()) {
        auto nl = s.find('\n');
        out.emplace_back(s.substr(0, nl));
        if (nl == std::string_view::npos) break;
        s.remove_prefix(nl + 1);
    }
    return out;
}

bool has_ipv6_loopback() {
    int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

bool eventually(const std::function<bool()>& condition, clock::duration timeout) {
    const auto deadline = clock::now() + timeout;
    for (;;) {
        if (condition()) return true;
        if (clock::now() >= deadline) return condition();
        std::this_thread::sleep_for(20ms);
    }
}

std::size_t count_of(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
        ++n;
    return n;
}

}  // namespace corgi::test
