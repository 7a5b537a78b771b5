// Support for the integration tests: child processes (the corgi binary, curl) that are always
// reaped, a raw socket HTTP/1.1 client whose every read has a deadline, and small helpers. Nothing
// here can hang a test.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace corgi::test {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

// An environment variable that the ctest registration sets; fails the test (throws) when it is
// missing.
std::string required_env(const char* name);
std::string corgi_binary();
std::string source_dir();
// A fresh path under /tmp for files and unix sockets of one test (not created).
std::string temp_path(std::string_view stem);
std::string read_file(const std::string& path);
void write_file(const std::string& path, std::string_view content);

// A file (or unix socket) path removed when the guard goes.
struct temp_file {
    std::string path;
    explicit temp_file(std::string_view stem) : path(temp_path(stem)) {}
    temp_file(std::string_view stem, std::string_view content);
    ~temp_file();
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;
};

// examples/demo.json with its "listen" replaced by 127.0.0.1:0 (the original binds port 8000). Run
// the server with source_dir() as cwd so that the static directory resolves.
std::string demo_config_text();

// What a child gets beyond its argv, the way a service manager starts a service.
struct spawn_options {
    std::string cwd;               // empty: inherit
    std::vector<std::string> env;  // "NAME=value": added to the test's environment, or replacing
    std::vector<int> pass_fds;     // the child's descriptors 3, 4, ... (systemd's LISTEN_FDS order)
    // LISTEN_PID=<the child's own pid>, which only exists after fork (sd_listen_fds(3)).
    bool set_listen_pid = false;
};

// A child process with stdout and stderr going to files; killed (SIGKILL) and reaped in the
// destructor.
class child_process {
  public:
    // argv[0] is the program path (no PATH lookup). cwd empty: inherit.
    explicit child_process(std::vector<std::string> argv, std::string cwd = {});
    child_process(std::vector<std::string> argv, const spawn_options& options);
    ~child_process();
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;

    pid_t pid() const noexcept { return pid_; }
    void send_signal(int sig);
    // The exit status (or 128 + signal number) once it exited within the timeout; nullopt if still
    // running.
    std::optional<int> wait_exit(clock::duration timeout);
    bool running();

    std::string out() const { return read_file(out_path_); }
    std::string err() const { return read_file(err_path_); }
    // Polls stderr/stdout until it contains `needle` (true) or the timeout passes or the process
    // exits (false).
    bool wait_for_err(std::string_view needle, clock::duration timeout);
    bool wait_for_out(std::string_view needle, clock::duration timeout);

  private:
    bool wait_for(const std::string& path, std::string_view needle, clock::duration timeout);

    pid_t pid_ = -1;
    std::optional<int> status_;
    std::string out_path_, err_path_;
};

// Runs a program to completion (killed after the timeout). exit_code is -1 when it had to be
// killed.
struct run_result {
    int exit_code = -1;
    std::string out, err;
};
run_result run(std::vector<std::string> argv, std::string cwd = {}, clock::duration timeout = 8s);

// The corgi binary serving on the addresses it printed ("corgi: serving http on ADDR").
class corgi_server {
  public:
    // Starts `corgi [args...]`, adding `--http 127.0.0.1:0` unless args already contain a listener,
    // and waits until `listeners` addresses were printed. Throws (with the child's stderr) when it
    // does not come up.
    explicit corgi_server(std::vector<std::string> args = {}, std::string cwd = {},
                          std::size_t listeners = 1);

    std::uint16_t port(std::size_t i = 0) const { return ports_.at(i); }
    const std::vector<std::string>& addresses() const noexcept { return addresses_; }
    child_process& process() noexcept { return proc_; }

  private:
    child_process proc_;
    std::vector<std::string>
        addresses_;                     // as printed: "127.0.0.1:PORT", "[::1]:PORT", "unix:/path"
    std::vector<std::uint16_t> ports_;  // 0 for unix sockets
};

// Waits for `prefix` + address on the child's stderr and returns each address printed (up to
// `count`).
std::vector<std::string> wait_for_addresses(child_process& proc, std::string_view prefix,
                                            std::size_t count, clock::duration timeout = 5s);
