// The WSGI handler called directly (no socket): environ, start_response, wsgi.input, response
// bodies, failures, close(), the corgi module and asyncio.
#include "wsgi_test_support.hpp"

#include <corgi/core/url_map.hpp>
#include <corgi/wsgi/wsgi.hpp>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <map>
#include <thread>

using namespace corgi;
using corgi::test::call;
using corgi::test::make_request;
using nlohmann::json;

namespace {

const handler& app(const std::string& name) {
    static std::map<std::string, handler> loaded;
    auto it = loaded.find(name);
    if (it == loaded.end()) it = loaded.emplace(name, wsgi::load("unit_apps:" + name)).first;
    return it->second;
}

json state() {
    auto req = make_request("GET", "/state");
    auto out = call(app("state"), req);
    return json::parse(out.body);
}

// Calls `h` with a body that arrives in `pieces`, each after `delay`.
corgi::test::outcome call_with_slow_body(const handler& h, request& req,
                                         std::vector<std::string> pieces,
                                         std::chrono::milliseconds delay) {
    net::io_context io;
    std::size_t length = 0;
    for (const auto& p : pieces) length += p.size();
    corgi::test::slow_body body(io.get_executor(), std::move(pieces), delay);
    req.body = &body;
    req.content_length = length;
    corgi::test::outcome out;
    corgi::test::collecting_writer w;
    net::co_spawn(io, corgi::test::drive(h, req, out, w), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
    });
    io.run_for(std::chrono::seconds(20));
    req.body = nullptr;
    REQUIRE(out.done);
    return out;
}

bool was_closed(const std::string& name) {
    json s = state();
    return std::find(s["closed"].begin(), s["closed"].end(), name) != s["closed"].end();
}

}  // namespace

TEST_CASE("wsgi: a plain callable answers through the handler", "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("hello"), req);
    CHECK(out.error == nullptr);
    CHECK(out.res.status == 200);
    CHECK(out.res.headers.get("Content-Type") == "text/plain");
    CHECK(out.body == "Hello, World!");
    CHECK_FALSE(out.streamed);
}

TEST_CASE("wsgi: load reports import errors with the traceback", "[wsgi]") {
    try {
        (void)wsgi::load("no_such_module_anywhere:app");
        FAIL("load did not throw");
    } catch (const wsgi::load_error& e) {
        CHECK_THAT(e.what(), Catch::Contains("ModuleNotFoundError"));
        CHECK_THAT(e.what(), Catch::Contains("no_such_module_anywhere"));
    }
    CHECK_THROWS_AS(wsgi::load("unit_apps:no_such_callable"), wsgi::load_error);
    CHECK_THROWS_WITH(wsgi::load("unit_apps:closed"), Catch::Contains("not a WSGI callable"));
}

TEST_CASE("wsgi: load accepts a file path and the default callable name", "[wsgi]") {
    const std::string dir = std::string(CORGI_TEST_SOURCE_DIR) + "/tests/wsgi/apps/";
    handler by_file = wsgi::load(dir + "file_app.py");
    handler by_file_callable = wsgi::load(dir + "file_app.py:other");
    handler by_module = wsgi::load("file_app");
    auto req = make_request("GET", "/");
    CHECK(call(by_file, req).body == "file_app.application");
    auto req2 = make_request("GET", "/");
    CHECK(call(by_file_callable, req2).body == "file_app.other");
    auto req3 = make_request("GET", "/");
    CHECK(call(by_module, req3).body == "file_app.application");
}

