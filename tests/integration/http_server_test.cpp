// HTTP/1.1 behaviour of the corgi binary over real sockets: framing, keep-alive, pipelining,
// chunked bodies, 100-continue, HEAD, and the URL map's answers (404, 405, 308, OPTIONS) from
// examples/demo.json.
#include "test_support.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <regex>

using namespace corgi::test;

namespace {

const std::string curl = "/usr/bin/curl";

bool contains(const std::vector<std::string>& v, std::string_view item) {
    return std::find(v.begin(), v.end(), item) != v.end();
}

// corgi serving examples/demo.json's routes (on port 0), from the source directory.
struct demo_server {
    temp_file config{"demo.json", demo_config_text()};
    corgi_server server{{"--config", config.path}, source_dir()};
    std::uint16_t port() const { return server.port(); }
};

}  // namespace

TEST_CASE("http: GET answers 200 with Date, Server and Content-Length", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send(get_request("/plaintext")));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->version == "HTTP/1.1");
    CHECK(r->status == 200);
    CHECK(r->body == "Hello, World!");
    CHECK(r->header("Content-Length") == "13");
    CHECK(r->header_count("Content-Length") == 1);
    CHECK_FALSE(r->header("Transfer-Encoding"));
    REQUIRE(r->header("Date"));
    CHECK(std::regex_match(
        *r->header("Date"),
        std::regex(R"([A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT)")));
    CHECK(r->header_count("Date") == 1);
    REQUIRE(r->header("Server"));
    CHECK_FALSE(r->header("Server")->empty());
    CHECK(r->header("Content-Type").value_or("").starts_with("text/plain"));
}

TEST_CASE("http: HTTP/1.1 keeps the connection alive across requests", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    for (const char* name : {"one", "two", "three"}) {
        REQUIRE(c.send(get_request(std::string("/hello/") + name)));
        auto r = c.read_response();
        INFO(c.error());
        REQUIRE(r);
        CHECK(r->status == 200);
        CHECK(r->body == std::string("Hello, ") + name + "!\n");
        CHECK(r->header("Connection").value_or("") != "close");
    }
}

TEST_CASE("http: Connection: close from the client ends the connection after the response",
          "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send(get_request("/plaintext", "Connection: close\r\n")));
    auto r = c.read_response();
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->header("Connection") == "close");
    CHECK(c.wait_closed(3s));
    CHECK(c.drained().empty());
}

TEST_CASE("http: HTTP/1.0 closes the connection by default", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send("GET /plaintext HTTP/1.0\r\n\r\n"));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "Hello, World!");
    CHECK(r->header("Connection").value_or("") != "keep-alive");
    CHECK(c.wait_closed(3s));
}

