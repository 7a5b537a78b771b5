// Bad input, limits and timeouts: each case gets its error status (or a close), and the server
// keeps answering fresh connections afterwards.
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <thread>

using namespace corgi::test;

namespace {

// Sends `raw` on a fresh connection and expects `status`, then the connection to be closed.
void expect_rejected(std::uint16_t port, const std::string& raw, int status) {
    auto c = http_client::tcp(port);
    REQUIRE(c.send(raw));
    auto r = c.read_response();
    INFO("request: " << raw);
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == status);
    CHECK(r->header("Connection") == "close");
    CHECK(c.wait_closed(3s));
    CHECK(answers(port));
}

}  // namespace

TEST_CASE("http bad input: malformed request lines get 400", "[http][bad_input]") {
    corgi_server srv;
    expect_rejected(srv.port(), "GARBAGE\r\n\r\n", 400);
    expect_rejected(srv.port(), "GET /plaintext\r\nHost: test\r\n\r\n", 400);
    expect_rejected(srv.port(), "GET /plaintext HTTP/1.1 extra\r\nHost: test\r\n\r\n", 400);
    expect_rejected(srv.port(), "GET plaintext HTTP/1.1\r\nHost: test\r\n\r\n", 400);
    expect_rejected(srv.port(), "GET /plaintext HTTP/1.1\r\nHost: test\r\nNo colon here\r\n\r\n",
                    400);
}

TEST_CASE("http bad input: HTTP/1.1 without Host gets 400", "[http][bad_input]") {
    corgi_server srv;
    expect_rejected(srv.port(), "GET /plaintext HTTP/1.1\r\n\r\n", 400);
    expect_rejected(srv.port(), "GET /plaintext HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
}

TEST_CASE("http bad input: oversized headers get 431", "[http][bad_input]") {
    corgi_server srv({"--max-header-bytes", "2048"});
    // Just under the limit is fine.
    auto ok = http_client::tcp(srv.port());
    REQUIRE(ok.send(get_request("/plaintext", "X-Fill: " + std::string(1500, 'a') + "\r\n")));
    auto fine = ok.read_response();
    REQUIRE(fine);
    CHECK(fine->status == 200);
    // One big header, and many small ones.
    expect_rejected(srv.port(),
                    get_request("/plaintext", "X-Fill: " + std::string(4000, 'a') + "\r\n"), 431);
    std::string many;
    for (int i = 0; i < 200; ++i) many += "X-H" + std::to_string(i) + ": value\r\n";
    expect_rejected(srv.port(), get_request("/plaintext", many), 431);
}

TEST_CASE("http bad input: an oversized Content-Length body gets 413", "[http][bad_input]") {
    corgi_server srv({"--max-body-bytes", "100"});
    auto ok = http_client::tcp(srv.port());
    REQUIRE(ok.send("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n" +
                    std::string(100, 'b')));
    auto fine = ok.read_response();
    REQUIRE(fine);
    CHECK(fine->status == 200);
    CHECK(fine->body.size() == 100);
    expect_rejected(srv.port(),
                    "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" +
                        std::string(1000, 'b'),
                    413);
}

TEST_CASE("http bad input: an oversized chunked body gets 413", "[http][bad_input]") {
    corgi_server srv({"--max-body-bytes", "100"});
    expect_rejected(srv.port(),
                    "POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3c\r\n" +
                        std::string(60, 'c') +
                        "\r\n"
                        "3c\r\n" +
                        std::string(60, 'c') + "\r\n0\r\n\r\n",
                    413);
}

TEST_CASE("http bad input: Content-Length with Transfer-Encoding gets 400 and a close",
          "[http][bad_input]") {
    corgi_server srv;
    // Whatever the order, the smuggled request after the body must never be answered.
    const std::string smuggled = "GET /hello/smuggled HTTP/1.1\r\nHost: test\r\n\r\n";
    for (const std::string& headers :
         {std::string("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
          std::string("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n")}) {
        auto c = http_client::tcp(srv.port());
        REQUIRE(c.send("POST /upload HTTP/1.1\r\nHost: test\r\n" + headers + "\r\n0\r\n\r\n" +
                       smuggled));
        auto r = c.read_response();
        INFO(headers);
        INFO(c.error());
        REQUIRE(r);
        CHECK(r->status == 400);
        CHECK(c.wait_closed(3s));
        CHECK(c.drained().find("smuggled") == std::string::npos);
    }
    CHECK(answers(srv.port()));
}

TEST_CASE("http bad input: conflicting Content-Lengths get 400", "[http][bad_input]") {
    corgi_server srv;
    expect_rejected(srv.port(),
                    "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: "
                    "6\r\n\r\nhello!",
                    400);
    expect_rejected(srv.port(),
                    "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 5, 6\r\n\r\nhello!",
                    400);
    expect_rejected(srv.port(), "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: -1\r\n\r\n",
                    400);
}

TEST_CASE("http bad input: an unsupported Transfer-Encoding gets 501", "[http][bad_input]") {
    corgi_server srv;
    expect_rejected(srv.port(),
                    "POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
}

TEST_CASE("http bad input: an unknown HTTP version is refused", "[http][bad_input]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send("GET /plaintext HTTP/2.0\r\nHost: test\r\n\r\n"));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK((r->status == 505 || r->status == 400));
    CHECK(c.wait_closed(3s));
    CHECK(answers(srv.port()));
}

TEST_CASE("http bad input: a client gone mid-request does not hurt the server",
          "[http][bad_input]") {
    corgi_server srv;
    {
        auto c = http_client::tcp(srv.port());
        REQUIRE(c.send("GET /plaintext HTTP/1.1\r\nHost: te"));
    }
    {
        auto c = http_client::tcp(srv.port());
        REQUIRE(c.send("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n" +
                       std::string(1000, 'x')));
        std::this_thread::sleep_for(100ms);
    }
    {
        auto c = http_client::tcp(srv.port());
        REQUIRE(c.send(
            "POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc"));
        std::this_thread::sleep_for(100ms);
    }
    CHECK(answers(srv.port()));
    CHECK(srv.process().running());
}

TEST_CASE("http bad input: a client gone mid-response does not hurt the server",
          "[http][bad_input]") {
    corgi_server srv;
    for (int i = 0; i < 3; ++i) {
        auto c = http_client::tcp(srv.port());
        REQUIRE(c.send(get_request("/big?bytes=50000000")));
        REQUIRE(c.read_at_least(1000));  // the response is under way
    }
    {
        auto c = http_client::tcp(srv.port());
        REQUIRE(c.send(get_request("/stream?chunks=100000")));
        REQUIRE(c.read_at_least(1000));
    }
    CHECK(answers(srv.port()));
    CHECK(srv.process().running());
}

TEST_CASE("http timeouts: a slowloris header is cut off by the header timeout",
          "[http][timeouts]") {
    corgi_server srv({"--header-timeout", "1"});
    auto c = http_client::tcp(srv.port());
    const std::string partial = "GET /plaintext HTTP/1.1\r\nHost: test\r\nX-Slow: ";
    auto start = clock::now();
    bool closed = false;
    // One byte every 100 ms: each read makes progress, only the timeout for the whole header can
    // stop it.
    for (std::size_t i = 0; clock::now() - start < 4s; ++i) {
        if (!c.send(std::string(1, i < partial.size() ? partial[i] : 'z'))) {
            closed = true;
            break;
        }
        if (c.wait_closed(100ms)) {
            closed = true;
            break;
        }
    }
    auto elapsed = clock::now() - start;
    CHECK(closed);
    CHECK(elapsed < 3s);
    // A 408 is allowed before the close; nothing else.
    auto got = c.drained();
    CHECK((got.empty() || got.starts_with("HTTP/1.1 408")));
    CHECK(answers(srv.port()));
}

TEST_CASE("http timeouts: an idle keep-alive connection is closed", "[http][timeouts]") {
    corgi_server srv({"--keep-alive-timeout", "1"});
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send(get_request("/plaintext")));
    REQUIRE(c.read_response());
    auto start = clock::now();
    CHECK(c.wait_closed(4s));
    CHECK(clock::now() - start < 3s);
    CHECK(c.drained().empty());
    // A connection that never sends anything is closed too.
    auto silent = http_client::tcp(srv.port());
    CHECK(silent.wait_closed(4s));
}

TEST_CASE("http timeouts: the keep-alive timeout applies after a slow request too",
          "[http][timeouts]") {
    corgi_server srv({"--keep-alive-timeout", "1"});
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send(get_request("/sleep?ms=1500")));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 200);
    // The slow request is not cut by the idle timeout, and the idle time after it is.
    auto start = clock::now();
    CHECK(c.wait_closed(5s));
    CHECK(clock::now() - start < 3s);
}

