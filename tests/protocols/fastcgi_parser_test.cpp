// Unit tests of the FastCGI record reader, fed bytes without a socket: records split anywhere,
// padding, long name-value lengths, management records, refusals, other request ids, records out of
// order, limits.
#include "fastcgi_parser.hpp"
#include "proxy_wire.hpp"

#include <catch2/catch.hpp>

namespace fcgi = corgi::protocols::detail::fastcgi;
namespace wire = corgi::test::fcgi;
using corgi::test::var_list;
using kind = fcgi::reader::event_kind;

namespace {

// What the reader made of some input: the events (data copied) in order.
struct trace {
    std::vector<kind> kinds;
    var_list params;
    std::string body;
    std::vector<std::uint16_t> ids;
    std::vector<bool> keep;
    const char* error = nullptr;
};

void drain_events(fcgi::reader& r, trace& t) {
    for (;;) {
        auto e = r.next();
        if (e.kind == kind::need_more) return;
        t.kinds.push_back(e.kind);
        t.ids.push_back(e.request_id);
        switch (e.kind) {
            case kind::begin_request:
            case kind::refused:
                t.keep.push_back(e.keep_conn);
                break;
            case kind::params_complete:
                fcgi::for_each_pair(e.data, [&](std::string_view k, std::string_view v) {
                    t.params.emplace_back(std::string(k), std::string(v));
                });
                break;
            case kind::stdin_data:
                t.body += e.data;
                break;
            case kind::error:
                t.error = e.error;
                return;
            default:
                break;
        }
    }
}

// Feeds `bytes` in pieces of `step` bytes, collecting events as they come.
trace run(fcgi::reader& r, std::string_view bytes, std::size_t step) {
    trace t;
    for (std::size_t i = 0; i < bytes.size() && !t.error; i += step) {
        r.feed(bytes.substr(i, step));
        drain_events(r, t);
    }
    return t;
}

trace run(std::string_view bytes, std::size_t step = 1 << 20) {
    fcgi::reader r;
    return run(r, bytes, step);
}

// The events with stdin_data pieces collapsed (how many pieces depends on how the bytes were cut).
std::vector<kind> shape(const trace& t) {
    std::vector<kind> out;
    for (auto k : t.kinds)
        if (k != kind::stdin_data || out.empty() || out.back() != kind::stdin_data)
            out.push_back(k);
    return out;
}

const var_list nginx_vars = {{"REQUEST_METHOD", "POST"},
                             {"REQUEST_URI", "/x?y=1"},
                             {"CONTENT_LENGTH", "11"},
                             {"SCRIPT_NAME", "/x"},
                             {"HTTP_COOKIE", std::string(300, 'c')},
                             {std::string(200, 'N'), "v"},
                             {"EMPTY", ""}};

}  // namespace

TEST_CASE("fastcgi reader: a request cut at every size gives the same events", "[fastcgi]") {
    std::string bytes =
        wire::request(1, nginx_vars, "hello world", true, 7);  // 7-byte records: pairs split
    for (std::size_t step : {1u, 2u, 3u, 8u, 13u, 64u, 100000u}) {
        INFO("step " << step);
        trace t = run(bytes, step);
        REQUIRE(t.error == nullptr);
        CHECK(shape(t) == std::vector<kind>{kind::begin_request, kind::params_complete,
                                            kind::stdin_data, kind::stdin_end});
        CHECK(t.keep == std::vector<bool>{true});
        CHECK(t.params == nginx_vars);
        CHECK(t.body == "hello world");
    }
}

TEST_CASE("fastcgi reader: padding is skipped wherever it falls", "[fastcgi]") {
    std::string bytes = wire::begin(9) + wire::stream(4, 9, wire::pairs({{"A", "1"}}), 65535, 5) +
                        wire::stream(5, 9, "abcdef", 4, 7);
    for (std::size_t step : {1u, 5u, 1000u}) {
        trace t = run(bytes, step);
        REQUIRE(t.error == nullptr);
        CHECK(t.params == var_list{{"A", "1"}});
        CHECK(t.body == "abcdef");
        CHECK(t.kinds.back() == kind::stdin_end);
    }
}