TEST_CASE("http: HTTP/1.0 with Connection: keep-alive stays open", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    for (int i = 0; i < 2; ++i) {
        REQUIRE(c.send("GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        auto r = c.read_response();
        INFO(c.error());
        REQUIRE(r);
        CHECK(r->status == 200);
        CHECK(r->body == "Hello, World!");
        CHECK(r->header("Connection").value_or("") == "keep-alive");
    }
}

TEST_CASE("http: HTTP/1.0 gets a streamed body close-delimited, not chunked", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send("GET /stream?chunks=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK_FALSE(r->chunked);
    CHECK_FALSE(r->header("Transfer-Encoding"));
    CHECK(r->body == "chunk 0\nchunk 1\nchunk 2\n");
}

TEST_CASE("http: pipelined requests are answered in order", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    // The first one is the slowest: its answer must still come first.
    REQUIRE(c.send(get_request("/sleep?ms=300") + get_request("/hello/second") +
                   get_request("/plaintext")));
    auto r1 = c.read_response();
    auto r2 = c.read_response();
    auto r3 = c.read_response();
    INFO(c.error());
    REQUIRE(r1);
    REQUIRE(r2);
    REQUIRE(r3);
    CHECK(r1->body == "slept 300 ms\n");
    CHECK(r2->body == "Hello, second!\n");
    CHECK(r3->body == "Hello, World!");
    CHECK(c.buffered().empty());
}

TEST_CASE("http: pipelined HEAD and GET keep the framing straight", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send(get_request("/plaintext", {}, "HEAD") + get_request("/hello/after")));
    auto head = c.read_response(true);
    REQUIRE(head);
    CHECK(head->status == 200);
    CHECK(head->header("Content-Length") == "13");
    auto get = c.read_response();
    INFO(c.error());
    REQUIRE(get);
    CHECK(get->status == 200);
    CHECK(get->body == "Hello, after!\n");
}

TEST_CASE("http: HEAD has the same Content-Length as GET and no body", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send(get_request("/big?bytes=5000")));
    auto get = c.read_response();
    REQUIRE(get);
    REQUIRE(get->body.size() == 5000);
    REQUIRE(c.send(get_request("/big?bytes=5000", {}, "HEAD")));
    auto head = c.read_response(true);
    INFO(c.error());
    REQUIRE(head);
    CHECK(head->status == 200);
    CHECK(head->header("Content-Length") == "5000");
    // No body bytes may follow: the next response must start right after the HEAD's header block.
    REQUIRE(c.send(get_request("/plaintext")));
    auto next = c.read_response();
    INFO(c.error());
    REQUIRE(next);
    CHECK(next->status == 200);
    CHECK(next->body == "Hello, World!");
}

TEST_CASE("http: chunked request body is received whole by the handler", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(
        c.send("POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
               "6\r\nhello \r\n"
               "5;ext=1\r\nworld\r\n"
               "0\r\nX-Trailer: yes\r\n\r\n"));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "hello world");
    CHECK(r->header("Content-Length") == "11");
    // The connection is still in a clean state for the next request.
    REQUIRE(c.send(get_request("/plaintext")));
    auto next = c.read_response();
    REQUIRE(next);
    CHECK(next->body == "Hello, World!");
}

TEST_CASE("http: a request body larger than the socket buffers round-trips", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    std::string body(3 * 1024 * 1024, '\0');
    for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>('a' + i % 26);
    REQUIRE(c.send("PUT /upload HTTP/1.1\r\nHost: test\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n"));
    REQUIRE(c.send(body));
    auto r = c.read_response(false, 8s);
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body.size() == body.size());
    CHECK(r->body == body);
}

TEST_CASE("http: a streaming response is sent chunked on HTTP/1.1", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send(get_request("/stream?chunks=3")));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->chunked);
    CHECK_FALSE(r->header("Content-Length"));
    CHECK(r->body == "chunk 0\nchunk 1\nchunk 2\n");
    // The terminating chunk was sent: the connection carries the next response.
    REQUIRE(c.send(get_request("/stream?chunks=1")));
    auto again = c.read_response();
    REQUIRE(again);
    CHECK(again->body == "chunk 0\n");
}

TEST_CASE("http: Expect: 100-continue gets 100 Continue before the final response", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(
        c.send("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: "
               "100-continue\r\n\r\n"));
    // The body is held back until the interim response arrives, as a real client does.
    auto interim = c.read_response();
    INFO(c.error());
    REQUIRE(interim);
    CHECK(interim->version == "HTTP/1.1");
    CHECK(interim->status == 100);
    REQUIRE(c.send("hello"));
    auto final_response = c.read_response();
    INFO(c.error());
    REQUIRE(final_response);
    CHECK(final_response->status == 200);
    CHECK(final_response->body == "hello");
}

TEST_CASE("http: Expect: 100-continue on a route that ignores the body sends no 100", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(
        c.send("POST /hello/x HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: "
               "100-continue\r\n\r\n"));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == "Hello, x!\n");
}

