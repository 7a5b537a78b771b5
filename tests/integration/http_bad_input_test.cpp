// Bad input, limits and timeouts: each case gets its error status (or a close), and the server
// keeps answering fresh connections afterwards.
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <csignal>
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

// Lingering close: a request refused while it is still arriving is answered in full, then the
// connection ends with a FIN, never a reset (which would let the kernel throw the answer away).
// Each client writes its whole request before it reads, as a simple client does; without the
// lingering the server closes with unread bytes and the client sees ECONNRESET.
namespace {

// Sends `raw` whole, then expects `status` and a clean end of stream.
void expect_answer_then_eof(std::uint16_t port, const std::string& raw, int status) {
    auto c = http_client::tcp(port);
    REQUIRE(c.send(raw));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == status);
    CHECK(r->header("Connection") == "close");
    CHECK(c.wait_end(5s) == http_client::stream_end::eof);
    CHECK(answers(port));
}

}  // namespace

TEST_CASE("http lingering close: 70 KB of headers get the whole 431, then a clean end",
          "[http][lingering]") {
    corgi_server srv({"--lingering-timeout", "1"});
    // Under the per-field limits, over the 64 KiB header limit; the upload that follows is what
    // the client is still sending when the 431 is written.
    std::string fill;
    for (int i = 0; i < 70; ++i)
        fill += "X-Fill-" + std::to_string(i) + ": " + std::string(1000, 'a') + "\r\n";
    expect_answer_then_eof(srv.port(),
                           "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 262144\r\n" +
                               fill + "\r\n" + std::string(262144, 'b'),
                           431);
}

TEST_CASE("http lingering close: a body over the limit sent in full gets 413, then a clean end",
          "[http][lingering]") {
    corgi_server srv({"--max-body-bytes", "1000", "--lingering-timeout", "1"});
    expect_answer_then_eof(
        srv.port(),
        "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1048576\r\n\r\n" +
            std::string(1048576, 'b'),
        413);
}

TEST_CASE("http lingering close: a body malformed mid-way gets 400, then a clean end",
          "[http][lingering]") {
    corgi_server srv({"--lingering-timeout", "1"});
    expect_answer_then_eof(
        srv.port(),
        "POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        "10\r\n0123456789abcdef\r\nzz-not-a-chunk-size\r\n" +
            std::string(512 * 1024, 'c'),
        400);
}

TEST_CASE("http lingering close: a body cut short gets its 408 or 400 whole, then a clean end",
          "[http][lingering]") {
    corgi_server srv({"--body-timeout", "1", "--lingering-timeout", "2"});
    const std::string head =
        "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 400000\r\n\r\n";
    SECTION("the body stalls past the body timeout, then the rest comes before the client reads") {
        auto c = http_client::tcp(srv.port());
        REQUIRE(c.send(head + std::string(1000, 'b')));
        std::this_thread::sleep_for(1500ms);  // the 408 is written meanwhile
        // The rest of the body arrives after the answer: it is dropped, the client still reads
        // the whole 408 and a clean end (the cases above are the ones the lingering decides; this
        // one and the next are the issue's "body cut short", which must end the same way).
        c.send(std::string(399000, 'b'));
        auto r = c.read_response();
        INFO(c.error());
        REQUIRE(r);
        CHECK(r->status == 408);
        CHECK(c.wait_end(5s) == http_client::stream_end::eof);
    }
    SECTION("the client ends its side before the body is complete") {
        auto c = http_client::tcp(srv.port());
        REQUIRE(c.send(head + std::string(1000, 'b')));
        c.shutdown_write();
        auto r = c.read_response();
        INFO(c.error());
        REQUIRE(r);
        CHECK(r->status == 400);
        CHECK(c.wait_end(5s) == http_client::stream_end::eof);
    }
    CHECK(answers(srv.port()));
}

TEST_CASE("http lingering close: the lingering ends as soon as the client closes its side",
          "[http][lingering]") {
    // One connection at most: a new one is closed at once while the lingering one holds the slot.
    corgi_server srv(
        {"--lingering-timeout", "20", "--lingering-time", "20", "--max-connections", "1"});
    {
        auto c = http_client::tcp(srv.port());
        REQUIRE(
            c.send("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 9999999999999\r\n\r\n" +
                   std::string(256 * 1024, 'b')));
        c.shutdown_write();
        auto r = c.read_response();
        INFO(c.error());
        REQUIRE(r);
        CHECK(r->status == 413);
        CHECK(c.wait_end(5s) == http_client::stream_end::eof);
    }
    // The server saw our end of stream and closed, long before the lingering timeout.
    const auto deadline = clock::now() + 5s;
    bool answered = false;
    while (!answered && clock::now() < deadline) answered = answers(srv.port());
    CHECK(answered);
}

