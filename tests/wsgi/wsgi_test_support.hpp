// Test helpers: call a WSGI handler directly with a filled corgi::request on an io_context the test
// runs, with a fake body source (pieces delivered slowly by timers) and a fake body writer
// (collects, or fails on demand).
#pragma once

#include <corgi/core/handler.hpp>
#include <corgi/core/http_error.hpp>
#include <corgi/core/request.hpp>
#include <corgi/core/response.hpp>
#include <corgi/core/task.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace corgi::test {

using namespace std::chrono_literals;

// Delivers `pieces` one by one, each after `delay`; optionally throws `error_status` instead of the
// end.
class slow_body : public body_source {
  public:
    slow_body(net::any_io_executor ex, std::vector<std::string> pieces,
              std::chrono::milliseconds delay = 0ms, int error_status = 0)
        : ex_(std::move(ex)),
          pieces_(std::move(pieces)),
          delay_(delay),
          error_status_(error_status) {}

    task<std::string_view> read_some() override {
        if (delay_.count() > 0) {
            net::steady_timer t(ex_, delay_);
            co_await t.async_wait(net::use_awaitable);
        }
        if (next_ < pieces_.size()) co_return std::string_view(pieces_[next_++]);
        if (error_status_) throw http_error(error_status_, "body failed on purpose");
        co_return std::string_view();
    }
    std::size_t reads() const { return next_; }

  private:
    net::any_io_executor ex_;
    std::vector<std::string> pieces_;
    std::chrono::milliseconds delay_;
    int error_status_;
    std::size_t next_ = 0;
};

// Collects what a streaming body writes; throws (client gone) on write number `fail_on_write` if
// set.
class collecting_writer : public body_writer {
  public:
    std::string data;
    std::size_t writes = 0;
    std::optional<std::size_t> fail_on_write;
    task<void> write(std::string_view piece) override {
        ++writes;
        if (fail_on_write && writes >= *fail_on_write)
            throw std::runtime_error("client went away (test)");
        data.append(piece);
        co_return;
    }
};

struct outcome {
    bool done = false;
    response res;
    std::string body;  // string body, or what the producer wrote
    bool streamed = false;
    bool file = false;
    std::exception_ptr error;  // from the handler or the producer
    std::size_t writes = 0;
};

// Runs the handler and, for a streaming body, its producer, on `io`.
inline task<void> drive(const handler& h, request& req, outcome& out, collecting_writer& w) {
    try {
        out.res = co_await h(req);
        if (auto* s = std::get_if<std::string>(&out.res.body)) {
            out.body = *s;
        } else if (auto* p = std::get_if<body_producer>(&out.res.body)) {
            out.streamed = true;
            co_await (*p)(w);
            out.body = w.data;
        } else {
            out.file = true;
        }
    } catch (...) {
        out.error = std::current_exception();
        out.body = w.data;
    }
    out.writes = w.writes;
    out.done = true;
}

inline request make_request(std::string method, std::string path, std::string query = {}) {
    request req;
    req.method = std::move(method);
    req.path = path;
    req.path_info = std::move(path);
    req.query_string = std::move(query);
    req.target = req.path_info + (req.query_string.empty() ? "" : "?" + req.query_string);
    req.server_name = "127.0.0.1";
    req.server_port = 8000;
    req.remote_addr = "127.0.0.1";
    req.remote_port = 40000;
    return req;
}

// Calls `h` once and waits (at most `limit`) for the whole response.
inline outcome call(const handler& h, request& req, std::optional<std::size_t> fail_on_write = {},
                    std::chrono::seconds limit = 20s) {
    net::io_context io;
    outcome out;
    collecting_writer w;
    w.fail_on_write = fail_on_write;
    net::co_spawn(io, drive(h, req, out, w), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
    });
    io.run_for(limit);
    REQUIRE(out.done);
    return out;
}

inline std::string error_text(const std::exception_ptr& e) {
    try {
        if (e) std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return x.what();
    }
    return {};
}

}  // namespace corgi::test