TEST_CASE("fastcgi reader: FCGI_GET_VALUES is answered with our values", "[fastcgi]") {
    fcgi::reader r(65536, {123, 45});
    r.feed(wire::record(9, 0,
                        wire::pairs({{"FCGI_MAX_CONNS", ""},
                                     {"FCGI_MPXS_CONNS", ""},
                                     {"FCGI_MAX_REQS", ""},
                                     {"OTHER", ""}})));
    trace t;
    drain_events(r, t);
    CHECK(t.kinds.empty());
    bool complete = false;
    auto records = wire::parse(r.replies(), &complete);
    CHECK(complete);
    REQUIRE(records.size() == 1);
    CHECK(records[0].type == 10);
    CHECK(records[0].id == 0);
    var_list values;
    fcgi::for_each_pair(records[0].content, [&](std::string_view k, std::string_view v) {
        values.emplace_back(std::string(k), std::string(v));
    });
    CHECK(values ==
          var_list{{"FCGI_MAX_CONNS", "123"}, {"FCGI_MPXS_CONNS", "0"}, {"FCGI_MAX_REQS", "45"}});
    CHECK(r.replies().size() % 8 == 0);  // padded
}

TEST_CASE("fastcgi reader: an unknown management record type is answered with UNKNOWN_TYPE",
          "[fastcgi]") {
    fcgi::reader r;
    r.feed(wire::record(42, 0, "whatever"));
    trace t;
    drain_events(r, t);
    auto records = wire::parse(r.replies());
    REQUIRE(records.size() == 1);
    CHECK(records[0].type == 11);
    CHECK(static_cast<unsigned char>(records[0].content[0]) == 42);
}

TEST_CASE("fastcgi reader: roles other than responder are refused with UNKNOWN_ROLE", "[fastcgi]") {
    fcgi::reader r;
    std::string bytes = wire::begin(3, 2 /* authorizer */, true) + wire::params(3, {{"A", "1"}}) +
                        wire::stdin_(3, "") + wire::request(4, {{"B", "2"}}, "x");
    trace t = run(r, bytes, 1);
    REQUIRE(t.error == nullptr);
    CHECK(t.kinds.front() == kind::refused);
    CHECK(t.keep.front() == true);
    CHECK(wire::end_status_of(wire::parse(r.replies()), 3) == fcgi::unknown_role);
    // The refused request's records are skipped; the next request is served normally.
    CHECK(t.params == var_list{{"B", "2"}});
    CHECK(t.body == "x");
    CHECK(t.ids.back() == 4);
}

TEST_CASE("fastcgi reader: a second request id is refused without touching the first",
          "[fastcgi]") {
    std::string bytes = wire::begin(1) + wire::record(4, 1, wire::pairs({{"A", "1"}})) +
                        wire::begin(2) + wire::params(2, {{"EVIL", "1"}}) + wire::record(4, 1, {}) +
                        wire::record(5, 2, "evil") + wire::record(5, 1, "good") +
                        wire::record(2, 2, {}) + wire::record(5, 1, {});
    fcgi::reader r;
    trace t = run(r, bytes, 3);
    REQUIRE(t.error == nullptr);
    CHECK(t.params == var_list{{"A", "1"}});
    CHECK(t.body == "good");
    CHECK(t.kinds.back() == kind::stdin_end);
    CHECK(std::count(t.kinds.begin(), t.kinds.end(), kind::abort_request) == 0);
    auto records = wire::parse(r.replies());
    REQUIRE(records.size() == 1);
    CHECK(wire::end_status_of(records, 2) == fcgi::cant_mpx_conn);
}

TEST_CASE("fastcgi reader: records out of order or malformed end the connection", "[fastcgi]") {
    auto error_of = [](std::string bytes) { return run(bytes, 1).error; };
    CHECK(error_of(wire::begin(1) + wire::record(5, 1, "body")) !=
          nullptr);  // STDIN before PARAMS ended
    CHECK(error_of(wire::begin(1) + wire::params(1, {}) +
                   wire::record(4, 1, wire::pairs({{"A", "1"}}))) !=
          nullptr);  // PARAMS after their end
    CHECK(error_of(wire::begin(1) + wire::params(1, {}) + wire::stdin_(1, "") +
                   wire::record(5, 1, "x")) != nullptr);          // STDIN after its end
    CHECK(error_of(wire::begin(1) + wire::begin(1)) != nullptr);  // BEGIN for the active id
    CHECK(error_of(wire::begin(0)) != nullptr);                   // BEGIN with id 0
    CHECK(error_of(wire::record(1, 1, "short")) != nullptr);      // BEGIN of the wrong size
    CHECK(error_of(wire::record(1, 1, std::string(8, '\0'), 0, 2)) != nullptr);  // version 2
    CHECK(error_of(wire::record(9, 0, "\x05")) != nullptr);  // GET_VALUES with a cut pair
    // Once failed, the reader stays failed.
    fcgi::reader r;
    r.feed(wire::record(1, 1, "short"));
    CHECK(r.next().kind == kind::error);
    r.feed(wire::request(2, {}));
    CHECK(r.next().kind == kind::error);
}

