// Session tests of the uwsgi, SCGI and FastCGI listeners over real 127.0.0.1 sockets: a
// corgi::server runs in the test process with a small handler, and a blocking client sends what
// nginx would send (and what it never would), then checks the bytes that come back.
#include "proxy_wire.hpp"

#include <corgi/core/http_error.hpp>
#include <corgi/core/log.hpp>
#include <corgi/core/server.hpp>
#include <corgi/protocols/protocols.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

using namespace std::chrono_literals;
using corgi::test::var_list;
namespace wire = corgi::test::fcgi;

namespace {

// Describes what the handler received, so that each protocol's tests can compare it with what was
// sent.
corgi::task<corgi::response> describe_request(corgi::request& req) {
    if (req.path == "/throw") throw std::runtime_error("secret detail");
    if (req.path == "/missing") throw corgi::not_found("no such thing");
    if (req.path == "/noread") co_return corgi::response::text("unread\n");
    if (req.path == "/big") co_return corgi::response::text(std::string(300000, 'z'));
    // Handlers whose body breaks the Content-Length they set: longer, shorter, streamed.
    if (req.path.starts_with("/lie-")) {
        const bool longer = req.path.ends_with("-long");
        corgi::response res = req.path.starts_with("/lie-stream-")
                                  ? corgi::response::stream(
                                        [longer](corgi::body_writer& w) -> corgi::task<void> {
                                            co_await w.write("01234");
                                            if (longer) co_await w.write("56789");
                                        },
                                        "text/plain")
                                  : corgi::response::text(longer ? "0123456789" : "01234");
        res.headers.set("Content-Length", longer ? "5" : "10");
        co_return res;
    }
    if (req.path == "/stream")
        co_return corgi::response::stream(
            [](corgi::body_writer& w) -> corgi::task<void> {
                co_await w.write("one,");
                co_await w.write("two");
            },
            "text/plain");
    std::string body = co_await req.read_all(64 * 1024 * 1024);
    std::string out = req.method + " " + req.script_name + "|" + req.path + "?" + req.query_string +
                      " proto=" + req.protocol_name + " remote=" + req.remote_addr + ":" +
                      std::to_string(req.remote_port) + " scheme=" + req.scheme +
                      " host=" + std::string(req.headers.get("Host")) +
                      " type=" + std::string(req.headers.get("Content-Type")) +
                      " len=" + std::to_string(body.size()) + " body=" + body.substr(0, 64);
    co_return corgi::response::text(out);
}

// A corgi::server with the three proxy listeners on 127.0.0.1:0, running on its own thread until
// destroyed.
struct proxy_server {
    corgi::server srv;
    std::uint16_t uwsgi_port = 0, scgi_port = 0, fastcgi_port = 0, http_port = 0;
    // With `unix_too`, the same four on unix sockets as well (removed when the server ends).
    std::string uwsgi_path, scgi_path, fastcgi_path, http_path;
    std::thread thread;
    explicit proxy_server(corgi::server_limits limits = {}, bool unix_too = false)
        : srv([&] {
              corgi::server_options o;
              o.io_threads = 1;
              o.handle_signals = false;
              o.limits = limits;
              return o;
          }()) {
        corgi::log::set_access_log_enabled(false);
        srv.set_handler(describe_request);
        auto local = corgi::listen_address::parse("127.0.0.1:0");
        uwsgi_port = srv.listen(local, corgi::protocols::uwsgi()).port;
        scgi_port = srv.listen(local, corgi::protocols::scgi()).port;
        fastcgi_port = srv.listen(local, corgi::protocols::fastcgi()).port;
        http_port = srv.listen(local, corgi::protocols::http()).port;
        if (unix_too) {
            const std::string base = std::filesystem::temp_directory_path().string() +
                                     "/corgi-session-" + std::to_string(::getpid()) + "-";
            uwsgi_path = base + "uwsgi.sock";
            scgi_path = base + "scgi.sock";
            fastcgi_path = base + "fastcgi.sock";
            http_path = base + "http.sock";
            srv.listen(corgi::listen_address::parse("unix:" + uwsgi_path),
                       corgi::protocols::uwsgi());
            srv.listen(corgi::listen_address::parse("unix:" + scgi_path), corgi::protocols::scgi());
            srv.listen(corgi::listen_address::parse("unix:" + fastcgi_path),
                       corgi::protocols::fastcgi());
            srv.listen(corgi::listen_address::parse("unix:" + http_path), corgi::protocols::http());
        }
        thread = std::thread([this] { srv.run(); });
    }
    ~proxy_server() {
        srv.stop();
        thread.join();
    }
};

// A blocking client socket whose reads give up after 5 s, closed on destruction.
class client {
  public:
    explicit client(std::uint16_t port) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connect_to(reinterpret_cast<const sockaddr*>(&a), sizeof a);
    }
    explicit client(const std::string& unix_path) {
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        REQUIRE(unix_path.size() < sizeof a.sun_path);
        std::memcpy(a.sun_path, unix_path.c_str(), unix_path.size() + 1);
        connect_to(reinterpret_cast<const sockaddr*>(&a), sizeof a);
    }
    ~client() { ::close(fd_); }
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    // False when the peer has gone (EPIPE/ECONNRESET), which some tests expect.
    bool send(std::string_view bytes) {
        while (!bytes.empty()) {
            ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n <= 0) return false;
            bytes.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }
    void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