TEST_CASE("wsgi: environ follows PEP 3333", "[wsgi]") {
    auto req = make_request("POST", "/caf\xc3\xa9 x", "a=1&b=%20");
    req.script_name = "/mount";
    req.path_info = "/caf\xc3\xa9 x";
    req.target = "/mount/caf%C3%A9%20x?a=1&b=%20";
    req.version = 10;
    req.headers.add("Host", "example.test");
    req.headers.add("Accept", "text/html");
    req.headers.add("accept", "text/plain");
    req.headers.add("Cookie", "a=1");
    req.headers.add("Cookie", "b=2");
    req.headers.add("X_Spoofed", "dropped");
    req.headers.add("Content-Type", "application/x-www-form-urlencoded");
    req.headers.add("Content-Length", "0");
    req.content_length = 0;
    req.proxy_vars = {
        {"UWSGI_SCHEME", "https"}, {"REQUEST_METHOD", "DELETE"}, {"DOCUMENT_ROOT", "/srv"}};
    req.args = {{"name", std::string("caf\xc3\xa9")}, {"id", std::int64_t{42}}, {"ratio", 0.5}};
    auto out = call(app("environ_dump"), req);
    REQUIRE(out.res.status == 200);
    json env = json::parse(out.body);
    CHECK(env["REQUEST_METHOD"] == "POST");  // a proxy variable never overrides a CGI key
    CHECK(env["SCRIPT_NAME"] == "/mount");
    CHECK(env["PATH_INFO_hex"] == "2f636166c3a92078");  // the raw bytes, as latin-1 "bytes as str"
    CHECK(env["QUERY_STRING"] == "a=1&b=%20");
    CHECK(env["SERVER_PROTOCOL"] == "HTTP/1.0");
    CHECK(env["SERVER_NAME"] == "127.0.0.1");
    CHECK(env["SERVER_PORT"] == "8000");
    CHECK(env["REMOTE_ADDR"] == "127.0.0.1");
    CHECK(env["REMOTE_PORT"] == "40000");
    CHECK(env["REQUEST_URI"] == "/mount/caf%C3%A9%20x?a=1&b=%20");
    CHECK(env["CONTENT_TYPE"] == "application/x-www-form-urlencoded");
    CHECK(env["CONTENT_LENGTH"] == "0");
    CHECK(env["wsgi.url_scheme"] == "http");
    CHECK(env["wsgi.version"] == json::array({1, 0}));
    CHECK(env["wsgi.multithread"] == true);
    CHECK(env["wsgi.multiprocess"] == false);
    CHECK(env["wsgi.run_once"] == false);
    CHECK(env["wsgi.input_terminated"] == true);
    CHECK(env["types_native"] == true);
    CHECK(env["has_file_wrapper"] == true);
    CHECK(env["http"]["HTTP_HOST"] == "example.test");
    CHECK(env["http"]["HTTP_ACCEPT"] == "text/html, text/plain");
    CHECK(env["http"]["HTTP_COOKIE"] == "a=1; b=2");
    CHECK_FALSE(env["http"].contains("HTTP_X_SPOOFED"));
    CHECK_FALSE(env["http"].contains("HTTP_CONTENT_TYPE"));
    CHECK_FALSE(env["http"].contains("HTTP_CONTENT_LENGTH"));
    CHECK(env["extra"]["UWSGI_SCHEME"] == "https");
    CHECK(env["extra"]["DOCUMENT_ROOT"] == "/srv");
    CHECK(env["routing_args"] == json::parse(R"([[], {"name": "café", "id": 42, "ratio": 0.5}])"));
    // The app's own Content-Length is kept for the protocol.
    CHECK(out.res.headers.get("Content-Length") == std::to_string(out.body.size()));
}

TEST_CASE("wsgi: environ leaves out CONTENT_TYPE, CONTENT_LENGTH and routing args when absent",
          "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("environ_dump"), req);
    json env = json::parse(out.body);
    CHECK_FALSE(env.contains("CONTENT_TYPE"));
    CHECK_FALSE(env.contains("CONTENT_LENGTH"));
    CHECK_FALSE(env.contains("routing_args"));
    CHECK(env["SCRIPT_NAME"] == "");
}