TEST_CASE("http timeouts: a stalled request body gets 408", "[http][timeouts]") {
    corgi_server srv({"--body-timeout", "1"});
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789"));
    auto start = clock::now();
    auto r = c.read_response(false, 4s);
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 408);
    CHECK(clock::now() - start < 3s);
    CHECK(c.wait_closed(3s));
    CHECK(answers(srv.port()));
}

TEST_CASE("http timeouts: a client that stops reading is cut off by the write timeout",
          "[http][timeouts]") {
    corgi_server srv({"--write-timeout", "1"});
    auto c = http_client::tcp(srv.port());
    constexpr std::size_t size = 256u << 20;  // far more than the socket buffers hold
    REQUIRE(c.send(get_request("/big?bytes=" + std::to_string(size))));
    std::this_thread::sleep_for(2500ms);  // not reading: the server's write stalls
    CHECK(answers(srv.port()));           // others are served meanwhile
    // The server gave up: what arrived ends early and the connection is closed, not kept alive.
    CHECK(c.wait_closed(4s));
    CHECK(c.drained().size() < size);
    CHECK(answers(srv.port()));
}

TEST_CASE("http limits: connections beyond --max-connections are closed at once",
          "[http][limits]") {
    corgi_server srv({"--max-connections", "2", "--io-threads", "2"});
    auto a = http_client::tcp(srv.port());
    auto b = http_client::tcp(srv.port());
    // Both are served (so the server has counted them) and stay open.
    for (auto* c : {&a, &b}) {
        REQUIRE(c->send(get_request("/plaintext")));
        auto r = c->read_response();
        REQUIRE(r);
        CHECK(r->status == 200);
    }
    auto third = http_client::tcp(srv.port());  // the kernel accepts; the server closes it
    third.send(get_request("/plaintext"));
    CHECK(third.wait_closed(3s));
    CHECK(third.drained().find("Hello, World!") == std::string::npos);
    for (auto* c : {&a, &b}) {
        REQUIRE(c->send(get_request("/hello/still")));
        auto r = c->read_response();
        INFO(c->error());
        REQUIRE(r);
        CHECK(r->body == "Hello, still!\n");
    }
    // Freed slots are reused.
    a.close();
    b.close();
    bool served = false;
    for (auto deadline = clock::now() + 3s; !served && clock::now() < deadline;) {
        served = answers(srv.port());
        if (!served) std::this_thread::sleep_for(50ms);
    }
    CHECK(served);
}
