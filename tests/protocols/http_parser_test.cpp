// corgi's HTTP request parser fed bytes without a socket: what it accepts, what it refuses and
// with which status, whole or in pieces as a socket delivers them.
#include "http_parser.hpp"

#include <boost/beast/http/error.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

namespace {

namespace http = boost::beast::http;
using corgi::protocols::detail::http_parser;

struct outcome {
    int status = 0;  // 0: the header was accepted
    std::string reason;
    corgi::request req;
    std::string body;  // what was parsed of the body
    bool done = false;
};

// Feeds `raw` in pieces of `step` bytes (0: all at once), keeping the unused bytes as the
// session's buffer does, until the message is done, refused or the input runs out.
outcome parse(const std::string& raw, const corgi::server_limits& limits = {},
              std::size_t step = 0) {
    outcome out;
    http_parser p(out.req, limits);
    std::string buffer;
    std::size_t offered = 0;
    for (;;) {
        std::size_t more = step == 0 ? raw.size() - offered : std::min(step, raw.size() - offered);
        buffer.append(raw, offered, more);
        offered += more;
        boost::beast::error_code ec;
        std::size_t used = p.put(boost::asio::buffer(buffer), ec);
        buffer.erase(0, used);
        out.body += p.body_piece();
        p.body_piece().clear();
        if (ec && ec != http::error::need_more) {
            out.status = p.status(ec);
            out.reason = p.reason(ec);
            return out;
        }
        if (p.is_done()) {
            out.done = true;
            return out;
        }
        if (offered == raw.size() && (ec == http::error::need_more || used == 0)) return out;
    }
}

const std::vector<std::size_t> steps = {0, 1, 7, 100};

std::string get(std::string_view extra = {}) {
    return "GET /plaintext HTTP/1.1\r\nHost: test\r\n" + std::string(extra) + "\r\n";
}

}  // namespace

TEST_CASE("http_parser: a plain request is parsed whole or in pieces", "[http_parser]") {
    for (std::size_t step : steps) {
        auto r = parse("POST /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", {},
                       step);
        INFO("step " << step);
        CHECK(r.status == 0);
        CHECK(r.done);
        CHECK(r.req.method == "POST");
        CHECK(r.req.path == "/a b");
        CHECK(r.req.query_string == "x=1");
        CHECK(r.req.content_length == 5u);
        CHECK(r.body == "hello");
    }
}

TEST_CASE("http_parser: what real clients send is accepted", "[http_parser]") {
    const std::vector<std::string> accepted = {
        "-FOO / HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /say?q=\"quoted\" HTTP/1.1\r\nHost: h\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http://example.com/x/y?z HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Blank:   \r\nAccept: a, b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
    };
    for (const auto& raw : accepted)
        for (std::size_t step : steps) {
            auto r = parse(raw, {}, step);
            INFO(raw << " step " << step << ": " << r.reason);
            CHECK(r.status == 0);
            CHECK(r.done);
        }
    auto absolute = parse(accepted[3]);
    CHECK(absolute.req.path == "/x/y");
    CHECK(absolute.req.query_string == "z");
    CHECK(parse(accepted[0]).req.method == "-FOO");
    CHECK(parse(accepted[1]).req.query_string == "q=\"quoted\"");
}

