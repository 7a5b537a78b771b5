// Unit tests of the uwsgi head parser, fed bytes without a socket: framing, limits, malformed vars
// blocks, and the request the CGI builder makes of them.
#include "uwsgi_parser.hpp"
#include "cgi_vars.hpp"
#include "proxy_wire.hpp"

#include <catch2/catch.hpp>

namespace uwsgi = corgi::protocols::detail::uwsgi;
using corgi::test::uwsgi_packet;
using corgi::test::uwsgi_vars;
using corgi::test::var_list;

namespace {
const var_list get_vars = {{"REQUEST_METHOD", "POST"},
                           {"REQUEST_URI", "/p?q=1"},
                           {"PATH_INFO", "/p"},
                           {"QUERY_STRING", "q=1"},
                           {"CONTENT_LENGTH", "4"},
                           {"HTTP_HOST", "h"},
                           {"EMPTY", ""}};

var_list collect(std::string_view block, const char** error = nullptr) {
    var_list out;
    const char* e = uwsgi::for_each_var(block, [&](std::string_view k, std::string_view v) {
        out.emplace_back(std::string(k), std::string(v));
    });
    if (error) *error = e;
    return out;
}
}  // namespace

TEST_CASE("uwsgi parser: a packet fed byte by byte completes exactly at the end of its vars",
          "[uwsgi]") {
    std::string packet = uwsgi_packet(get_vars, "body");
    std::size_t head = packet.size() - 4;
    for (std::size_t n = 0; n < head; ++n) {
        auto r = uwsgi::parse_head(std::string_view(packet).substr(0, n), 65535);
        REQUIRE(r.status == uwsgi::parse_status::need_more);
    }
    auto r = uwsgi::parse_head(packet, 65535);
    REQUIRE(r.status == uwsgi::parse_status::complete);
    CHECK(r.consumed == head);
    CHECK(packet.substr(r.consumed) == "body");
    CHECK(collect(r.vars) == get_vars);
}

TEST_CASE("uwsgi parser: the size field is little-endian and modifier2 is ignored", "[uwsgi]") {
    var_list big = {{"REQUEST_METHOD", "GET"}, {"X", std::string(300, 'v')}};
    std::string packet = uwsgi_packet(big);
    packet[3] = 7;  // modifier2
    auto r = uwsgi::parse_head(packet, 65535);
    REQUIRE(r.status == uwsgi::parse_status::complete);
    CHECK(r.vars.size() == 2 + 14 + 2 + 3 + 2 + 1 + 2 + 300);
    CHECK(collect(r.vars) == big);
}

TEST_CASE("uwsgi parser: modifier1 other than 0 is refused from the first 4 bytes", "[uwsgi]") {
    for (std::uint8_t m : {1, 5, 30, 72, 100, 255}) {
        std::string packet = uwsgi_packet(get_vars, {}, m);
        auto r = uwsgi::parse_head(std::string_view(packet).substr(0, 4), 65535);
        CHECK(r.status == uwsgi::parse_status::error);
    }
}

TEST_CASE("uwsgi parser: a vars block over the limit is refused before it arrives", "[uwsgi]") {
    std::string packet = uwsgi_packet({{"K", std::string(2000, 'x')}});
    auto r = uwsgi::parse_head(std::string_view(packet).substr(0, 4), 1024);
    CHECK(r.status == uwsgi::parse_status::error);
    CHECK(uwsgi::parse_head(packet, 4096).status == uwsgi::parse_status::complete);
}

TEST_CASE("uwsgi parser: malformed vars blocks are reported, not read past", "[uwsgi]") {
    const char* error = nullptr;
    std::string good = uwsgi_vars({{"A", "1"}, {"BB", "22"}});

    SECTION("a key length pointing past the end") {
        std::string b = good;
        b[0] = 100;
        collect(b, &error);
        CHECK(error != nullptr);
    }
    SECTION("a value length pointing past the end") {
        std::string b = good;
        b[4] = 50;  // value length of "A"
        collect(b, &error);
        CHECK(error != nullptr);
    }
    SECTION("a block cut inside a length") {
        collect(good.substr(0, good.size() - 5), &error);  // ends inside the second pair
        CHECK(error != nullptr);
        collect(good + "\x01", &error);  // one stray byte
        CHECK(error != nullptr);
    }
    SECTION("an empty name") {
        collect(uwsgi_vars({{"", "x"}}), &error);
        CHECK(error != nullptr);
    }
    SECTION("the intact block") {
        CHECK(collect(good, &error).size() == 2);
        CHECK(error == nullptr);
    }
}

TEST_CASE("uwsgi parser: the vars make the request a handler sees", "[uwsgi]") {
    std::string packet = uwsgi_packet(get_vars, "body");
    auto r = uwsgi::parse_head(packet, 65535);
    REQUIRE(r.status == uwsgi::parse_status::complete);
    corgi::request req;
    corgi::protocols::detail::cgi_request_builder b;
    b.begin(req, "uwsgi");
    REQUIRE(uwsgi::for_each_var(r.vars, [&](auto k, auto v) { b.add(k, v); }) == nullptr);
    REQUIRE(b.finish() == nullptr);
    CHECK(req.method == "POST");
    CHECK(req.path == "/p");
    CHECK(req.query_string == "q=1");
    CHECK(req.content_length == 4u);
    CHECK(req.headers.get("Host") == "h");
}
