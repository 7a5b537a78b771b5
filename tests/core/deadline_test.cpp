// Per-request deadlines in the dispatcher (--harakiri, a route's "timeout"): a handler still
// running at its deadline is cancelled through Asio's per-operation cancellation and the request
// answered 504; handlers that end in time, and handlers that fail, are not held up by the deadline;
// a handler that ignores its cancellation is reported as stuck to the supervision channel.
#include <corgi/core/http_error.hpp>
#include <corgi/core/route_config.hpp>
#include <corgi/core/supervision.hpp>
#include <corgi/core/url_map.hpp>

#include "test_support.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using corgi::handler;
using corgi::request;
using corgi::response;
using corgi::task;
namespace net = corgi::net;
using steady = std::chrono::steady_clock;

namespace {

// What a waiting handler went through.
struct observed {
    bool destroyed = false;  // a local's destructor ran
    bool aborted = false;    // its pending wait completed with operation_aborted
    bool finished = false;   // it reached its co_return
};

struct on_destroy {
    bool& flag;
    ~on_destroy() { flag = true; }
};

// Waits `wait` on a timer, then answers 200.
handler waiting(std::shared_ptr<observed> seen, std::chrono::milliseconds wait) {
    return [seen, wait](request&) -> task<response> {
        on_destroy guard{seen->destroyed};
        net::steady_timer timer(co_await net::this_coro::executor, wait);
        try {
            co_await timer.async_wait(net::use_awaitable);
        } catch (const boost::system::system_error& e) {
            seen->aborted = e.code() == net::error::operation_aborted;
            throw;
        }
        seen->finished = true;
        co_return response::text("done");
    };
}

corgi::rule_options with_timeout(std::chrono::milliseconds t) {
    corgi::rule_options o;
    o.timeout = t;
    return o;
}

std::chrono::milliseconds elapsed_since(steady::time_point t0) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0);
}

// Records what a worker would tell its master.
struct recording_channel final : corgi::supervision::channel {
    std::vector<std::string> replacements;
    corgi::supervision::replacement_reason reason{};
    void heartbeat(std::size_t) noexcept override {}
    void request_started() noexcept override {}
    void request_finished() noexcept override {}
    void request_replacement(corgi::supervision::replacement_reason why,
                             std::string_view detail) noexcept override {
        reason = why;
        replacements.emplace_back(detail);
    }
};

struct installed_channel {
    recording_channel channel;
    installed_channel() { corgi::supervision::install(&channel); }
    ~installed_channel() { corgi::supervision::install(nullptr); }
};

}  // namespace

TEST_CASE("deadline: a waiting C++ handler is cancelled at its deadline and the request gets 504",
          "[unit][deadline]") {
    auto seen = std::make_shared<observed>();
    auto map = std::make_shared<corgi::url_map>(
        std::vector{corgi::rule("/wait", "wait", waiting(seen, 30s))});
    auto dispatch = corgi::make_dispatcher(map, {.request_timeout = 200ms});
    auto req = corgi::test::make_request("GET", "/wait");
    const auto t0 = steady::now();
    auto res = corgi::test::run(dispatch, req);
    const auto took = elapsed_since(t0);
    CHECK(res.status == 504);
    CHECK(took >= 190ms);
    CHECK(took < 5s);  // not the handler's 30 s: its wait was cancelled
    CHECK(seen->aborted);
    CHECK(seen->destroyed);
    CHECK_FALSE(seen->finished);
    CHECK(req.time_limit == 200ms);
}

TEST_CASE("deadline: handlers that end in time, or fail, are not held up by it",
          "[unit][deadline]") {
    auto seen = std::make_shared<observed>();
    auto map = std::make_shared<corgi::url_map>(std::vector{
        corgi::rule("/quick", "quick", waiting(seen, 20ms)),
        corgi::rule("/fail", "fail",
                    [](request&) -> task<response> {
                        throw corgi::forbidden("no");
                        co_return response();
                    }),
    });
    auto dispatch = corgi::make_dispatcher(map, {.request_timeout = 10s});
    auto quick = corgi::test::make_request("GET", "/quick");
    auto t0 = steady::now();
    auto res = corgi::test::run(dispatch, quick);
    CHECK(res.status == 200);
    CHECK(corgi::test::body_of(res) == "done");
    CHECK(seen->finished);
    CHECK(elapsed_since(t0) < 5s);

    // The handler's exception comes out at once (then a 403), not after the 10 s deadline.
    auto failing = corgi::test::make_request("GET", "/fail");
    t0 = steady::now();
    CHECK_THROWS_AS(corgi::test::run(dispatch, failing), corgi::forbidden);
    CHECK(elapsed_since(t0) < 5s);
}

TEST_CASE("deadline: a route's timeout overrides the global one; 0 turns it off for the route",
          "[unit][deadline]") {
    auto seen = std::make_shared<observed>();
    auto map = std::make_shared<corgi::url_map>(std::vector{
        corgi::rule("/exempt", "exempt", waiting(seen, 400ms), with_timeout(0ms)),
        corgi::rule("/patient", "patient", waiting(seen, 400ms), with_timeout(5000ms)),
        corgi::rule("/strict", "strict", waiting(seen, 30s), with_timeout(100ms)),
        corgi::rule("/global", "global", waiting(seen, 400ms)),
        corgi::mount("/m", waiting(seen, 30s), "m", 100ms),
    });
    auto with_global = corgi::make_dispatcher(map, {.request_timeout = 150ms});
    auto without_global = corgi::make_dispatcher(map, {});
    auto status = [](const handler& d, const char* path) {
        auto req = corgi::test::make_request("GET", path);
        return corgi::test::run(d, req).status;
    };
    CHECK(status(with_global, "/exempt") == 200);
    CHECK(status(with_global, "/patient") == 200);
    CHECK(status(with_global, "/global") == 504);
    CHECK(status(without_global, "/global") == 200);
    CHECK(status(without_global, "/strict") == 504);
    CHECK(status(without_global, "/m/x") == 504);
}

