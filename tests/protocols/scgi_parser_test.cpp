// Unit tests of the SCGI head parser, fed bytes without a socket: the netstring, its limits, and
// the rules on the variables (CONTENT_LENGTH first, SCGI=1).
#include "scgi_parser.hpp"
#include "proxy_wire.hpp"

#include <catch2/catch.hpp>

namespace scgi = corgi::protocols::detail::scgi;
using corgi::test::scgi_packet;
using corgi::test::scgi_vars;
using corgi::test::var_list;

namespace {
const var_list vars = {{"CONTENT_LENGTH", "5"},
                       {"SCGI", "1"},
                       {"REQUEST_METHOD", "POST"},
                       {"REQUEST_URI", "/"},
                       {"EMPTY", ""}};

const char* walk(std::string_view block, var_list* out = nullptr) {
    return scgi::for_each_var(block, [&](std::string_view k, std::string_view v) {
        if (out) out->emplace_back(std::string(k), std::string(v));
    });
}
}  // namespace

TEST_CASE("scgi parser: a netstring fed byte by byte completes after its comma", "[scgi]") {
    std::string packet = scgi_packet(vars, "hello");
    std::size_t head = packet.size() - 5;
    for (std::size_t n = 0; n < head; ++n)
        REQUIRE(scgi::parse_head(std::string_view(packet).substr(0, n), 65536).status ==
                scgi::parse_status::need_more);
    auto r = scgi::parse_head(packet, 65536);
    REQUIRE(r.status == scgi::parse_status::complete);
    CHECK(r.consumed == head);
    CHECK(packet.substr(r.consumed) == "hello");
    var_list got;
    CHECK(walk(r.vars, &got) == nullptr);
    CHECK(got == vars);
}

TEST_CASE("scgi parser: malformed netstrings are refused as early as possible", "[scgi]") {
    auto status = [](std::string_view in, std::size_t max = 65536) {
        return scgi::parse_head(in, max).status;
    };
    CHECK(status("x") == scgi::parse_status::error);
    CHECK(status(":") == scgi::parse_status::error);
    CHECK(status("12x") == scgi::parse_status::error);
    CHECK(status("012:") == scgi::parse_status::error);         // leading zero
    CHECK(status("12345678901") == scgi::parse_status::error);  // more digits than any limit needs
    CHECK(status("70000", 65536) ==
          scgi::parse_status::error);  // over the limit before the payload arrives
    CHECK(status("3:abc;") == scgi::parse_status::error);  // not terminated by ','
    CHECK(status("3:abc") == scgi::parse_status::need_more);
    CHECK(status("0:,") == scgi::parse_status::complete);  // framed fine; the vars check refuses it
    CHECK(walk("") != nullptr);
}

TEST_CASE("scgi parser: CONTENT_LENGTH must come first and SCGI must be 1", "[scgi]") {
    CHECK(walk(scgi_vars({{"SCGI", "1"}, {"CONTENT_LENGTH", "0"}})) != nullptr);
    CHECK(walk(scgi_vars({{"CONTENT_LENGTH", "0"}, {"REQUEST_METHOD", "GET"}})) != nullptr);
    CHECK(walk(scgi_vars({{"CONTENT_LENGTH", "0"}, {"SCGI", "2"}})) != nullptr);
    CHECK(walk(scgi_vars({{"CONTENT_LENGTH", "0"}, {"SCGI", "1"}})) == nullptr);
}

TEST_CASE("scgi parser: unterminated strings and empty names are malformed", "[scgi]") {
    std::string good = scgi_vars({{"CONTENT_LENGTH", "0"}, {"SCGI", "1"}});
    CHECK(walk(good.substr(0, good.size() - 1)) != nullptr);  // last value not terminated
    CHECK(walk(good + "NAME") != nullptr);                    // name without terminator
    CHECK(walk(good + std::string("NAME\0", 5)) != nullptr);  // name without value
    CHECK(walk(good + std::string("\0v\0", 3)) != nullptr);   // empty name
}