TEST_CASE("http lingering close: a draining server does not wait on a lingering connection",
          "[http][lingering]") {
    corgi_server srv(
        {"--lingering-timeout", "60", "--lingering-time", "60", "--graceful-timeout", "60"});
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 9999999999999\r\n\r\n" +
                   std::string(64 * 1024, 'b')));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 413);
    CHECK(c.wait_end(5s) == http_client::stream_end::eof);
    // The server lingers: what we still send is read and dropped, not answered with a reset.
    CHECK(c.send(std::string(64 * 1024, 'b')));
    CHECK(c.send(std::string(64 * 1024, 'b')));
    // SIGTERM ends the lingering at once, not after the lingering time or the grace period.
    srv.process().send_signal(SIGTERM);
    CHECK(srv.process().wait_exit(10s) == 0);
}

// Strict parsing: Gunicorn's request limits and the refusals request smuggling needs, through
// the corgi binary (the parser's cases in detail are in tests/protocols/http_parser_test.cpp).
TEST_CASE("http strict parsing: Gunicorn's request limits by default give 414 and 431",
          "[http][bad_input][strict]") {
    corgi_server srv;
    expect_rejected(srv.port(), get_request("/plaintext?" + std::string(4100, 'q')), 414);
    std::string fields;
    for (int i = 0; i < 101; ++i) fields += "X-F" + std::to_string(i) + ": v\r\n";
    expect_rejected(srv.port(), get_request("/plaintext", fields), 431);
    expect_rejected(srv.port(),
                    get_request("/plaintext", "X-Long: " + std::string(8190, 'v') + "\r\n"), 431);
    // Just under every limit is fine.
    fields.clear();
    for (int i = 0; i < 98; ++i) fields += "X-F" + std::to_string(i) + ": v\r\n";
    fields += "X-Long: " + std::string(8000, 'v') + "\r\n";
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send(get_request("/plaintext?" + std::string(4000, 'q'), fields)));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 200);
}

TEST_CASE("http strict parsing: the request limits follow the flags and the JSON config",
          "[http][bad_input][strict]") {
    {
        corgi_server srv({"--limit-request-line", "100", "--limit-request-fields", "5",
                          "--limit-request-field-size", "100"});
        expect_rejected(srv.port(), get_request("/plaintext?" + std::string(100, 'q')), 414);
        expect_rejected(srv.port(),
                        get_request("/plaintext", "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n"), 431);
        expect_rejected(srv.port(),
                        get_request("/plaintext", "X-Long: " + std::string(100, 'v') + "\r\n"),
                        431);
    }
    {
        temp_file cfg("strict.json",
                      R"({"listen": [{"http": "127.0.0.1:0"}], "limits": {"limit_request_line": 0,)"
                      R"( "limit_request_fields": 0, "limit_request_field_size": 0}})");
        corgi_server srv({"--config", cfg.path});
        std::string fields;
        for (int i = 0; i < 300; ++i) fields += "X-F" + std::to_string(i) + ": v\r\n";
        fields += "X-Long: " + std::string(20000, 'v') + "\r\n";
        auto c = http_client::tcp(srv.port());
        REQUIRE(c.send(get_request("/plaintext?" + std::string(10000, 'q'), fields)));
        auto r = c.read_response();
        INFO(c.error());
        REQUIRE(r);
        CHECK(r->status == 200);
    }
}

TEST_CASE("http strict parsing: framing that smuggling relies on gets 400",
          "[http][bad_input][strict]") {
    corgi_server srv;
    for (const std::string& raw : {
             get_request("/plaintext", "X-Folded: a\r\n b\r\n"),
             std::string(
                 "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 5, 5\r\n\r\nhello"),
             std::string("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n"
                         "Content-Length: 5\r\n\r\nhello"),
             get_request("/plaintext", "Content-Type: text/plain\r\nContent-Type: text/html\r\n"),
         })
        expect_rejected(srv.port(), raw, 400);
    // Transfer-Encoding in HTTP/1.0 (answered in 1.0, where closing needs no Connection field).
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send("POST /upload HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 400);
    CHECK(c.wait_end(3s) == http_client::stream_end::eof);
}

TEST_CASE("http strict parsing: what real clients send is still accepted",
          "[http][bad_input][strict]") {
    corgi_server srv;
    for (const std::string& raw : {
             get_request("/plaintext?q=\"quoted\""),
             get_request("http://test/plaintext"),
             std::string("OPTIONS * HTTP/1.1\r\nHost: test\r\n\r\n"),
             std::string("-FOO /plaintext HTTP/1.1\r\nHost: test\r\n\r\n"),
         }) {
        auto c = http_client::tcp(srv.port());
        REQUIRE(c.send(raw));
        auto r = c.read_response();
        INFO(raw);
        INFO(c.error());
        REQUIRE(r);
        CHECK(r->status != 400);
        CHECK(r->status < 500);
    }
    auto r = fetch(srv.port(), "http://test/plaintext");
    REQUIRE(r);
    CHECK(r->status == 200);
}
