// The response head every protocol sends: status line and reason, framing headers.
#include "response_writer.hpp"

#include <corgi/core/response.hpp>

#include <catch2/catch.hpp>

#include <string>

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