TEST_CASE("http_parser: smuggling and desync vectors are refused with 400", "[http_parser]") {
    struct refusal {
        const char* what;
        std::string raw;
    };
    const std::vector<refusal> refused = {
        {"obsolete line folding", get("X-Folded: a\r\n b\r\n")},
        {"obsolete line folding after an empty value", get("X-Folded:\r\n b\r\n")},
        {"folding with a tab", get("X-Folded: a\r\n\tb\r\n")},
        {"Content-Length list of equal values", get("Content-Length: 5, 5\r\n") + "hello"},
        {"Content-Length list without blanks", get("Content-Length: 5,5\r\n") + "hello"},
        {"Content-Length with a sign", get("Content-Length: +5\r\n") + "hello"},
        {"Content-Length negative", get("Content-Length: -1\r\n")},
        {"Content-Length with a space inside", get("Content-Length: 1 0\r\n")},
        {"Content-Length hexadecimal", get("Content-Length: 0x5\r\n")},
        {"two equal Content-Lengths", get("Content-Length: 5\r\nContent-Length: 5\r\n") + "hello"},
        {"two different Content-Lengths", get("Content-Length: 5\r\nContent-Length: 6\r\n")},
        {"Transfer-Encoding in HTTP/1.0",
         "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
        {"Transfer-Encoding then Content-Length",
         get("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n") + "0\r\n\r\n"},
        {"Content-Length then Transfer-Encoding",
         get("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n"},
        {"two Transfer-Encodings",
         get("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n"},
        {"two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
        {"two Content-Types", get("Content-Type: a/b\r\nContent-Type: c/d\r\n")},
        {"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n"},
        {"a relative target", "GET plaintext HTTP/1.1\r\nHost: h\r\n\r\n"},
        {"a field without a colon", get("No colon here\r\n")},
        {"a space before the colon", get("X-Bad : v\r\n")},
    };
    for (const auto& c : refused)
        for (std::size_t step : steps) {
            auto r = parse(c.raw, {}, step);
            INFO(c.what << " step " << step);
            CHECK(r.status == 400);
        }
    CHECK(parse(get("X-Folded: a\r\n b\r\n")).reason == "obsolete line folding");
}

TEST_CASE("http_parser: Transfer-Encoding other than chunked gets 501, another version 400",
          "[http_parser]") {
    CHECK(parse(get("Transfer-Encoding: gzip\r\n")).status == 501);
    CHECK(parse(get("Transfer-Encoding: gzip, chunked\r\n")).status == 501);
    // Beast refuses versions other than 1.0 and 1.1 itself, before corgi could answer 505.
    CHECK(parse("GET / HTTP/1.2\r\nHost: h\r\n\r\n").status == 400);
}

TEST_CASE("http_parser: limit_request_line refuses a longer request line with 414",
          "[http_parser]") {
    corgi::server_limits limits;
    limits.limit_request_line = 100;
    // "GET " + target + " HTTP/1.1" is exactly the limit: accepted; one more byte: 414.
    const std::string at_limit = "/" + std::string(100 - 14, 'a');
    for (std::size_t step : steps) {
        INFO("step " << step);
        CHECK(parse("GET " + at_limit + " HTTP/1.1\r\nHost: h\r\n\r\n", limits, step).status == 0);
        CHECK(parse("GET " + at_limit + "b HTTP/1.1\r\nHost: h\r\n\r\n", limits, step).status ==
              414);
        // A line that never ends is refused as soon as it passes the limit.
        CHECK(parse("GET /" + std::string(200, 'a'), limits, step).status == 414);
    }
    // The default is Gunicorn's 4094; 0 leaves only the header limit.
    CHECK(parse("GET /" + std::string(5000, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n").status == 414);
    limits.limit_request_line = 0;
    CHECK(parse("GET /" + std::string(5000, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n", limits).status ==
          0);
}

TEST_CASE("http_parser: limit_request_fields refuses more fields with 431", "[http_parser]") {
    corgi::server_limits limits;
    limits.limit_request_fields = 10;
    auto fields = [](int n) {
        std::string f;
        for (int i = 1; i < n; ++i) f += "X-F" + std::to_string(i) + ": v\r\n";
        return f;
    };
    // Host is one of them.
    CHECK(parse(get(fields(10)), limits).status == 0);
    CHECK(parse(get(fields(11)), limits).status == 431);
    CHECK(parse(get(fields(101))).status == 431);  // the default is 100
    CHECK(parse(get(fields(100))).status == 0);
    limits.limit_request_fields = 0;
    CHECK(parse(get(fields(1000)), limits).status == 0);
}

TEST_CASE("http_parser: limit_request_field_size refuses a longer field line with 431",
          "[http_parser]") {
    corgi::server_limits limits;
    limits.limit_request_field_size = 50;
    // "X-Long: " is 8 bytes; trailing blanks count, as they are part of the line.
    for (std::size_t step : steps) {
        INFO("step " << step);
        CHECK(parse(get("X-Long: " + std::string(42, 'v') + "\r\n"), limits, step).status == 0);
        CHECK(parse(get("X-Long: " + std::string(43, 'v') + "\r\n"), limits, step).status == 431);
        CHECK(parse(get("X-Long: " + std::string(40, 'v') + "   \r\n"), limits, step).status ==
              431);
    }
    CHECK(parse(get("X-Long: " + std::string(8190, 'v') + "\r\n")).status == 431);  // default
    CHECK(parse(get("X-Long: " + std::string(8182, 'v') + "\r\n")).status == 0);
    limits.limit_request_field_size = 0;
    CHECK(parse(get("X-Long: " + std::string(20000, 'v') + "\r\n"), limits).status == 0);
}

TEST_CASE("http_parser: the header and body limits give 431 and 413", "[http_parser]") {
    corgi::server_limits limits;
    limits.max_header_bytes = 2048;
    limits.max_body_bytes = 10;
    std::string many;
    for (int i = 0; i < 200; ++i) many += "X-H" + std::to_string(i) + ": value\r\n";
    for (std::size_t step : steps) {
        INFO("step " << step);
        CHECK(parse(get(many), limits, step).status == 431);
        CHECK(parse(get("Content-Length: 11\r\n") + std::string(11, 'b'), limits, step).status ==
              413);
    }
    // 70 KB of header under the default 64 KiB limit, also when it arrives in pieces (Beast alone
    // applies its limit to each piece's unparsed rest).
    std::string fill;
    for (int i = 0; i < 70; ++i)
        fill += "X-Fill-" + std::to_string(i) + ": " + std::string(1000, 'a') + "\r\n";
    for (std::size_t step : {std::size_t(0), std::size_t(1000), std::size_t(16384)}) {
        INFO("step " << step);
        CHECK(parse(get(fill), {}, step).status == 431);
    }
}

TEST_CASE("http_parser: a chunked body malformed mid-way is refused with 400", "[http_parser]") {
    for (std::size_t step : steps) {
        INFO("step " << step);
        auto r = parse(get("Transfer-Encoding: chunked\r\n") + "3\r\nabc\r\nzz\r\n", {}, step);
        CHECK(r.status == 400);
        CHECK(r.body == "abc");
    }
}