TEST_CASE("wsgi: wsgi.input reads a body that arrives in slow pieces", "[wsgi]") {
    const std::vector<std::string> pieces = {"first line\nsec", "ond line\n", "thi",
                                             "rd line\nno newline"};
    const std::string whole = "first line\nsecond line\nthird line\nno newline";
    struct expectation {
        std::string mode;
        json parts;
    };
    const std::vector<expectation> cases = {
        {"read", json::array({whole})},
        {"read_n",
         json::array({"first l", "ine\nsec", "ond lin", "e\nthird", " line\nn", "o newli", "ne"})},
        {"readline", json::array({"first line\n", "second line\n", "third line\n", "no newline"})},
        {"readline_limit",
         json::array({"fir", "st line\n", "second line\nthird line\nno newline"})},
        {"readlines", json::array({"first line\n", "second line\n", "third line\n", "no newline"})},
        {"iter", json::array({"first line\n", "second line\n", "third line\n", "no newline"})},
        {"5", json::array({"first"})},
    };
    for (const auto& c : cases) {
        SECTION(c.mode) {
            auto req = make_request("POST", "/", c.mode);
            // Pieces arrive 20 ms apart on the io_context that call() drives: the fiber waits for
            // each.
            struct deferred_body : body_source {
                std::vector<std::string> pieces;
                std::size_t next = 0;
                task<std::string_view> read_some() override {
                    auto ex = co_await net::this_coro::executor;
                    net::steady_timer t(ex, std::chrono::milliseconds(20));
                    co_await t.async_wait(net::use_awaitable);
                    if (next < pieces.size()) co_return std::string_view(pieces[next++]);
                    co_return std::string_view();
                }
            } body;
            body.pieces = pieces;
            req.body = &body;
            req.content_length = whole.size();
            auto out = call(app("input_modes"), req);
            REQUIRE(out.res.status == 200);
            CHECK(json::parse(out.body) == c.parts);
        }
    }
}

TEST_CASE("wsgi: a failed body read reaches the app as an exception and the status as the response",
          "[wsgi]") {
    struct failing_body : body_source {
        task<std::string_view> read_some() override {
            throw payload_too_large("too big");
            co_return std::string_view();
        }
    } body;
    auto req = make_request("POST", "/", "read");
    req.body = &body;
    auto out = call(app("input_modes"), req);
    CHECK(out.res.status == 413);
}

TEST_CASE("wsgi: a request without a body reads as empty", "[wsgi]") {
    auto req = make_request("GET", "/", "read");
    auto out = call(app("input_modes"), req);
    CHECK(json::parse(out.body) == json::array({""}));
}

// Chunks of a generator are copied to the io side while the app goes on, so how many writes they
// take depends on timing; what they add up to, and the framing, do not. (That no chunk waits for
// the next one is tested over a socket: test_streaming.py.)
TEST_CASE("wsgi: a generator streams through a body producer and is closed", "[wsgi]") {
    auto req = make_request("GET", "/", "stream-ok");
    auto out = call(app("streaming"), req);
    CHECK(out.error == nullptr);
    CHECK(out.streamed);  // no Content-Length: always streamed (chunked on HTTP/1.1)
    CHECK(out.res.status == 200);
    CHECK(out.body == "one two three");
    CHECK(out.writes >= 1);
    CHECK(out.writes <= 3);  // the empty item is never a write
    CHECK(was_closed("stream-ok"));
}