TEST_CASE("http: handler exceptions become 500 without their details", "[http]") {
    corgi_server srv;
    auto c = http_client::tcp(srv.port());
    REQUIRE(c.send(get_request("/fail")));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 500);
    CHECK(r->body.find("on purpose") == std::string::npos);
    CHECK(r->body.find("runtime_error") == std::string::npos);
    // The details went to the error log instead.
    CHECK(srv.process().wait_for_err("on purpose", 2s));
    CHECK(answers(srv.port()));
}

TEST_CASE("http: an http_error from a handler becomes its status", "[http]") {
    corgi_server srv;
    auto r = fetch(srv.port(), "/sleep?ms=notanumber");
    REQUIRE(r);
    CHECK(r->status == 400);
}

TEST_CASE("http: demo.json routes answer 404, 405 with Allow and 308 keeping the query",
          "[http][routes]") {
    demo_server demo;
    auto c = http_client::tcp(demo.port());

    REQUIRE(c.send(get_request("/no/such/page")));
    auto not_found = c.read_response();
    REQUIRE(not_found);
    CHECK(not_found->status == 404);

    REQUIRE(c.send(get_request("/user/42", "Content-Length: 0\r\n", "DELETE")));
    auto not_allowed = c.read_response();
    REQUIRE(not_allowed);
    CHECK(not_allowed->status == 405);
    REQUIRE(not_allowed->header("Allow"));
    auto allow = split_list(*not_allowed->header("Allow"));
    CHECK(contains(allow, "GET"));
    CHECK(contains(allow, "HEAD"));
    CHECK(contains(allow, "POST"));
    CHECK_FALSE(contains(allow, "DELETE"));

    REQUIRE(c.send(get_request("/docs?x=1&y=two")));
    auto redirect = c.read_response();
    REQUIRE(redirect);
    CHECK(redirect->status == 308);
    CHECK(redirect->header("Location") == "/docs/?x=1&y=two");

    REQUIRE(c.send(get_request("/old")));
    auto old = c.read_response();
    REQUIRE(old);
    CHECK(old->status / 100 == 3);
    CHECK(old->header("Location") == "/new");
}

TEST_CASE("http: OPTIONS is answered with Allow", "[http][routes]") {
    demo_server demo;
    auto c = http_client::tcp(demo.port());
    REQUIRE(c.send(get_request("/user/7", {}, "OPTIONS")));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status / 100 == 2);
    REQUIRE(r->header("Allow"));
    auto allow = split_list(*r->header("Allow"));
    CHECK(contains(allow, "GET"));
    CHECK(contains(allow, "HEAD"));
    CHECK(contains(allow, "POST"));
    CHECK(contains(allow, "OPTIONS"));
    CHECK_FALSE(contains(allow, "PUT"));
}

TEST_CASE("http: the echo target answers the match with typed arguments", "[http][routes]") {
    demo_server demo;
    auto c = http_client::tcp(demo.port());
    REQUIRE(c.send(get_request("/user/42?q=x", "X-Probe: yes\r\n")));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->header("Content-Type").value_or("").starts_with("application/json"));
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    CHECK(j["endpoint"] == "user");
    CHECK(j["args"] == nlohmann::json({{"id", 42}}));
    CHECK(j["args"]["id"].is_number_integer());
    CHECK(j["method"] == "GET");
    CHECK(j["path"] == "/user/42");
    CHECK(j["query"] == nlohmann::json({{"q", "x"}}));
    // Header names are case-insensitive: whatever case the echo uses, the header and its value are
    // there.
    bool probe_seen = false;
    for (const auto& [name, value] : j["headers"].items()) {
        std::string lower = name;
        for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        if (lower == "x-probe") probe_seen = value == "yes";
    }
    CHECK(probe_seen);

    REQUIRE(c.send(get_request("/api/v1/b")));
    auto sub = c.read_response();
    REQUIRE(sub);
    CHECK(sub->status == 200);
    auto k = nlohmann::json::parse(sub->body, nullptr, false);
    CHECK(k["endpoint"] == "api.kind");
    CHECK(k["args"] == nlohmann::json({{"kind", "b"}}));

    REQUIRE(c.send(get_request("/api/v1/c")));
    auto miss = c.read_response();
    REQUIRE(miss);
    CHECK(miss->status == 404);
}

