// The server process as a whole: graceful shutdown on SIGTERM/SIGINT, listeners (unix sockets,
// IPv6, several at once), io threads, the access log, and the examples/hello_world program.
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>
#include <regex>
#include <thread>

using namespace corgi::test;

namespace {

bool file_exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

// Polls until connecting to the port is refused (true) or the timeout passes.
bool refuses_connections(std::uint16_t port, clock::duration timeout) {
    auto deadline = clock::now() + timeout;
    for (;;) {
        int error = 0;
        auto c = http_client::try_tcp(port, "127.0.0.1", &error);
        if (!c && error == ECONNREFUSED) return true;
        if (clock::now() >= deadline) return false;
        std::this_thread::sleep_for(20ms);
    }
}

// A unix socket file nobody listens on, as a crashed process leaves it.
void make_stale_socket(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 1) == 0);
    ::close(fd);  // the file stays behind
}

void graceful_shutdown_case(int sig) {
    corgi_server srv({"--io-threads", "2"});
    const auto port = srv.port();
    auto busy = http_client::tcp(port);
    auto idle = http_client::tcp(port);
    REQUIRE(idle.send(get_request("/plaintext")));
    REQUIRE(idle.read_response());
    REQUIRE(busy.send(get_request("/sleep?ms=1500")));
    std::this_thread::sleep_for(300ms);  // the request is in the handler now
    auto signalled = clock::now();
    srv.process().send_signal(sig);

    // New connections are refused while the in-flight request finishes; idle ones are closed.
    CHECK(refuses_connections(port, 1s));
    CHECK(idle.wait_closed(1s));
    auto r = busy.read_response(false, 4s);
    INFO(busy.error());
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "slept 1500 ms\n");
    CHECK(r->header("Connection") == "close");
    CHECK(busy.wait_closed(2s));

    auto status = srv.process().wait_exit(4s);
    REQUIRE(status);
    CHECK(*status == 0);
    CHECK(clock::now() - signalled < 5s);
    CHECK(refuses_connections(port, 0s));
}

}  // namespace

TEST_CASE("lifecycle: SIGTERM finishes in-flight requests, refuses new ones and exits 0",
          "[lifecycle]") {
    graceful_shutdown_case(SIGTERM);
}

TEST_CASE("lifecycle: SIGINT shuts down gracefully too", "[lifecycle]") {
    graceful_shutdown_case(SIGINT);
}

TEST_CASE("lifecycle: an idle server exits at once on SIGTERM", "[lifecycle]") {
    corgi_server srv;
    REQUIRE(answers(srv.port()));
    srv.process().send_signal(SIGTERM);
    auto status = srv.process().wait_exit(3s);
    REQUIRE(status);
    CHECK(*status == 0);
}

TEST_CASE("lifecycle: the grace period bounds a request that takes too long", "[lifecycle]") {
    corgi_server srv({"--graceful-timeout", "1"});
    auto busy = http_client::tcp(srv.port());
    REQUIRE(busy.send(get_request("/sleep?ms=20000")));
    std::this_thread::sleep_for(200ms);
    auto signalled = clock::now();
    srv.process().send_signal(SIGTERM);
    auto status = srv.process().wait_exit(5s);
    REQUIRE(status);
    CHECK(*status == 0);
    CHECK(clock::now() - signalled < 4s);
    CHECK(busy.wait_closed(1s));
    CHECK(busy.drained().find("slept") == std::string::npos);
}

TEST_CASE("listeners: a unix socket serves HTTP and is removed at exit", "[listeners]") {
    temp_file sock("http.sock");
    corgi_server srv({"--http", "unix:" + sock.path});
    REQUIRE(srv.addresses().at(0) == "unix:" + sock.path);
    auto c = http_client::unix_socket(sock.path);
    REQUIRE(c.send(get_request("/hello/unix")));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "Hello, unix!\n");
    c.close();
    srv.process().send_signal(SIGTERM);
    REQUIRE(srv.process().wait_exit(4s) == 0);
    CHECK_FALSE(file_exists(sock.path));
}

TEST_CASE("listeners: a stale unix socket file is replaced", "[listeners]") {
    temp_file sock("stale.sock");
    make_stale_socket(sock.path);
    REQUIRE(file_exists(sock.path));
    corgi_server srv({"--http", "unix:" + sock.path});
    auto c = http_client::unix_socket(sock.path);
    REQUIRE(c.send(get_request("/plaintext")));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 200);
}

TEST_CASE("listeners: a unix socket another corgi serves on is an error and stays intact",
          "[listeners]") {
    temp_file sock("live.sock");
    corgi_server first({"--http", "unix:" + sock.path});
    auto second = run({corgi_binary(), "--http", "unix:" + sock.path}, {}, 5s);
    CHECK(second.exit_code != 0);
    CHECK(second.exit_code != -1);  // it exits by itself
    CHECK(second.err.find(sock.path) != std::string::npos);
    // The loser must not have removed the winner's socket file.
    CHECK(file_exists(sock.path));
    auto c = http_client::try_unix_socket(sock.path);
    REQUIRE(c);
    REQUIRE(c->send(get_request("/plaintext")));
    auto r = c->read_response();
    REQUIRE(r);
    CHECK(r->status == 200);
}

TEST_CASE("listeners: a TCP port in use is an error naming the address", "[listeners]") {
    corgi_server first;
    std::string address = "127.0.0.1:" + std::to_string(first.port());
    auto second = run({corgi_binary(), "--http", address}, {}, 5s);
    CHECK(second.exit_code != 0);
    CHECK(second.exit_code != -1);
    CHECK(second.err.find(address) != std::string::npos);
    CHECK(answers(first.port()));
}