TEST_CASE("fastcgi reader: PARAMS over the header limit end the connection", "[fastcgi]") {
    fcgi::reader r(100);
    trace t = run(r, wire::request(1, {{"A", std::string(200, 'x')}}), 16);
    CHECK(t.error != nullptr);
    fcgi::reader ok(300);
    CHECK(run(ok, wire::request(1, {{"A", std::string(200, 'x')}}), 16).error == nullptr);
}

TEST_CASE("fastcgi reader: ABORT_REQUEST of the current request is reported, of others ignored",
          "[fastcgi]") {
    std::string bytes = wire::begin(1) + wire::params(1, {}) + wire::record(5, 1, "part") +
                        wire::record(2, 7, {}) + wire::record(2, 1, {});
    trace t = run(bytes);
    REQUIRE(t.error == nullptr);
    CHECK(shape(t) == std::vector<kind>{kind::begin_request, kind::params_complete,
                                        kind::stdin_data, kind::abort_request});
}

TEST_CASE("fastcgi reader: after finish_request the rest of the old body is skipped", "[fastcgi]") {
    fcgi::reader r;
    r.feed(wire::begin(1, 1, true) + wire::params(1, {{"A", "1"}}) + wire::record(5, 1, "first"));
    trace t;
    drain_events(r, t);
    CHECK(t.body == "first");
    CHECK(r.in_request());
    r.finish_request();  // the handler answered without reading everything
    CHECK_FALSE(r.in_request());
    r.feed(wire::record(5, 1, "rest") + wire::record(5, 1, {}) +
           wire::request(1, {{"B", "2"}}, "second", true));
    trace t2;
    drain_events(r, t2);
    CHECK(t2.error == nullptr);
    CHECK(t2.body == "second");
    CHECK(t2.params == var_list{{"B", "2"}});
}

TEST_CASE("fastcgi reader: body pieces come as they arrive, not a record at a time", "[fastcgi]") {
    fcgi::reader r;
    std::string bytes =
        wire::begin(1) + wire::params(1, {}) + wire::record(5, 1, std::string(1000, 'b'));
    r.feed(bytes.substr(0, bytes.size() - 600));
    trace t;
    drain_events(r, t);
    CHECK(t.body.size() == 400);
    CHECK(t.kinds.back() == kind::stdin_data);
}

TEST_CASE("fastcgi encoding: records are padded to 8 and pairs use 4-byte lengths from 128",
          "[fastcgi]") {
    std::string out;
    fcgi::append_record(out, fcgi::stdout_record, 0x1234, "abc");
    CHECK(out.size() == 16);
    CHECK(out.substr(0, 8) == std::string("\x01\x06\x12\x34\x00\x03\x05\x00", 8));
    out.clear();
    fcgi::append_end_request(out, 1, 0x01020304, fcgi::cant_mpx_conn);
    CHECK(out ==
          std::string("\x01\x03\x00\x01\x00\x08\x00\x00\x01\x02\x03\x04\x01\x00\x00\x00", 16));
    out.clear();
    fcgi::append_pair(out, std::string(127, 'a'), std::string(128, 'b'));
    CHECK(out.substr(0, 5) == std::string("\x7f\x80\x00\x00\x80", 5));
    CHECK(out.size() == 5 + 127 + 128);
    CHECK(out == wire::pairs({{std::string(127, 'a'), std::string(128, 'b')}}));
}

TEST_CASE("fastcgi pairs: lengths past the end and empty names are malformed", "[fastcgi]") {
    auto walk = [](std::string_view b) { return fcgi::for_each_pair(b, [](auto, auto) {}); };
    CHECK(walk(wire::pairs({{"A", "1"}, {"B", "22"}})) == nullptr);
    CHECK(walk(std::string("\x05\x01"
                           "AB",
                           4)) != nullptr);
    CHECK(walk(std::string("\x01\x05"
                           "AB",
                           4)) != nullptr);
    CHECK(walk(std::string("\x80\x00\x00", 3)) != nullptr);
    CHECK(walk(std::string("\x01\xff\xff\xff\xff"
                           "A",
                           6)) != nullptr);
    CHECK(walk(std::string("\x00\x01"
                           "v",
                           3)) != nullptr);
}
