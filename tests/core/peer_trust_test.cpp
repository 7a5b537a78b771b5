// Which peers may hand corgi a request id (--forwarded-allow-ips): addresses, CIDR networks, "*".
#include <corgi/core/server.hpp>

#include <catch2/catch.hpp>

#include <stdexcept>

using corgi::peer_trust;

TEST_CASE("peer_trust: addresses, IPv4 and IPv6 networks, and a unix socket's peer") {
    peer_trust t({"127.0.0.1", "10.1.0.0/16", "fd00::/8", "::1"});
    CHECK(t.trusts("127.0.0.1"));
    CHECK_FALSE(t.trusts("127.0.0.2"));
    CHECK(t.trusts("10.1.255.3"));
    CHECK_FALSE(t.trusts("10.2.0.1"));
    CHECK(t.trusts("fd12:3456::1"));
    CHECK_FALSE(t.trusts("fe80::1"));
    CHECK(t.trusts("::1"));
    CHECK(t.trusts("::ffff:10.1.2.3"));  // a v4-mapped peer is its v4 address
    CHECK(t.trusts(""));                 // unix socket: only a local process connects
    CHECK_FALSE(t.trusts("not an address"));
    peer_trust odd_prefix({"192.168.1.128/25"});
    CHECK(odd_prefix.trusts("192.168.1.200"));
    CHECK_FALSE(odd_prefix.trusts("192.168.1.100"));
}

TEST_CASE("peer_trust: * trusts everyone, an empty list only unix sockets") {
    CHECK(peer_trust({"*"}).trusts("203.0.113.9"));
    peer_trust none({});
    CHECK_FALSE(none.trusts("127.0.0.1"));
    CHECK(none.trusts(""));
}

TEST_CASE("peer_trust: entries that are no address or network are refused") {
    for (const char* bad :
         {"10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x", "host.example", "1.2.3"})
        CHECK_THROWS_AS(peer_trust({bad}), std::invalid_argument);
    CHECK(peer_trust::split(" 127.0.0.1, ::1 ,,10.0.0.0/8") ==
          std::vector<std::string>{"127.0.0.1", "::1", "10.0.0.0/8"});
}
