// Many requests at once on one lane: sleeping fibers overlap, slow uploads don't hold up others,
// and nothing leaks between concurrent requests (contextvars, threading.local, exception state,
// recursion depth).
#include "wsgi_test_support.hpp"

#include <corgi/wsgi/wsgi.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <vector>

using namespace corgi;
using corgi::test::collecting_writer;
using corgi::test::drive;
using corgi::test::make_request;
using corgi::test::outcome;
using nlohmann::json;

namespace {

struct in_flight {
    request req;
    outcome out;
    collecting_writer writer;
    std::chrono::steady_clock::time_point finished;
};

}  // namespace

TEST_CASE("wsgi: 200 requests that each corgi.sleep(0.5) overlap on one lane",
          "[wsgi][concurrency]") {
    const handler h = wsgi::load("unit_apps:sleepy");
    net::io_context io;
    std::vector<std::unique_ptr<in_flight>> calls;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 200; ++i) {
        auto c = std::make_unique<in_flight>();
        c->req = make_request("GET", "/", "0.5");
        net::co_spawn(io, drive(h, c->req, c->out, c->writer), [](std::exception_ptr e) {
            if (e) std::rethrow_exception(e);
        });
        calls.push_back(std::move(c));
    }
    io.run_for(std::chrono::seconds(20));
    const auto elapsed = std::chrono::steady_clock::now() - start;
    for (auto& c : calls) {
        REQUIRE(c->out.done);
        CHECK(c->out.body == "slept");
    }
    // Sequentially this would take 100 s; the bound is generous for a loaded CI machine.
    CHECK(elapsed < std::chrono::milliseconds(1800));
}

TEST_CASE("wsgi: 50 slow uploads do not block a fast request", "[wsgi][concurrency]") {
    const handler upload = wsgi::load("unit_apps:input_modes");
    const handler fast = wsgi::load("unit_apps:hello");
    net::io_context io;
    std::vector<std::unique_ptr<corgi::test::slow_body>> bodies;
    std::vector<std::unique_ptr<in_flight>> slow;
    for (int i = 0; i < 50; ++i) {
        auto c = std::make_unique<in_flight>();
        c->req = make_request("POST", "/upload", "read");
        bodies.push_back(std::make_unique<corgi::test::slow_body>(
            io.get_executor(), std::vector<std::string>{"a", "b", "c", "d", "e"},
            std::chrono::milliseconds(100)));
        c->req.body = bodies.back().get();
        c->req.content_length = 5;
        in_flight* raw = c.get();
        net::co_spawn(io, drive(upload, c->req, c->out, c->writer), [raw](std::exception_ptr e) {
            raw->finished = std::chrono::steady_clock::now();
            if (e) std::rethrow_exception(e);
        });
        slow.push_back(std::move(c));
    }
    in_flight quick;
    quick.req = make_request("GET", "/");
    // The fast request starts after all uploads are inside the app, waiting for their bodies.
    net::steady_timer later(io, std::chrono::milliseconds(150));
    later.async_wait([&](boost::system::error_code) {
        net::co_spawn(io, drive(fast, quick.req, quick.out, quick.writer),
                      [&](std::exception_ptr e) {
                          quick.finished = std::chrono::steady_clock::now();
                          if (e) std::rethrow_exception(e);
                      });
    });
    io.run_for(std::chrono::seconds(20));
    REQUIRE(quick.out.done);
    CHECK(quick.out.body == "Hello, World!");
    for (auto& c : slow) {
        REQUIRE(c->out.done);
        CHECK(json::parse(c->out.body) == json::array({"abcde"}));
        CHECK(quick.finished < c->finished);  // answered while every upload was still arriving
    }
}

TEST_CASE("wsgi: coroutines blocked in body reads leave the lane's loop to other requests",
          "[wsgi][concurrency][asyncio]") {
    // Each upload's task suspends its fiber in the middle of a step, three times; meanwhile other
    // tasks (asyncio.current_task() bookkeeping included) and a fast async request keep running.
    const handler h = wsgi::load("unit_apps:coroutine_reads_body");
    net::io_context io;
    std::vector<std::unique_ptr<corgi::test::slow_body>> bodies;
    std::vector<std::unique_ptr<in_flight>> slow;
    for (int i = 0; i < 30; ++i) {
        auto c = std::make_unique<in_flight>();
        c->req = make_request("POST", "/");
        bodies.push_back(std::make_unique<corgi::test::slow_body>(
            io.get_executor(), std::vector<std::string>{"ab", "c\n", "d", "e"},
            std::chrono::milliseconds(100)));
        c->req.body = bodies.back().get();
        c->req.content_length = 6;
        in_flight* raw = c.get();
        net::co_spawn(io, drive(h, c->req, c->out, c->writer), [raw](std::exception_ptr e) {
            raw->finished = std::chrono::steady_clock::now();
            if (e) std::rethrow_exception(e);
        });
        slow.push_back(std::move(c));
    }
    in_flight quick;
    quick.req = make_request("GET", "/", "fast");
    net::steady_timer later(io, std::chrono::milliseconds(150));
    later.async_wait([&](boost::system::error_code) {
        net::co_spawn(io, drive(h, quick.req, quick.out, quick.writer), [&](std::exception_ptr e) {
            quick.finished = std::chrono::steady_clock::now();
            if (e) std::rethrow_exception(e);
        });
    });
    io.run_for(std::chrono::seconds(20));
    REQUIRE(quick.out.done);
    CHECK(json::parse(quick.out.body)["parts"] == json::array());
    for (auto& c : slow) {
        REQUIRE(c->out.done);
        json r = json::parse(c->out.body);
        CHECK(r["parts"] == json::array({"abc", "\n", "de"}));
        CHECK(r["same_task"] == true);
        CHECK(quick.finished < c->finished);
    }
}

TEST_CASE("wsgi: concurrent requests never see each other's state", "[wsgi][concurrency]") {
    const handler h = wsgi::load("unit_apps:isolation");
    net::io_context io;
    std::vector<std::unique_ptr<in_flight>> calls;
    // Two waves, so that the second runs on fibers (and thread states) the first one used.
    for (int wave = 0; wave < 2; ++wave) {
        for (int i = 0; i < 100; ++i) {
            auto c = std::make_unique<in_flight>();
            c->req = make_request("GET", "/", "r" + std::to_string(wave) + "-" + std::to_string(i));
            net::co_spawn(io, drive(h, c->req, c->out, c->writer), [](std::exception_ptr e) {
                if (e) std::rethrow_exception(e);
            });
            calls.push_back(std::move(c));
        }
        io.run_for(std::chrono::seconds(20));
        io.restart();
    }
    for (auto& c : calls) {
        REQUIRE(c->out.done);
        REQUIRE(c->out.res.status == 200);
        json r = json::parse(c->out.body);
        INFO(c->out.body);
        CHECK(r["rid"] == c->req.query_string);
        CHECK(r["problems"].empty());
    }
}