TEST_CASE("listeners: IPv6 loopback", "[listeners]") {
    if (!has_ipv6_loopback()) {
        WARN(
            "this host has no IPv6 loopback (cannot bind [::1]); the IPv6 listener is not "
            "exercised");
        return;
    }
    corgi_server srv({"--http", "[::1]:0"});
    REQUIRE(srv.addresses().at(0).starts_with("[::1]:"));
    auto c = http_client::tcp(srv.port(), "::1");
    REQUIRE(c.send(get_request("/hello/six")));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->body == "Hello, six!\n");
}

TEST_CASE("listeners: two --http listeners serve at once", "[listeners]") {
    corgi_server srv({"--http", "127.0.0.1:0", "--http", "127.0.0.1:0"}, {}, 2);
    REQUIRE(srv.port(0) != 0);
    REQUIRE(srv.port(1) != 0);
    CHECK(srv.port(0) != srv.port(1));
    auto a = http_client::tcp(srv.port(0));
    auto b = http_client::tcp(srv.port(1));
    REQUIRE(a.send(get_request("/hello/a")));
    REQUIRE(b.send(get_request("/hello/b")));
    auto ra = a.read_response();
    auto rb = b.read_response();
    REQUIRE(ra);
    REQUIRE(rb);
    CHECK(ra->body == "Hello, a!\n");
    CHECK(rb->body == "Hello, b!\n");
}

TEST_CASE("io threads: slow handlers do not block others, with 1 and with 4 io threads",
          "[io_threads]") {
    for (const char* threads : {"1", "4"}) {
        INFO("--io-threads " << threads);
        corgi_server srv({"--io-threads", threads});
        std::vector<http_client> clients;
        for (int i = 0; i < 8; ++i) clients.push_back(http_client::tcp(srv.port()));
        auto start = clock::now();
        for (auto& c : clients) REQUIRE(c.send(get_request("/sleep?ms=600")));
        // While they sleep, a quick request is answered at once (handlers wait on timers, not
        // threads).
        auto quick = fetch(srv.port(), "/plaintext");
        REQUIRE(quick);
        CHECK(quick->status == 200);
        CHECK(clock::now() - start < 500ms);
        for (auto& c : clients) {
            auto r = c.read_response();
            INFO(c.error());
            REQUIRE(r);
            CHECK(r->body == "slept 600 ms\n");
        }
        // Eight 600 ms sleeps one after another would take 4.8 s; concurrently they take a little
        // over 0.6 s.
        CHECK(clock::now() - start < 2500ms);
    }
}

TEST_CASE("access log: one common log format line per request on stdout", "[access_log]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send(get_request("/plaintext")));
    REQUIRE(c.read_response());
    REQUIRE(c.send(get_request("/no/such/page?x=1")));
    REQUIRE(c.read_response());
    REQUIRE(c.send(get_request("/plaintext", {}, "HEAD")));
    REQUIRE(c.read_response(true));
    REQUIRE(srv.process().wait_for_out("HEAD", 3s));
    auto lines = lines_of(srv.process().out());
    while (!lines.empty() && lines.back().empty()) lines.pop_back();
    REQUIRE(lines.size() == 3);
    const std::string time = R"(\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\])";
    // The request id ends the line (a field common-log parsers ignore), the one sent back as
    // X-Request-Id.
    const std::string id = R"( [0-9a-f]{32})";
    CHECK(std::regex_match(lines[0], std::regex(R"(127\.0\.0\.1 - - )" + time +
                                                R"( "GET /plaintext HTTP/1\.1" 200 13)" + id)));
    CHECK(std::regex_match(lines[1],
                           std::regex(R"(127\.0\.0\.1 - - )" + time +
                                      R"( "GET /no/such/page\?x=1 HTTP/1\.1" 404 \d+)" + id)));
    CHECK(std::regex_match(lines[2], std::regex(R"(127\.0\.0\.1 - - )" + time +
                                                R"( "HEAD /plaintext HTTP/1\.1" 200 (-|0))" + id)));
    // Errors go to stderr, never into the access log.
    CHECK(srv.process().err().find("GET /plaintext") == std::string::npos);
}

TEST_CASE("access log: rejected requests are logged too", "[access_log]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send("GET /plaintext HTTP/1.1\r\n\r\n"));  // no Host
    auto r = c.read_response();
    REQUIRE(r);
    REQUIRE(r->status == 400);
    CHECK(srv.process().wait_for_out("\" 400 ", 3s));
}

TEST_CASE("access log: --disable-logging writes none", "[access_log]") {
    corgi_server srv({"--disable-logging"});
    for (int i = 0; i < 3; ++i) REQUIRE(answers(srv.port()));
    srv.process().send_signal(SIGTERM);  // flushes whatever would have been buffered
    REQUIRE(srv.process().wait_exit(4s) == 0);
    CHECK(srv.process().out().find("/plaintext") == std::string::npos);
    CHECK(srv.process().out().empty());
}

TEST_CASE("examples: hello_world serves /hello/<name>", "[examples]") {
    child_process hello({required_env("CORGI_HELLO_WORLD"), "127.0.0.1:0"});
    auto addresses = wait_for_addresses(hello, "hello_world: serving on ", 1);
    auto port = port_of(addresses.at(0));
    REQUIRE(port != 0);
    auto c = http_client::tcp(port);
    REQUIRE(c.send(get_request("/hello/corgi")));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "Hello, corgi!\n");
    REQUIRE(c.send(get_request("/")));
    auto index = c.read_response();
    REQUIRE(index);
    CHECK(index->body == "Hello, World!");
    REQUIRE(c.send(get_request("/nope")));
    auto missing = c.read_response();
    REQUIRE(missing);
    CHECK(missing->status == 404);
    hello.send_signal(SIGTERM);
    CHECK(hello.wait_exit(4s) == 0);
}