TEST_CASE("http: the static target serves files and refuses to leave its directory",
          "[http][routes]") {
    demo_server demo;
    auto c = http_client::tcp(demo.port());
    REQUIRE(c.send(get_request("/files/hello.txt")));
    auto r = c.read_response();
    INFO(c.error());
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == read_file(source_dir() + "/examples/public/hello.txt"));
    CHECK(r->header("ETag"));
    CHECK(r->header("Last-Modified"));

    REQUIRE(c.send(get_request("/files/../demo.json")));
    auto escape = c.read_response();
    REQUIRE(escape);
    CHECK(escape->status / 100 == 4);
    CHECK(escape->body.find("listen") == std::string::npos);

    REQUIRE(c.send(get_request("/files/%2e%2e/demo.json")));
    auto encoded = c.read_response();
    REQUIRE(encoded);
    CHECK(encoded->status / 100 == 4);
    CHECK(encoded->body.find("listen") == std::string::npos);
}

// curl as a second, independent client.

TEST_CASE("http: curl GET /json", "[http][curl]") {
    corgi_server srv;
    auto r = run({curl, "-sS", "--max-time", "5", "-i",
                  "http://127.0.0.1:" + std::to_string(srv.port()) + "/json"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.starts_with("HTTP/1.1 200"));
    auto body_at = r.out.find("\r\n\r\n");
    REQUIRE(body_at != std::string::npos);
    auto j = nlohmann::json::parse(r.out.substr(body_at + 4), nullptr, false);
    CHECK(j == nlohmann::json({{"message", "Hello, World!"}}));
}

TEST_CASE("http: curl reuses one connection for two URLs", "[http][curl]") {
    corgi_server srv;
    std::string base = "http://127.0.0.1:" + std::to_string(srv.port());
    auto r = run({curl, "-sS", "-v", "--max-time", "5", base + "/hello/a", base + "/hello/b"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out == "Hello, a!\nHello, b!\n");
    CHECK(r.err.find("Re-using existing connection") != std::string::npos);
}

TEST_CASE("http: curl uploads a chunked body and gets it back", "[http][curl]") {
    corgi_server srv;
    std::string payload(200000, 'q');
    payload += "end";
    temp_file file("upload.bin", payload);
    auto r =
        run({curl, "-sS", "--max-time", "5", "-H", "Transfer-Encoding: chunked", "--data-binary",
             "@" + file.path, "http://127.0.0.1:" + std::to_string(srv.port()) + "/upload"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.size() == payload.size());
    CHECK(r.out == payload);
}

TEST_CASE("http: curl HEAD and Range on a static file", "[http][curl]") {
    demo_server demo;
    std::string url = "http://127.0.0.1:" + std::to_string(demo.port()) + "/files/hello.txt";
    std::string content = read_file(source_dir() + "/examples/public/hello.txt");
    REQUIRE(content.size() > 5);

    auto head = run({curl, "-sS", "--max-time", "5", "-I", url});
    INFO(head.err);
    REQUIRE(head.exit_code == 0);
    CHECK(head.out.starts_with("HTTP/1.1 200"));
    CHECK(head.out.find("Content-Length: " + std::to_string(content.size()) + "\r\n") !=
          std::string::npos);

    auto range = run({curl, "-sS", "--max-time", "5", "-w", "%{http_code}", "-r", "0-4", url});
    INFO(range.err);
    REQUIRE(range.exit_code == 0);
    CHECK(range.out == content.substr(0, 5) + "206");
}