TEST_CASE("deadline: a route's \"timeout\" in the JSON URL map", "[unit][deadline][config]") {
    corgi::route_targets targets;
    auto seen = std::make_shared<observed>();
    targets.handlers["wait"] = waiting(seen, 30s);
    auto map = corgi::compile_routes(nlohmann::json::parse(R"([
        {"rule": "/a", "handler": "wait", "timeout": 0.1},
        {"rule": "/b", "handler": "wait"},
        {"mount": "/m", "handler": "wait", "timeout": 0}])"),
                                     targets);
    CHECK(map->match("GET", "/a").timeout == 100ms);
    CHECK(map->match("GET", "/b").timeout == corgi::inherit_timeout);
    CHECK(map->match("GET", "/m/x").timeout == 0ms);
    auto dispatch = corgi::make_dispatcher(map, {});
    auto req = corgi::test::make_request("GET", "/a");
    CHECK(corgi::test::run(dispatch, req).status == 504);

    for (const char* bad : {R"([{"rule": "/a", "return": "x", "timeout": -1}])",
                            R"([{"rule": "/a", "return": "x", "timeout": "1"}])",
                            R"([{"mount": "/m", "return": "x", "timeout": null}])"}) {
        INFO(bad);
        try {
            corgi::compile_routes(nlohmann::json::parse(bad), targets);
            FAIL("accepted");
        } catch (const corgi::config_error& e) {
            CHECK(e.pointer == "/routes/0/timeout");
        }
    }
}

TEST_CASE("deadline: a streamed body still being produced at the deadline is cut off",
          "[unit][deadline]") {
    auto seen = std::make_shared<observed>();
    auto map = std::make_shared<corgi::url_map>(
        std::vector{corgi::rule("/stream", "stream", [seen](request&) -> task<response> {
            co_return response::stream([seen](corgi::body_writer& w) -> task<void> {
                on_destroy guard{seen->destroyed};
                co_await w.write("first");
                net::steady_timer timer(co_await net::this_coro::executor, 30s);
                co_await timer.async_wait(net::use_awaitable);
                seen->finished = true;
            });
        })});
    auto dispatch = corgi::make_dispatcher(map, {.request_timeout = 200ms});
    auto req = corgi::test::make_request("GET", "/stream");
    auto res = corgi::test::run(dispatch, req);
    REQUIRE(res.status == 200);  // the head was in time
    struct collecting_writer final : corgi::body_writer {
        std::string data;
        task<void> write(std::string_view d) override {
            data += d;
            co_return;
        }
    } writer;
    net::io_context io;
    std::exception_ptr error;
    const auto t0 = steady::now();
    net::co_spawn(io, std::get<corgi::body_producer>(res.body)(writer),
                  [&](std::exception_ptr e) { error = e; });
    io.run();
    CHECK(elapsed_since(t0) < 5s);
    CHECK(writer.data == "first");
    REQUIRE(error);
    try {
        std::rethrow_exception(error);
    } catch (const corgi::http_error& e) {
        CHECK(e.status() == 504);  // what the writer answers if nothing had gone out yet
    }
    CHECK(seen->destroyed);
    CHECK_FALSE(seen->finished);
}

TEST_CASE("deadline: a handler that ignores its cancellation past the grace is reported stuck",
          "[unit][deadline][supervision]") {
    installed_channel supervised;
    auto map = std::make_shared<corgi::url_map>(
        std::vector{corgi::rule("/stubborn", "stubborn", [](request&) -> task<response> {
            // Keeps waiting after its cancellation: each new wait is not cancelled again.
            co_await net::this_coro::throw_if_cancelled(false);
            for (int i = 0; i < 4; ++i) {
                net::steady_timer timer(co_await net::this_coro::executor, 200ms);
                co_await timer.async_wait(net::as_tuple(net::use_awaitable));
            }
            co_return response::text("late");
        })});
    auto dispatch = corgi::make_dispatcher(map, {.request_timeout = 100ms, .stuck_grace = 200ms});
    auto req = corgi::test::make_request("GET", "/stubborn");
    req.target = "/stubborn?x=1";
    auto res = corgi::test::run(dispatch, req);
    CHECK(res.status == 504);  // once it ended, however late
    REQUIRE(supervised.channel.replacements.size() == 1);
    CHECK(supervised.channel.reason == corgi::supervision::replacement_reason::stuck_request);
    CHECK(supervised.channel.replacements[0].find("GET /stubborn?x=1") != std::string::npos);
    CHECK(supervised.channel.replacements[0].find("route 'stubborn'") != std::string::npos);

    // In time, nothing is reported.
    supervised.channel.replacements.clear();
    auto quick_map = std::make_shared<corgi::url_map>(
        std::vector{corgi::rule("/q", "q", waiting(std::make_shared<observed>(), 30s))});
    auto quick = corgi::make_dispatcher(quick_map, {.request_timeout = 50ms, .stuck_grace = 100ms});
    auto q = corgi::test::make_request("GET", "/q");
    CHECK(corgi::test::run(quick, q).status == 504);
    CHECK(supervised.channel.replacements.empty());
}