    // Everything until the server closes (or resets) the connection; eof() tells whether it did
    // within 5 s.
    std::string read_to_end() {
        std::string out;
        char buf[65536];
        for (;;) {
            ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n > 0) {
                out.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            eof_ = n == 0 || errno == ECONNRESET;
            reset_ = n < 0 && errno == ECONNRESET;
            return out;
        }
    }
    // FastCGI records until the END_REQUEST of `id` (or the end of the connection).
    std::string read_until_end_request(std::uint16_t id) {
        std::string out;
        char buf[65536];
        for (;;) {
            bool complete = false;
            auto records = wire::parse(out, &complete);
            if (wire::end_status_of(records, id) >= 0 && complete) return out;
            ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n <= 0) {
                eof_ = n == 0 || errno == ECONNRESET;
                reset_ = n < 0 && errno == ECONNRESET;
                return out;
            }
            out.append(buf, static_cast<std::size_t>(n));
        }
    }
    bool eof() const noexcept { return eof_; }
    // The connection ended with a reset rather than a clean end of stream.
    bool reset() const noexcept { return reset_; }

  private:
    void connect_to(const sockaddr* address, socklen_t length) {
        fd_ = ::socket(address->sa_family, SOCK_STREAM, 0);
        REQUIRE(fd_ >= 0);
        timeval tv{5, 0};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        REQUIRE(::connect(fd_, address, length) == 0);
    }

    int fd_ = -1;
    bool eof_ = false;
    bool reset_ = false;
};

struct http_reply {
    std::string head;  // status line (or Status: line) and headers
    std::string body;
};

http_reply split(const std::string& bytes) {
    auto end = bytes.find("\r\n\r\n");
    if (end == std::string::npos) return {bytes, {}};
    return {bytes.substr(0, end + 2), bytes.substr(end + 4)};
}

var_list request_vars(std::string method, std::string uri, std::string content_length = "") {
    auto q = uri.find('?');
    std::string path = uri.substr(0, q);
    return {{"REQUEST_METHOD", method},
            {"REQUEST_URI", uri},
            {"QUERY_STRING", q == std::string::npos ? "" : uri.substr(q + 1)},
            {"CONTENT_TYPE", content_length.empty() || content_length == "0" ? "" : "text/plain"},
            {"CONTENT_LENGTH", content_length},
            {"SERVER_PROTOCOL", "HTTP/1.1"},
            {"REMOTE_ADDR", "10.1.2.3"},
            {"REMOTE_PORT", "4444"},
            {"SERVER_NAME", "example"},
            {"SERVER_PORT", "80"},
            {"HTTPS", "on"},
            {"HTTP_HOST", "example"}};
}

var_list scgi_vars(std::string method, std::string uri, std::string content_length = "0") {
    var_list v = request_vars(std::move(method), std::move(uri), content_length);
    v.erase(std::find_if(v.begin(), v.end(), [](auto& p) { return p.first == "CONTENT_LENGTH"; }));
    v.insert(v.begin(), {"CONTENT_LENGTH", content_length});
    v.emplace_back("SCGI", "1");
    return v;
}

const std::string expected_get =
    "GET |/a b?x=1 proto=%s remote=10.1.2.3:4444 scheme=https host=example type= len=0 body=";

