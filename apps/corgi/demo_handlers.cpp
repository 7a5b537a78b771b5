// Demo endpoints: small, but each shows one part of the request model (arguments, query, streaming,
// timers, bodies, errors).
#include "demo_handlers.hpp"

#include <corgi/core/http_error.hpp>
#include <corgi/core/supervision.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <unistd.h>

#include <atomic>
#include <charconv>
#include <mutex>
#include <stdexcept>

namespace corgi::demo {

namespace {

std::uint64_t query_number(const request& req, std::string_view name, std::uint64_t fallback,
                           std::uint64_t max) {
    auto v = req.query_param(name);
    if (!v) return fallback;
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (ec != std::errc() || end != v->data() + v->size() || n > max)
        throw bad_request(std::string(name) + " must be an integer up to " + std::to_string(max));
    return n;
}

task<response> hello(request& req) {
    std::string name = req.find_arg("name") ? req.arg<std::string>("name") : std::string("World");
    co_return response::text("Hello, " + name + "!\n");
}

task<response> plaintext(request&) { co_return response::text("Hello, World!"); }

task<response> json_hello(request&) { co_return response::json({{"message", "Hello, World!"}}); }

// ?chunks=N lines, each written as it is produced (chunked on HTTP/1.1).
task<response> stream(request& req) {
    auto chunks = query_number(req, "chunks", 5, 100000);
    co_return response::stream(
        [chunks](body_writer& w) -> task<void> {
            for (std::uint64_t i = 0; i < chunks; ++i)
                co_await w.write("chunk " + std::to_string(i) + "\n");
        },
        "text/plain; charset=utf-8");
}

// ?ms=N: waits on a timer (the io thread serves others meanwhile).
task<response> sleep_handler(request& req) {
    auto ms = query_number(req, "ms", 100, 600000);
    net::steady_timer timer(co_await net::this_coro::executor, std::chrono::milliseconds(ms));
    co_await timer.async_wait(net::as_tuple(net::use_awaitable));
    co_return response::text("slept " + std::to_string(ms) + " ms\n");
}

// The request body, back (up to 64 MiB).
task<response> echo_body(request& req) {
    std::string body = co_await req.read_all(64 * 1024 * 1024);
    response res(200, std::move(body), "application/octet-stream");
    co_return res;
}

// ?bytes=N of 'x'.
task<response> big(request& req) {
    auto n = query_number(req, "bytes", 1024 * 1024, 1ull << 30);
    co_return response::text(std::string(n, 'x'));
}

// The process serving and the one where the worker-start hook ran: the same pid in every
// pre-forked worker, which is what a C++ post-fork hook is for.
std::atomic<int> hook_pid{0};

task<response> process(request&) {
    co_return response::text("pid=" + std::to_string(::getpid()) +
                             " worker_start_hook_pid=" + std::to_string(hook_pid.load()) + "\n");
}

task<response> fail(request&) {
    throw std::runtime_error("the demo 'fail' handler failed on purpose");
    co_return response();
}

void register_worker_start_hook() {
    static std::once_flag registered;
    std::call_once(registered, [] {
        supervision::at_worker_start([] { hook_pid = static_cast<int>(::getpid()); });
    });
}

}  // namespace

std::map<std::string, handler, std::less<>> handlers() {
    register_worker_start_hook();
    return {{"process", process},     {"hello", hello},   {"plaintext", plaintext},
            {"json", json_hello},     {"stream", stream}, {"sleep", sleep_handler},
            {"echo_body", echo_body}, {"big", big},       {"fail", fail}};
}

std::vector<route_entry> routes() {
    register_worker_start_hook();
    return {
        rule(
            "/", "index",
            return_target(200,
                          "corgi demo: /hello/<name> /plaintext /json /stream?chunks=N /sleep?ms=N "
                          "/echo/<path:rest> /upload (POST) /big?bytes=N /process\n")),
        rule("/hello", "hello", hello),
        rule("/hello/<name>", "hello_name", hello),
        rule("/plaintext", "plaintext", plaintext),
        rule("/json", "json", json_hello),
        rule("/stream", "stream", stream),
        rule("/sleep", "sleep", sleep_handler),
        rule("/echo/<path:rest>", "echo", echo_target()),
        rule("/upload", "upload", echo_body, {.methods = {"POST", "PUT"}}),
        rule("/big", "big", big),
        rule("/fail", "fail", fail),
        rule("/process", "process", process),
    };
}

}  // namespace corgi::demo
