// The response every protocol sends: status line and reason, framing headers, and a body that
// keeps to the length the head announces whatever the handler does.
#include "response_writer.hpp"

#include <corgi/core/response.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <vector>

using corgi::response;
using corgi::protocols::detail::append_head;
using corgi::protocols::detail::response_framing;

namespace {

std::string head_of(const response& res) {
    std::string out;
    append_head(out, res, response_framing{}, std::uint64_t{2}, false, true);
    return out;
}

}  // namespace

TEST_CASE("response head: the standard reason, or the handler's own", "[writer]") {
    response standard(404);
    CHECK(head_of(standard).rfind("HTTP/1.1 404 Not Found\r\n", 0) == 0);

    response custom(299);
    custom.reason = "Custom Thing";
    CHECK(head_of(custom).rfind("HTTP/1.1 299 Custom Thing\r\n", 0) == 0);
}

TEST_CASE("response head: a reason with CR or LF cannot split the head", "[writer]") {
    response res(200);
    res.reason = "OK\r\nSet-Cookie: stolen=1";
    const std::string head = head_of(res);
    CHECK(head.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(head.find("stolen") == std::string::npos);
}

// --- framing a handler cannot break: send_response into a fake output that records the bytes ---

namespace {

using corgi::protocols::detail::output;
using corgi::protocols::detail::send_response;
using corgi::protocols::detail::send_result;

// Every write appended to one string, as the peer would read it.
class recording_output final : public output {
  public:
    std::string bytes;
    std::size_t writes = 0;
    corgi::task<void> write(std::span<const corgi::net::const_buffer> buffers) override {
        ++writes;
        for (const auto& b : buffers) bytes.append(static_cast<const char*>(b.data()), b.size());
        co_return;
    }
};

struct sent_response {
    send_result result;
    std::string head;
    std::string body;
    std::size_t writes = 0;
};

sent_response send(response& res, response_framing framing = {}) {
    corgi::net::io_context io;
    recording_output out;
    std::string scratch;
    send_result result;
    std::exception_ptr failure;
    corgi::net::co_spawn(
        io,
        [&]() -> corgi::task<void> { result = co_await send_response(out, res, framing, scratch); },
        [&](std::exception_ptr e) { failure = e; });
    io.run();
    if (failure) std::rethrow_exception(failure);
    auto end = out.bytes.find("\r\n\r\n");
    REQUIRE(end != std::string::npos);
    return {result, out.bytes.substr(0, end + 4), out.bytes.substr(end + 4), out.writes};
}

std::size_t count_of(const std::string& text, std::string_view needle) {
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
}

// A producer writing `pieces`; records whether a write threw (it is told to stop).
struct recording_producer {
    std::vector<std::string> pieces;
    std::shared_ptr<bool> stopped = std::make_shared<bool>(false);
    std::shared_ptr<std::size_t> written = std::make_shared<std::size_t>(0);
    corgi::body_producer make() const {
        return [pieces = pieces, stopped = stopped,
                written = written](corgi::body_writer& w) -> corgi::task<void> {
            for (const auto& p : pieces) {
                try {
                    co_await w.write(p);
                    ++*written;
                } catch (...) {
                    *stopped = true;
                    throw;
                }
            }
        };
    }
};

}  // namespace

TEST_CASE("response framing: a body longer than its Content-Length is cut to it, then closed",
          "[writer][framing]") {
    response res(200);
    res.headers.add("Content-Length", "5");
    res.body = std::string("0123456789");
    auto sent = send(res);
    CHECK(sent.body == "01234");
    CHECK(count_of(sent.head, "Content-Length: 5\r\n") == 1);
    CHECK(sent.head.find("Connection: close\r\n") != std::string::npos);
    CHECK_FALSE(sent.result.keep_alive);
    CHECK_FALSE(sent.result.aborted);
    CHECK(sent.result.body_bytes == 5);
}

TEST_CASE("response framing: a body shorter than its Content-Length is sent and aborted",
          "[writer][framing]") {
    response res(200);
    res.headers.add("Content-Length", "10");
    res.body = std::string("01234");
    auto sent = send(res);
    CHECK(sent.body == "01234");
    CHECK(count_of(sent.head, "Content-Length: 10\r\n") == 1);
    CHECK(sent.result.aborted);
    CHECK_FALSE(sent.result.keep_alive);
}

TEST_CASE("response framing: a matching Content-Length keeps the connection and one write",
          "[writer][framing]") {
    response res(200);
    res.headers.add("Content-Length", "5");
    res.body = std::string("01234");
    auto sent = send(res);
    CHECK(sent.body == "01234");
    CHECK(count_of(sent.head, "Content-Length:") == 1);
    CHECK(sent.result.keep_alive);
    CHECK_FALSE(sent.result.aborted);
    CHECK(sent.writes == 1);
}

TEST_CASE("response framing: invalid or disagreeing Content-Lengths are replaced by the real one",
          "[writer][framing]") {
    for (std::vector<std::string> values :
         {std::vector<std::string>{"abc"}, {"5, 5"}, {"-1"}, {" 5"}, {""}, {"5", "7"}}) {
        INFO(values.front());
        response res(200);
        for (const auto& v : values) res.headers.add("Content-Length", v);
        res.body = std::string("0123456789");
        auto sent = send(res);
        CHECK(sent.body == "0123456789");
        CHECK(count_of(sent.head, "Content-Length:") == 1);
        CHECK(count_of(sent.head, "Content-Length: 10\r\n") == 1);
        CHECK(sent.result.keep_alive);
    }
}

TEST_CASE("response framing: HEAD keeps the declared length and sends no body",
          "[writer][framing]") {
    response res(200);
    res.headers.add("Content-Length", "42");
    res.body = std::string();
    response_framing f;
    f.head_request = true;
    auto sent = send(res, f);
    CHECK(sent.body.empty());
    CHECK(count_of(sent.head, "Content-Length: 42\r\n") == 1);
    CHECK(sent.result.keep_alive);
    CHECK_FALSE(sent.result.aborted);
}

TEST_CASE("response framing: a producer past its Content-Length is cut and stopped",
          "[writer][framing]") {
    recording_producer p{{"012", "3456", "789"}};
    response res = response::stream(p.make(), "text/plain");
    res.headers.add("Content-Length", "5");
    auto sent = send(res);
    CHECK(sent.body == "01234");
    CHECK(count_of(sent.head, "Content-Length: 5\r\n") == 1);
    CHECK(sent.head.find("chunked") == std::string::npos);
    CHECK(*p.stopped);       // the second write threw: the producer was told to stop
    CHECK(*p.written == 1);  // and never got to the third
    CHECK_FALSE(sent.result.keep_alive);
    CHECK_FALSE(sent.result.aborted);
}

TEST_CASE("response framing: a producer that swallows the stop still sends no extra byte",
          "[writer][framing]") {
    response res = response::stream(
        [](corgi::body_writer& w) -> corgi::task<void> {
            for (int i = 0; i < 3; ++i) {
                try {
                    co_await w.write("abcd");
                } catch (...) {
                }
            }
        },
        "text/plain");
    res.headers.add("Content-Length", "6");
    auto sent = send(res);
    CHECK(sent.body == "abcdab");
    CHECK_FALSE(sent.result.keep_alive);
}

TEST_CASE("response framing: a producer short of its Content-Length aborts the response",
          "[writer][framing]") {
    recording_producer p{{"012", "34"}};
    response res = response::stream(p.make(), "text/plain");
    res.headers.add("Content-Length", "10");
    auto sent = send(res);
    CHECK(sent.body == "01234");
    CHECK(sent.result.aborted);
    CHECK_FALSE(sent.result.keep_alive);

    recording_producer none{{}};
    response empty = response::stream(none.make(), "text/plain");
    empty.headers.add("Content-Length", "3");
    auto sent_empty = send(empty);
    CHECK(count_of(sent_empty.head, "Content-Length: 3\r\n") == 1);  // the head still goes out
    CHECK(sent_empty.body.empty());
    CHECK(sent_empty.result.aborted);
}

TEST_CASE("response framing: file bodies keep the Content-Length, shrinking files abort",
          "[writer][framing]") {
    char path[] = "/tmp/corgi-framing-XXXXXX";
    int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::unlink(path);
    REQUIRE(::write(fd, "0123456789", 10) == 10);

    SECTION("Content-Length shorter than the file: cut, then closed") {
        response res(200);
        res.body = corgi::file_range{corgi::file_descriptor(::dup(fd)), 0, 10};
        res.headers.add("Content-Length", "4");
        auto sent = send(res);
        CHECK(sent.body == "0123");
        CHECK(count_of(sent.head, "Content-Length: 4\r\n") == 1);
        CHECK_FALSE(sent.result.keep_alive);
        CHECK_FALSE(sent.result.aborted);
    }
    SECTION("Content-Length longer than the file: the file, then aborted") {
        response res(200);
        res.body = corgi::file_range{corgi::file_descriptor(::dup(fd)), 0, 10};
        res.headers.add("Content-Length", "12");
        auto sent = send(res);
        CHECK(sent.body == "0123456789");
        CHECK(count_of(sent.head, "Content-Length: 12\r\n") == 1);
        CHECK(sent.result.aborted);
    }
    SECTION("the file shrank after the range was taken: what is left, then aborted") {
        response res(200);
        res.body = corgi::file_range{corgi::file_descriptor(::dup(fd)), 0, 10};
        REQUIRE(::ftruncate(fd, 6) == 0);
        auto sent = send(res);
        CHECK(sent.body == "012345");
        CHECK(count_of(sent.head, "Content-Length: 10\r\n") == 1);
        CHECK(sent.result.aborted);
        CHECK(sent.result.body_bytes == 6);
    }
    ::close(fd);
}