std::string expected_for(std::string_view proto) {
    std::string e = expected_get;
    return e.replace(e.find("%s"), 2, proto);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// uwsgi

TEST_CASE("proxy session: uwsgi request answered with a raw HTTP response, then closed",
          "[uwsgi][session]") {
    proxy_server s;
    client c(s.uwsgi_port);
    REQUIRE(c.send(corgi::test::uwsgi_packet(request_vars("GET", "/a%20b?x=1"))));
    auto reply = split(c.read_to_end());
    CHECK(c.eof());
    CHECK(reply.head.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(reply.head.find("Content-Length: " + std::to_string(reply.body.size()) + "\r\n") !=
          std::string::npos);
    CHECK(reply.body == expected_for("uwsgi"));
}

TEST_CASE("proxy session: uwsgi vars cannot load code or change the configuration",
          "[uwsgi][session]") {
    // uWSGI acts on UWSGI_SCRIPT, UWSGI_FILE, UWSGI_SETENV, UWSGI_CHDIR... sent by whoever reaches
    // its socket. corgi treats them as opaque variables: the configured handler answers and the
    // process is unchanged.
    proxy_server s;
    const std::string cwd_before = std::filesystem::current_path().string();
    REQUIRE(std::getenv("CORGI_UWSGI_SETENV_PROBE") == nullptr);
    var_list vars = request_vars("GET", "/a%20b?x=1");
    vars.emplace_back("UWSGI_SCRIPT", "os:system");
    vars.emplace_back("UWSGI_FILE", "/etc/passwd");
    vars.emplace_back("UWSGI_MODULE", "os");
    vars.emplace_back("UWSGI_CALLABLE", "system");
    vars.emplace_back("UWSGI_SETENV", "CORGI_UWSGI_SETENV_PROBE=1");
    vars.emplace_back("UWSGI_CHDIR", "/");
    vars.emplace_back("UWSGI_APPID", "other");
    client c(s.uwsgi_port);
    REQUIRE(c.send(corgi::test::uwsgi_packet(vars)));
    auto reply = split(c.read_to_end());
    CHECK(reply.head.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(reply.body == expected_for("uwsgi"));
    CHECK(std::getenv("CORGI_UWSGI_SETENV_PROBE") == nullptr);
    CHECK(std::filesystem::current_path().string() == cwd_before);
}

TEST_CASE("proxy session: uwsgi body arriving in pieces reaches the handler whole",
          "[uwsgi][session]") {
    proxy_server s;
    client c(s.uwsgi_port);
    std::string packet =
        corgi::test::uwsgi_packet(request_vars("POST", "/post", "11"), "hello world");
    REQUIRE(c.send(packet.substr(0, packet.size() - 8)));
    std::this_thread::sleep_for(50ms);
    REQUIRE(c.send(packet.substr(packet.size() - 8)));
    auto reply = split(c.read_to_end());
    CHECK(reply.body.find("POST |/post? ") == 0);
    CHECK(reply.body.find("type=text/plain len=11 body=hello world") != std::string::npos);
}

TEST_CASE("proxy session: uwsgi body the handler ignores is read so the proxy is not stuck",
          "[uwsgi][session]") {
    proxy_server s;
    client c(s.uwsgi_port);
    std::string body(4 * 1024 * 1024, 'b');  // more than the socket buffers hold
    std::thread writer([&] {
        c.send(corgi::test::uwsgi_packet(
            request_vars("POST", "/noread", std::to_string(body.size())), body));
    });
    auto reply = split(c.read_to_end());
    writer.join();
    CHECK(reply.head.rfind("HTTP/1.1 200", 0) == 0);
    CHECK(reply.body == "unread\n");
}

TEST_CASE("proxy session: uwsgi body over the limit is answered 413", "[uwsgi][session]") {
    corgi::server_limits limits;
    limits.max_body_bytes = 1000;
    proxy_server s(limits);
    client c(s.uwsgi_port);
    REQUIRE(c.send(corgi::test::uwsgi_packet(request_vars("POST", "/post", "5000"))));
    auto reply = split(c.read_to_end());
    CHECK(reply.head.rfind("HTTP/1.1 413 ", 0) == 0);
}

TEST_CASE("proxy session: uwsgi bad packets close the connection and nothing else",
          "[uwsgi][session]") {
    proxy_server s;
    SECTION("modifier1 other than 0") {
        client c(s.uwsgi_port);
        c.send(corgi::test::uwsgi_packet(request_vars("GET", "/"), {}, 5));
        CHECK(c.read_to_end().empty());
        CHECK(c.eof());
    }
    SECTION("a var length past the end of the block") {
        client c(s.uwsgi_port);
        std::string p = corgi::test::uwsgi_packet(request_vars("GET", "/"));
        p[4] = char(0xff);  // first key length
        c.send(p);
        CHECK(c.read_to_end().empty());
        CHECK(c.eof());
    }
    SECTION("a truncated head") {
        client c(s.uwsgi_port);
        std::string p = corgi::test::uwsgi_packet(request_vars("GET", "/"));
        c.send(p.substr(0, p.size() / 2));
        c.shutdown_write();
        CHECK(c.read_to_end().empty());
        CHECK(c.eof());
    }
    SECTION("no REQUEST_METHOD: 400") {
        client c(s.uwsgi_port);
        c.send(corgi::test::uwsgi_packet({{"REQUEST_URI", "/"}}));
        CHECK(split(c.read_to_end()).head.rfind("HTTP/1.1 400 ", 0) == 0);
    }
    SECTION("a body cut short: the handler's read fails, the server lives on") {
        client c(s.uwsgi_port);
        c.send(corgi::test::uwsgi_packet(request_vars("POST", "/post", "100"), "only ten.."));
        c.shutdown_write();
        CHECK(split(c.read_to_end()).head.rfind("HTTP/1.1 400 ", 0) == 0);
    }
    // The listener still serves a good request afterwards.
    client good(s.uwsgi_port);
    good.send(corgi::test::uwsgi_packet(request_vars("GET", "/a%20b?x=1")));
    CHECK(split(good.read_to_end()).body == expected_for("uwsgi"));
}

TEST_CASE("proxy session: uwsgi HEAD, streaming, large bodies and handler errors",
          "[uwsgi][session]") {
    proxy_server s;
    auto fetch = [&](std::string method, std::string uri) {
        client c(s.uwsgi_port);
        c.send(corgi::test::uwsgi_packet(request_vars(std::move(method), std::move(uri))));
        return split(c.read_to_end());
    };
    auto head = fetch("HEAD", "/big");
    CHECK(head.head.find("Content-Length: 300000\r\n") != std::string::npos);
    CHECK(head.body.empty());
    CHECK(fetch("GET", "/big").body == std::string(300000, 'z'));
    auto stream = fetch("GET", "/stream");
    CHECK(stream.body == "one,two");  // close-delimited: nginx reads uwsgi responses to the end
    CHECK(stream.head.find("Transfer-Encoding") == std::string::npos);
    auto err = fetch("GET", "/throw");
    CHECK(err.head.rfind("HTTP/1.1 500 ", 0) == 0);
    CHECK(err.body.find("secret") == std::string::npos);
    CHECK(fetch("GET", "/missing").head.rfind("HTTP/1.1 404 ", 0) == 0);
}

TEST_CASE("proxy session: uwsgi head that never completes is dropped at the header timeout",
          "[uwsgi][session]") {
    corgi::server_limits limits;
    limits.header_timeout = 200ms;
    proxy_server s(limits);
    client c(s.uwsgi_port);
    c.send(std::string("\0\x40\0", 3));
    CHECK(c.read_to_end().empty());
    CHECK(c.eof());  // closed by the server, well before the client's 5 s read timeout
}

// ---------------------------------------------------------------------------------------------------------------
// SCGI

TEST_CASE("proxy session: scgi request answered with a Status: line, then closed",
          "[scgi][session]") {
    proxy_server s;
    client c(s.scgi_port);
    REQUIRE(c.send(corgi::test::scgi_packet(scgi_vars("GET", "/a%20b?x=1"))));
    auto reply = split(c.read_to_end());
    CHECK(c.eof());
    CHECK(reply.head.rfind("Status: 200 OK\r\n", 0) == 0);
    CHECK(reply.head.find("HTTP/1.") == std::string::npos);
    CHECK(reply.body == expected_for("scgi"));
}

TEST_CASE("proxy session: scgi POST body and bad headers", "[scgi][session]") {
    proxy_server s;
    {
        client c(s.scgi_port);
        c.send(corgi::test::scgi_packet(scgi_vars("POST", "/p", "5"), "hello"));
        CHECK(split(c.read_to_end()).body.find("len=5 body=hello") != std::string::npos);
    }
    {
        client c(s.scgi_port);  // no SCGI=1
        var_list v = scgi_vars("GET", "/");
        v.pop_back();
        c.send(corgi::test::scgi_packet(v));
        CHECK(c.read_to_end().empty());
        CHECK(c.eof());
    }
    {
        client c(s.scgi_port);  // CONTENT_LENGTH not first
        var_list v = scgi_vars("GET", "/");
        std::swap(v[0], v[1]);
        c.send(corgi::test::scgi_packet(v));
        CHECK(c.read_to_end().empty());
    }
    {
        client c(s.scgi_port);  // not a netstring
        c.send("GET / HTTP/1.1\r\n\r\n");
        CHECK(c.read_to_end().empty());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// FastCGI

TEST_CASE("proxy session: fastcgi answers in STDOUT records and ends with END_REQUEST",
          "[fastcgi][session]") {
    proxy_server s;
    client c(s.fastcgi_port);
    REQUIRE(c.send(wire::request(1, request_vars("GET", "/a%20b?x=1"))));
    std::string bytes = c.read_to_end();
    CHECK(c.eof());  // no FCGI_KEEP_CONN: closed after the request
    bool complete = false;
    auto records = wire::parse(bytes, &complete);
    CHECK(complete);
    CHECK(wire::end_status_of(records, 1) == 0);
    REQUIRE(records.size() >= 3);
    CHECK(records[records.size() - 2].type == 6);  // the empty STDOUT that ends the stream
    CHECK(records[records.size() - 2].content.empty());
    auto reply = split(wire::stdout_of(records, 1));
    CHECK(reply.head.rfind("Status: 200 OK\r\n", 0) == 0);
    CHECK(reply.body == expected_for("fastcgi"));
}

TEST_CASE("proxy session: fastcgi FCGI_KEEP_CONN serves several requests on one connection",
          "[fastcgi][session]") {
    proxy_server s;
    client c(s.fastcgi_port);
    for (int i = 0; i < 3; ++i) {
        std::string body = "body-" + std::to_string(i);
        REQUIRE(c.send(wire::request(
            1, request_vars("POST", "/p?i=" + std::to_string(i), std::to_string(body.size())), body,
            true, 3)));
        auto records = wire::parse(c.read_until_end_request(1));
        REQUIRE_FALSE(c.eof());
        CHECK(wire::end_status_of(records, 1) == 0);
        auto reply = split(wire::stdout_of(records, 1));
        CHECK(reply.body.find("POST |/p?i=" + std::to_string(i)) == 0);
        CHECK(reply.body.find("body=" + body) != std::string::npos);
    }
    // GET_VALUES between requests, on the same connection.
    REQUIRE(c.send(wire::record(9, 0, wire::pairs({{"FCGI_MPXS_CONNS", ""}}))));
    REQUIRE(c.send(wire::request(1, request_vars("GET", "/a%20b?x=1"), {}, true)));
    auto records = wire::parse(c.read_until_end_request(1));
    REQUIRE_FALSE(records.empty());
    CHECK(records.front().type == 10);
    CHECK(records.front().content == wire::pairs({{"FCGI_MPXS_CONNS", "0"}}));
    CHECK(split(wire::stdout_of(records, 1)).body == expected_for("fastcgi"));
}

TEST_CASE("proxy session: fastcgi large and streamed responses, HEAD and errors",
          "[fastcgi][session]") {
    proxy_server s;
    client c(s.fastcgi_port);
    auto fetch = [&](std::string method, std::string uri) {
        c.send(wire::request(1, request_vars(std::move(method), std::move(uri)), {}, true));
        auto records = wire::parse(c.read_until_end_request(1));
        return std::pair(split(wire::stdout_of(records, 1)), records.size());
    };
    auto [big, big_records] = fetch("GET", "/big");
    CHECK(big.body == std::string(300000, 'z'));
    CHECK(big_records >= 7);  // 300000 bytes need at least five 65535-byte records, plus the ends
    CHECK(fetch("GET", "/stream").first.body == "one,two");
    auto head = fetch("HEAD", "/big").first;
    CHECK(head.head.find("Content-Length: 300000\r\n") != std::string::npos);
    CHECK(head.body.empty());
    auto err = fetch("GET", "/throw").first;
    CHECK(err.head.rfind("Status: 500 ", 0) == 0);
    CHECK(err.body.find("secret") == std::string::npos);
}

TEST_CASE("proxy session: fastcgi refuses other roles and a second request id",
          "[fastcgi][session]") {
    proxy_server s;
    {
        client c(s.fastcgi_port);
        c.send(wire::begin(5, 2 /* authorizer */, false) + wire::params(5, {}) +
               wire::stdin_(5, ""));
        auto records = wire::parse(c.read_to_end());
        CHECK(c.eof());
        CHECK(wire::end_status_of(records, 5) == 3);  // FCGI_UNKNOWN_ROLE
        CHECK(wire::stdout_of(records, 5).empty());
    }
    {
        client c(s.fastcgi_port);
        c.send(wire::begin(1) + wire::params(1, scgi_vars("POST", "/p", "4")) +
               wire::request(2, {{"X", "y"}}) + wire::stdin_(1, "abcd"));
        auto records = wire::parse(c.read_to_end());
        CHECK(wire::end_status_of(records, 2) == 1);  // FCGI_CANT_MPX_CONN
        CHECK(wire::stdout_of(records, 2).empty());
        CHECK(wire::end_status_of(records, 1) == 0);
        CHECK(split(wire::stdout_of(records, 1)).body.find("len=4 body=abcd") != std::string::npos);
    }
}

TEST_CASE("proxy session: fastcgi limits, aborts and malformed records", "[fastcgi][session]") {
    corgi::server_limits limits;
    limits.max_body_bytes = 1000;
    proxy_server s(limits);
    SECTION("declared body over the limit: 413") {
        client c(s.fastcgi_port);
        c.send(wire::begin(1) + wire::params(1, request_vars("POST", "/p", "5000")));
        auto records = wire::parse(c.read_until_end_request(1));
        CHECK(split(wire::stdout_of(records, 1)).head.rfind("Status: 413 ", 0) == 0);
    }
    SECTION("STDIN longer than CONTENT_LENGTH: the handler gets CONTENT_LENGTH bytes, then close") {
        // Bytes past CONTENT_LENGTH are not the body (as over uwsgi and SCGI); even with
        // FCGI_KEEP_CONN the connection closes rather than read a surplus of any size.
        client c(s.fastcgi_port);
        c.send(wire::begin(1, 1, true) + wire::params(1, request_vars("POST", "/p", "500")) +
               wire::stdin_(1, std::string(500, 'a') + std::string(3000, 'x'), 700));
        std::string bytes = c.read_to_end();
        CHECK(c.eof());
        auto records = wire::parse(bytes);
        CHECK(wire::end_status_of(records, 1) == 0);
        auto reply = split(wire::stdout_of(records, 1));
        CHECK(reply.head.rfind("Status: 200 ", 0) == 0);
        CHECK(reply.body.find("len=500 body=aaaa") != std::string::npos);
    }
    SECTION("STDIN shorter than CONTENT_LENGTH: 400, and the kept connection goes on") {
        client c(s.fastcgi_port);
        c.send(wire::request(1, request_vars("POST", "/p", "100"), "only ten..", true));
        auto records = wire::parse(c.read_until_end_request(1));
        CHECK(split(wire::stdout_of(records, 1)).head.rfind("Status: 400 ", 0) == 0);
        c.send(wire::request(1, request_vars("GET", "/a%20b?x=1"), {}, true));
        CHECK(split(wire::stdout_of(wire::parse(c.read_until_end_request(1)), 1)).body ==
              expected_for("fastcgi"));
    }
    SECTION("ABORT_REQUEST while the handler waits for the body: END_REQUEST, no output") {
        client c(s.fastcgi_port);
        c.send(wire::begin(1, 1, true) + wire::params(1, request_vars("POST", "/p", "10")) +
               wire::record(5, 1, "part"));
        std::this_thread::sleep_for(50ms);
        c.send(wire::record(2, 1, {}));
        auto records = wire::parse(c.read_until_end_request(1));
        CHECK(wire::end_status_of(records, 1) == 0);
        CHECK(wire::stdout_of(records, 1).empty());
        // The connection goes on (FCGI_KEEP_CONN).
        c.send(wire::request(1, request_vars("GET", "/a%20b?x=1"), {}, true));
        CHECK(split(wire::stdout_of(wire::parse(c.read_until_end_request(1)), 1)).body ==
              expected_for("fastcgi"));
    }
    SECTION("a record of another protocol version closes the connection") {
        client c(s.fastcgi_port);
        c.send(wire::record(1, 1, std::string(8, '\0'), 0, 2));
        CHECK(c.read_to_end().empty());
        CHECK(c.eof());
    }
    SECTION("STDIN before the end of PARAMS closes the connection") {
        client c(s.fastcgi_port);
        c.send(wire::begin(1) + wire::record(4, 1, wire::pairs({{"REQUEST_METHOD", "GET"}})) +
               wire::record(5, 1, "x"));
        CHECK(c.read_to_end().empty());
        CHECK(c.eof());
    }
}

TEST_CASE("proxy session: fastcgi head trickled slower than the header timeout is dropped",
          "[fastcgi][session]") {
    // The header timeout bounds the whole head, not each read: a peer sending a byte at a time
    // (or records of another request id) cannot hold a connection open.
    corgi::server_limits limits;
    limits.header_timeout = 300ms;
    proxy_server s(limits);
    SECTION("PARAMS a byte at a time") {
        client c(s.fastcgi_port);
        REQUIRE(c.send(wire::begin(1)));
        std::string params = wire::params(1, request_vars("GET", "/" + std::string(200, 'a')));
        std::size_t sent = 0;
        for (; sent < 60 && c.send(params.substr(sent, 1)); ++sent)
            std::this_thread::sleep_for(50ms);  // 3 s in all, ten times the header timeout
        CHECK(sent < 60);
        c.read_to_end();
        CHECK(c.eof());
    }
    SECTION("records of another request id") {
        client c(s.fastcgi_port);
        std::size_t sent = 0;
        for (; sent < 60 && c.send(wire::record(5, 7, "x")); ++sent)
            std::this_thread::sleep_for(50ms);
        CHECK(sent < 60);
        c.read_to_end();
        CHECK(c.eof());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Response framing: a C++ handler's body that disagrees with its Content-Length, on every protocol.
// Longer: exactly the declared bytes, then the end of the connection (nothing a pipelined client
// could take for the next response). Shorter: the bytes there are, then the end at once (a
// truncation the peer sees, never a hang).

TEST_CASE(
    "response framing: http sends exactly the declared length, pipelined requests see no extra "
    "byte",
    "[http][framing][session]") {
    proxy_server s;
    for (const char* path : {"/lie-long", "/lie-stream-long"}) {
        INFO(path);
        client c(s.http_port);
        const std::string get = std::string("GET ") + path + " HTTP/1.1\r\nHost: t\r\n\r\n";
        REQUIRE(c.send(get + get));  // pipelined: the second must not be answered with leftovers
        std::string bytes = c.read_to_end();
        CHECK(c.eof());
        auto reply = split(bytes);
        CHECK(reply.head.find("Content-Length: 5\r\n") != std::string::npos);
        // Known before the head went out for a body in memory; a stream's head is on its way before
        // the excess shows, and the connection ends all the same.
        if (std::string_view(path) == "/lie-long")
            CHECK(reply.head.find("Connection: close\r\n") != std::string::npos);
        CHECK(reply.body == "01234");
    }
}

TEST_CASE("response framing: http closes right after a body shorter than declared",
          "[http][framing][session]") {
    proxy_server s;
    for (const char* path : {"/lie-short", "/lie-stream-short"}) {
        INFO(path);
        client c(s.http_port);
        REQUIRE(c.send(std::string("GET ") + path + " HTTP/1.1\r\nHost: t\r\n\r\n"));
        const auto start = std::chrono::steady_clock::now();
        std::string bytes = c.read_to_end();
        CHECK(c.eof());  // closed, not left for the keep-alive timeout
        CHECK(std::chrono::steady_clock::now() - start < 4s);
        auto reply = split(bytes);
        CHECK(reply.head.find("Content-Length: 10\r\n") != std::string::npos);
        CHECK(reply.body == "01234");
    }
}

TEST_CASE("response framing: uwsgi and scgi send the declared length at most, shorter ends at once",
          "[uwsgi][scgi][framing][session]") {
    proxy_server s;
    for (const char* path : {"/lie-long", "/lie-stream-long", "/lie-short", "/lie-stream-short"}) {
        INFO(path);
        const bool longer = std::string_view(path).ends_with("-long");
        {
            client c(s.uwsgi_port);
            REQUIRE(c.send(corgi::test::uwsgi_packet(request_vars("GET", path))));
            auto reply = split(c.read_to_end());
            CHECK(c.eof());
            CHECK(reply.head.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
            CHECK(reply.head.find(longer ? "Content-Length: 5\r\n" : "Content-Length: 10\r\n") !=
                  std::string::npos);
            CHECK(reply.body == "01234");
        }
        {
            client c(s.scgi_port);
            REQUIRE(c.send(corgi::test::scgi_packet(scgi_vars("GET", path))));
            auto reply = split(c.read_to_end());
            CHECK(c.eof());
            CHECK(reply.head.rfind("Status: 200 OK\r\n", 0) == 0);
            CHECK(reply.body == "01234");
        }
    }
}

TEST_CASE("response framing: fastcgi cuts a long body and leaves a short one without END_REQUEST",
          "[fastcgi][framing][session]") {
    proxy_server s;
    for (const char* path : {"/lie-long", "/lie-stream-long", "/lie-short", "/lie-stream-short"}) {
        INFO(path);
        const bool longer = std::string_view(path).ends_with("-long");
        client c(s.fastcgi_port);
        REQUIRE(c.send(wire::request(1, request_vars("GET", path), {}, true)));
        std::string bytes = longer ? c.read_until_end_request(1) : c.read_to_end();
        auto records = wire::parse(bytes);
        auto reply = split(wire::stdout_of(records, 1));
        CHECK(reply.body == "01234");
        if (longer) {
            CHECK(wire::end_status_of(records, 1) == 0);
            // The declared bytes made a complete response; the connection still ends after it.
            c.read_to_end();
            CHECK(c.eof());
        } else {
            CHECK(c.eof());
            CHECK(wire::end_status_of(records, 1) ==
                  -1);  // the web server sees a truncated response
        }
    }
}

// Lingering close: a proxy writes the whole request before it reads the answer. A body refused
// with 413 is read and dropped after the answer, so the connection ends with a FIN; closing with
// the body unread would reset it, and the proxy could lose the 413.
TEST_CASE("proxy session: a refused body is drained after the 413, never reset",
          "[uwsgi][scgi][fastcgi][session][lingering]") {
    corgi::server_limits limits;
    limits.max_body_bytes = 1000;
    limits.lingering_timeout = std::chrono::seconds(1);
    proxy_server s(limits);
    const std::string body(512 * 1024, 'x');
    const std::string length = std::to_string(body.size());
    SECTION("uwsgi") {
        client c(s.uwsgi_port);
        c.send(corgi::test::uwsgi_packet(request_vars("POST", "/post", length), body));
        auto reply = split(c.read_to_end());
        CHECK(reply.head.rfind("HTTP/1.1 413 ", 0) == 0);
        CHECK(c.eof());
        CHECK_FALSE(c.reset());
    }
    SECTION("scgi") {
        client c(s.scgi_port);
        c.send(corgi::test::scgi_packet(scgi_vars("POST", "/post", length), body));
        auto reply = split(c.read_to_end());
        CHECK(reply.head.rfind("Status: 413 ", 0) == 0);
        CHECK(c.eof());
        CHECK_FALSE(c.reset());
    }
    SECTION("fastcgi") {
        client c(s.fastcgi_port);
        c.send(wire::begin(1) + wire::params(1, request_vars("POST", "/p", length)) +
               wire::stdin_(1, body));
        auto records = wire::parse(c.read_to_end());
        CHECK(split(wire::stdout_of(records, 1)).head.rfind("Status: 413 ", 0) == 0);
        CHECK(wire::end_status_of(records, 1) == 0);
        CHECK(c.eof());
        CHECK_FALSE(c.reset());
    }
}

// A graceful stop closes listeners and idle keep-alive connections, but a connection accepted
// before it belongs to a client that has sent, or is sending, its request: closing it would lose
// that request (nginx connects to a unix socket, the stop or a reload begins, nginx writes its
// request and gets a reset: a 502). Each protocol serves it. Unix sockets, because a TCP
// listener defers the accept until the first bytes (TCP_DEFER_ACCEPT): such a connection is not
// accepted before the request arrives.
TEST_CASE("graceful stop: a connection accepted before it is served, an idle one is closed",
          "[session][shutdown]") {
    auto s = std::make_unique<proxy_server>(corgi::server_limits{}, true);
    client fresh_http(s->http_path), fresh_uwsgi(s->uwsgi_path), fresh_scgi(s->scgi_path),
        fresh_fastcgi(s->fastcgi_path);
    // Idle: each has served one request on a connection it keeps.
    client idle_http(s->http_port), idle_fastcgi(s->fastcgi_port);
    // Connected, and never a byte (a preconnect, a port check): it must not hold the stop for the
    // grace period (30 s here), only for connection::first_bytes_grace.
    client silent(s->uwsgi_path);
    REQUIRE(idle_http.send("GET /noread HTTP/1.1\r\nHost: t\r\n\r\n"));
    REQUIRE(idle_fastcgi.send(wire::request(1, request_vars("GET", "/noread"), {}, true)));
    REQUIRE(wire::end_status_of(wire::parse(idle_fastcgi.read_until_end_request(1)), 1) == 0);
    std::this_thread::sleep_for(200ms);  // everything accepted, the HTTP answer sent
    const auto stopped_at = std::chrono::steady_clock::now();
    s->srv.stop();
    std::this_thread::sleep_for(300ms);  // draining: a request arriving now found its connection
                                         // open

    REQUIRE(fresh_http.send("GET /a%20b?x=1 HTTP/1.1\r\nHost: example\r\n\r\n"));
    auto http = split(fresh_http.read_to_end());
    CHECK(fresh_http.eof());
    CHECK(http.head.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(http.head.find("Connection: close\r\n") != std::string::npos);
    CHECK(http.body.find("GET |/a b?x=1 proto=http") == 0);

    REQUIRE(fresh_uwsgi.send(corgi::test::uwsgi_packet(request_vars("GET", "/a%20b?x=1"))));
    CHECK(split(fresh_uwsgi.read_to_end()).body == expected_for("uwsgi"));
    REQUIRE(fresh_scgi.send(corgi::test::scgi_packet(scgi_vars("GET", "/a%20b?x=1"))));
    CHECK(split(fresh_scgi.read_to_end()).body == expected_for("scgi"));
    REQUIRE(fresh_fastcgi.send(wire::request(1, request_vars("GET", "/a%20b?x=1"), {}, true)));
    auto records = wire::parse(fresh_fastcgi.read_until_end_request(1));
    CHECK(wire::end_status_of(records, 1) == 0);
    CHECK(split(wire::stdout_of(records, 1)).body == expected_for("fastcgi"));

    // The idle ones were closed when the stop began, without an answer to anything.
    const std::string http_rest = idle_http.read_to_end();
    CHECK(idle_http.eof());
    CHECK(http_rest.find("unread") != std::string::npos);  // its one answer, nothing after it
    CHECK(http_rest.find("HTTP/1.1", 1) == std::string::npos);
    CHECK(idle_fastcgi.read_to_end().empty());
    CHECK(idle_fastcgi.eof());
    CHECK(silent.read_to_end().empty());
    CHECK(silent.eof());
    const std::string socket_file = s->http_path;
    s.reset();  // run() returns: nothing is left open
    CHECK(std::chrono::steady_clock::now() - stopped_at < 5s);  // not the 10 s header timeout
    CHECK_FALSE(std::filesystem::exists(socket_file));
}

// bind_listener + server::adopt: the seam a pre-fork master uses (its children adopt the socket
// the master bound). The process model itself is tested in tests/integration/process_model_test.
TEST_CASE("server: adopt serves on a socket bound by bind_listener", "[server][adopt]") {
    corgi::log::set_access_log_enabled(false);
    corgi::bound_listener b = corgi::bind_listener(corgi::listen_address::parse("127.0.0.1:0"));
    REQUIRE(b.fd >= 0);
    REQUIRE(b.address.port != 0);
    corgi::server_options o;
    o.io_threads = 1;
    o.handle_signals = false;
    corgi::server srv(o);
    srv.set_handler(describe_request);
    corgi::listen_address adopted = srv.adopt(b.fd, corgi::protocols::http());
    CHECK(adopted.port == b.address.port);
    CHECK(adopted.host == "127.0.0.1");
    std::thread thread([&] { srv.run(); });
    {
        client c(b.address.port);
        REQUIRE(c.send("GET /adopted HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        std::string reply = c.read_to_end();
        CHECK(reply.starts_with("HTTP/1.1 200"));
        CHECK(reply.find("|/adopted?") != std::string::npos);
        CHECK(reply.find("proto=http") != std::string::npos);
    }
    srv.stop();
    thread.join();
}

TEST_CASE("server: an adopted unix socket's file is left to whoever bound it", "[server][adopt]") {
    const std::string path = std::filesystem::temp_directory_path().string() + "/corgi-adopt-" +
                             std::to_string(::getpid()) + ".sock";
    corgi::bound_listener b = corgi::bind_listener(corgi::listen_address::parse("unix:" + path));
    {
        corgi::server_options o;
        o.io_threads = 1;
        o.handle_signals = false;
        corgi::server srv(o);
        corgi::listen_address adopted = srv.adopt(b.fd, corgi::protocols::http());
        CHECK(adopted.is_unix);
        CHECK(adopted.path == path);
        std::thread thread([&] { srv.run(); });
        srv.stop();
        thread.join();
    }
    CHECK(std::filesystem::exists(path));  // a server's own listen() would have removed it
    std::filesystem::remove(path);
}

TEST_CASE("server: adopt refuses a descriptor that is not a listening socket", "[server][adopt]") {
    corgi::server_options o;
    o.io_threads = 1;
    o.handle_signals = false;
    corgi::server srv(o);
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    CHECK_THROWS_AS(srv.adopt(fd, corgi::protocols::http()), std::system_error);
    ::close(fd);
}