std::uint16_t port_of(const std::string& address);

struct http_response {
    std::string version;  // "HTTP/1.1"
    int status = 0;
    std::string reason;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    bool chunked = false;  // the body came with Transfer-Encoding: chunked

    // The first header with this name (case-insensitive).
    std::optional<std::string> header(std::string_view name) const;
    std::size_t header_count(std::string_view name) const;
};

// One client connection over a raw socket. Reads keep a buffer across responses (pipelining).
class http_client {
  public:
    static constexpr auto default_timeout = std::chrono::milliseconds(4000);

    // Connects or throws. The *try* variants return nullopt (with errno in *error) instead.
    static http_client tcp(std::uint16_t port, const std::string& host = "127.0.0.1");
    static std::optional<http_client> try_tcp(std::uint16_t port,
                                              const std::string& host = "127.0.0.1",
                                              int* error = nullptr);
    static http_client unix_socket(const std::string& path);
    static std::optional<http_client> try_unix_socket(const std::string& path,
                                                      int* error = nullptr);

    http_client(http_client&& other) noexcept;
    http_client& operator=(http_client&& other) noexcept;
    ~http_client();

    // Writes everything; false if the peer is gone (EPIPE/ECONNRESET).
    bool send(std::string_view data);
    void shutdown_write();
    void close();

    // One response. `head_request`: the response to a HEAD (no body whatever the headers say).
    // nullopt on timeout, EOF or a malformed response; error() says which.
    std::optional<http_response> read_response(bool head_request = false,
                                               clock::duration timeout = default_timeout);
    // True when the server closes the connection (EOF or reset) within the timeout; data before the
    // end is discarded (and kept in drained()).
    bool wait_closed(clock::duration timeout = default_timeout);
    // Whatever arrives until the peer closes or the timeout passes.
    std::string read_until_close(clock::duration timeout = default_timeout);
    // How the server ends the stream, once whatever it sent before has been read (kept in
    // drained()): a clean end (FIN, recv returns 0), a reset (ECONNRESET) or nothing in time.
    enum class stream_end { eof, reset, timeout };
    stream_end wait_end(clock::duration timeout = default_timeout);
    // Reads at least n bytes (false on timeout/EOF).
    bool read_at_least(std::size_t n, clock::duration timeout = default_timeout);

    const std::string& error() const noexcept { return error_; }
    const std::string& buffered() const noexcept { return buffer_; }
    const std::string& drained() const noexcept { return drained_; }
    int fd() const noexcept { return fd_; }

  private:
    explicit http_client(int fd) : fd_(fd) {}
    enum class fill { data, eof, timeout, error };
    fill fill_buffer(clock::time_point deadline);
    // Ensures buffer_ holds a line ending "\r\n" from offset; returns its end or npos.
    std::size_t need_line(std::size_t from, clock::time_point deadline);
    bool need_bytes(std::size_t n, clock::time_point deadline);

    int fd_ = -1;
    std::string buffer_;
    std::string drained_;
    std::string error_;
    bool reset_ = false;  // the last fill ended on ECONNRESET
};

// "GET /path HTTP/1.1\r\nHost: test\r\n" + extra header lines + "\r\n".
std::string get_request(std::string_view target, std::string_view extra_headers = {},
                        std::string_view method = "GET");
// A one-shot request on a fresh connection.
std::optional<http_response> fetch(std::uint16_t port, std::string_view target,
                                   std::string_view method = "GET");
// True if the server at port answers GET /plaintext with 200 on a fresh connection (the "still
// alive" check).
bool answers(std::uint16_t port);

// Splits "a, b,c" into trimmed items.
std::vector<std::string> split_list(std::string_view s);
std::vector<std::string> lines_of(std::string_view s);
bool has_ipv6_loopback();

// Polls `condition` every 20 ms until it holds (true) or `timeout` passes (its last value).
bool eventually(const std::function<bool()>& condition, clock::duration timeout);
// How many times `needle` occurs in `text`.
std::size_t count_of(const std::string& text, const std::string& needle);

}  // namespace corgi::test