TEST_CASE("wsgi: chunks too big to copy are written from the app's bytes, in order", "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("big_chunks"), req);
    CHECK(out.error == nullptr);
    REQUIRE(out.body.size() == 200'003);
    CHECK(out.body == "<" + std::string(100'000, 'a') + "|" + std::string(100'000, 'b') + ">");
    CHECK(out.writes >= 3);  // each big chunk is a write of its own
}

TEST_CASE("wsgi: a body larger than the outbox window arrives whole", "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("many_small_chunks"), req);
    CHECK(out.error == nullptr);
    REQUIRE(out.body.size() == 40'000 * 6);
    CHECK(out.body.substr(0, 12) == "00000\n00001\n");
    CHECK(out.body.substr(out.body.size() - 6) == "39999\n");
}

TEST_CASE("wsgi: an app-set Content-Length is kept on a streamed body", "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("streaming_with_length"), req);
    CHECK(out.res.headers.get("Content-Length") == "11");
    CHECK(out.body == "hello world");
}

TEST_CASE("wsgi: the write() callable sends before the returned iterable", "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("writer"), req);
    CHECK(out.streamed);
    CHECK(out.body == "written then returned");
}

TEST_CASE("wsgi: file_wrapper over a real file becomes a file range", "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("file_wrapper_real"), req);
    REQUIRE(out.file);
    auto& range = std::get<file_range>(out.res.body);
    CHECK(range.file);
    CHECK(range.offset == 10);
    CHECK(range.length == 9990);
    char buf[4] = {};
    REQUIRE(::pread(range.file.get(), buf, 3, static_cast<off_t>(range.offset)) == 3);
    CHECK(std::string(buf, 3) == "012");
}

TEST_CASE("wsgi: file_wrapper over BytesIO falls back to reading blocks", "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("file_wrapper_bytesio"), req);
    CHECK(out.streamed);
    CHECK_FALSE(out.file);
    CHECK(out.body == [] {
        std::string abc;
        for (int i = 0; i < 5000; ++i) abc += "abc";
        return abc;
    }());
}

TEST_CASE("wsgi: an exception before the headers is a 500", "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("fails_before_headers"), req);
    CHECK(out.res.status == 500);
    CHECK(out.error == nullptr);
    CHECK_THAT(out.body,
               !Catch::Contains("on purpose"));  // the traceback goes to the log, not the client

    auto req2 = make_request("GET", "/");
    auto first = call(app("fails_in_first_item"), req2);
    CHECK(first.res.status == 500);
    CHECK(was_closed("fails_in_first_item"));
}

TEST_CASE("wsgi: an exception after the headers aborts the body and closes the iterable",
          "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("fails_after_headers"), req);
    CHECK(out.streamed);
    CHECK(out.res.status == 200);
    CHECK(out.body == "first");
    REQUIRE(out.error != nullptr);
    CHECK_THAT(corgi::test::error_text(out.error), Catch::Contains("connection aborted"));
    CHECK(was_closed("fails_after_headers"));
}

TEST_CASE("wsgi: a client that goes away gets the iterable closed", "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("endless"), req, /*fail_on_write=*/5);
    REQUIRE(out.error != nullptr);
    CHECK(out.writes == 5);
    // The fiber closes the iterable once it learns the client left (a lane hop later).
    bool closed = false;
    for (int i = 0; i < 50 && !closed; ++i) {
        closed = was_closed("endless");
        if (!closed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(closed);
}

TEST_CASE("wsgi: a streamed response dropped unsent still closes the iterable", "[wsgi]") {
    auto req = make_request("HEAD", "/", "dropped-unsent");  // endless: always streamed
    {
        net::io_context io;
        response res;
        bool done = false;
        net::co_spawn(
            io,
            [&]() -> task<void> {
                res = co_await app("endless")(req);
                done = true;
            },
            [](std::exception_ptr e) {
                if (e) std::rethrow_exception(e);
            });
        io.run_for(std::chrono::seconds(10));
        REQUIRE(done);
        REQUIRE(std::holds_alternative<body_producer>(res.body));
    }  // the response (and its producer) die here without running
    bool closed = false;
    for (int i = 0; i < 50 && !closed; ++i) {
        closed = was_closed("dropped-unsent");
        if (!closed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(closed);
}

TEST_CASE("wsgi: protocol violations are 500s", "[wsgi]") {
    for (const char* name : {"non_iterable", "non_bytes", "no_start_response", "start_twice"}) {
        auto req = make_request("GET", "/");
        auto out = call(app(name), req);
        INFO(name);
        CHECK(out.res.status == 500);
    }
}

TEST_CASE("wsgi: start_response with exc_info replaces the headers before they are sent",
          "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("exc_info_replaces"), req);
    CHECK(out.res.status == 503);
    CHECK(out.res.headers.get("X-Second") == "2");
    CHECK_FALSE(out.res.headers.contains("X-First"));
    CHECK(out.body == "replaced");

    auto req2 = make_request("GET", "/");
    auto late = call(app("exc_info_after_headers"), req2);
    CHECK(late.res.status == 200);
    CHECK(late.body == "partial");
    CHECK(late.error != nullptr);  // re-raised: the connection is aborted
}

TEST_CASE("wsgi: start_response validates status and headers", "[wsgi]") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"status_bytes", "TypeError"},     {"status_short", "ValueError"},
        {"status_letters", "ValueError"},  {"header_newline", "ValueError"},
        {"header_name", "ValueError"},     {"hop_by_hop", "ValueError"},
        {"header_not_tuple", "TypeError"},
    };
    for (const auto& [kind, error] : cases) {
        auto req = make_request("GET", "/", kind);
        auto out = call(app("bad_status"), req);
        INFO(kind);
        CHECK(out.body == error);
    }
}

TEST_CASE("wsgi: sqlite3 callbacks (PyGILState_Ensure) run on the fiber's thread state", "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("sqlite_callback"), req);
    CHECK(out.body == "in-fiber:7");
}

TEST_CASE("wsgi: corgi.wait_readable, wait_writable and suspend", "[wsgi]") {
    auto req = make_request("GET", "/");
    auto out = call(app("waits"), req);
    REQUIRE(out.res.status == 200);
    json r = json::parse(out.body);
    CHECK(r["timed_out"] == false);
    CHECK(r["ready"] == true);
    CHECK(r["data"] == "!");
    CHECK(r["writable"] == true);
    CHECK(r["in_request"] == true);
}

TEST_CASE("wsgi: asyncio through corgi.await_ on the lane's loop", "[wsgi][asyncio]") {
    auto req = make_request("GET", "/", "r1");
    auto out = call(app("asyncio_app"), req);
    REQUIRE(out.res.status == 200);
    json r = json::parse(out.body);
    CHECK(r["slept"] == "slept");
    CHECK(r["ctx"] == "r1");
    CHECK(r["echoed"] == "HELLO R1");
    CHECK(r["error"] == "inside a coroutine");
    CHECK(r["executor"] == 42);
    CHECK(r["same_loop"] == true);
    CHECK(r["loop_class"] == "CorgiEventLoop");
}

TEST_CASE("wsgi: an app returning a coroutine is awaited, and a returned WSGI app is called",
          "[wsgi][asyncio]") {
    auto req = make_request("GET", "/");
    CHECK(call(app("returns_coroutine"), req).body == "from a coroutine");
    auto req2 = make_request("GET", "/");
    CHECK(call(app("coroutine_app"), req2).body == "from a coroutine");
    auto req3 = make_request("GET", "/");
    CHECK(call(app("returns_wsgi_app"), req3).body == "Hello, World!");
}

TEST_CASE("wsgi: a returned coroutine reads a slowly arriving body on the request's fiber",
          "[wsgi][asyncio]") {
    auto req = make_request("POST", "/");
    auto out = call_with_slow_body(app("coroutine_reads_body"), req,
                                   {"ab", "c-li", "ne\nre", "st", " of it"},
                                   std::chrono::milliseconds(20));
    REQUIRE(out.res.status == 200);
    json r = json::parse(out.body);
    CHECK(r["parts"] == json::array({"abc", "-line\n", "rest of it"}));
    CHECK(r["same_task"] == true);     // asyncio.current_task() is the request's task throughout
    CHECK(r["in_request"] == true);    // the coroutine runs on the request's fiber
    CHECK(r["running_loop"] == true);  // ... and sees the lane's loop running
}

TEST_CASE("wsgi: asyncio.timeout() over a synchronous read takes effect at the next await",
          "[wsgi][asyncio]") {
    auto req = make_request("POST", "/");
    auto out = call_with_slow_body(app("timeout_around_read"), req, {"one ", "two ", "three"},
                                   std::chrono::milliseconds(60));
    REQUIRE(out.res.status == 200);
    json r = json::parse(out.body);
    CHECK(r["data"] == "one two three");
    CHECK(r["outcome"] == "TimeoutError");
    CHECK(r["cancelling"] == 0);
}

TEST_CASE("wsgi: asgiref's async_to_sync awaits on the lane's loop, also nested in a coroutine",
          "[wsgi][asyncio]") {
    auto req = make_request("POST", "/");
    auto out = call_with_slow_body(app("async_to_sync_nested"), req, {"slow ", "body"},
                                   std::chrono::milliseconds(20));
    REQUIRE(out.res.status == 200);
    json r = json::parse(out.body);
    CHECK(r["body"] == "slow body");
    CHECK(r["loop"] == "CorgiEventLoop");
    CHECK(r["inner_task_differs"] == true);
    CHECK(r["same_task_after"] == true);  // the outer task is current again after the nested await
    // As with asgiref: context variables set by the coroutine are seen by its synchronous caller.
    CHECK(r["var_in_outer"] == "set-by-inner");
    CHECK(r["var_in_caller"] == "set-by-inner");
}

TEST_CASE("wsgi: a task a request leaves behind finishes on the lane after the request",
          "[wsgi][asyncio]") {
    auto req = make_request("GET", "/");
    CHECK(call(app("leaves_a_task"), req).body == "left");
    // A later request gives the lane's loop time to run the task's remaining steps.
    auto req2 = make_request("GET", "/", "0.2");
    CHECK(call(app("sleepy"), req2).body == "slept");
    auto req3 = make_request("GET", "/");
    CHECK(json::parse(call(app("left_behind_state"), req3).body) == json::array({false}));
}

TEST_CASE("wsgi: an app mounted in a C++ url_map beside C++ rules sees the SCRIPT_NAME split",
          "[wsgi]") {
    // The C++ form of `--mount`: corgi::mount("/legacy", corgi::wsgi::load(...)).
    handler cpp = [](request&) -> task<response> { co_return response::text("from C++"); };
    auto map = std::make_shared<url_map>(url_map{
        rule("/legacy/cpp", "cpp", cpp),
        mount("/legacy", wsgi::load("unit_apps:environ_dump")),
        rule("/user/<int:id>", "user", wsgi::load("unit_apps:environ_dump")),
    });
    const handler dispatch = make_dispatcher(map);

    auto req = make_request("GET", "/legacy/a/b", "q=1");
    auto out = call(dispatch, req);
    REQUIRE(out.res.status == 200);
    json env = json::parse(out.body);
    CHECK(env["SCRIPT_NAME"] == "/legacy");
    CHECK(env["PATH_INFO"] == "/a/b");
    CHECK(env["QUERY_STRING"] == "q=1");

    // The static C++ rule under the mount's prefix wins over the mount.
    auto req2 = make_request("GET", "/legacy/cpp");
    CHECK(call(dispatch, req2).body == "from C++");

    // A WSGI app as the target of one rule: its converted arguments arrive as wsgiorg.routing_args.
    auto req3 = make_request("GET", "/user/42");
    auto out3 = call(dispatch, req3);
    REQUIRE(out3.res.status == 200);
    json env3 = json::parse(out3.body);
    CHECK(env3["routing_args"] == json::parse(R"([[], {"id": 42}])"));
}
