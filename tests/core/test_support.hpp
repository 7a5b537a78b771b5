// Helpers for core's unit tests: run a handler to completion on a private io_context, fake request
// bodies, and a trivial handler for maps whose targets do not matter.
#pragma once

#include <corgi/core/handler.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <utility>

namespace corgi::test {

// A fresh directory under the temp dir, removed at the end of the test.
struct temp_dir {
    std::filesystem::path path;
    explicit temp_dir(const std::string& stem = "corgi-test") {
        std::random_device rd;
        path = std::filesystem::temp_directory_path() /
               (stem + "-" + std::to_string(rd()) + std::to_string(rd()));
        std::filesystem::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    // Writes `content` to path/rel, creating directories on the way.
    void write(const std::filesystem::path& rel, const std::string& content) const {
        std::filesystem::create_directories((path / rel).parent_path());
        std::ofstream(path / rel, std::ios::binary) << content;
    }
};

// Runs `h(req)` to completion; rethrows what the handler threw.
inline response run(const handler& h, request& req) {
    net::io_context io;
    std::optional<response> out;
    std::exception_ptr error;
    net::co_spawn(io, h(req), [&](std::exception_ptr e, response r) {
        if (e) {
            error = e;
        } else {
            out = std::move(r);
        }
    });
    io.run();
    if (error) std::rethrow_exception(error);
    return std::move(*out);
}

inline request make_request(std::string method, std::string path, std::string query = {}) {
    request req;
    req.method = std::move(method);
    req.path = path;
    req.path_info = std::move(path);
    req.query_string = std::move(query);
    return req;
}

// A body delivered in pieces of `chunk` bytes.
class string_body : public body_source {
  public:
    explicit string_body(std::string data, std::size_t chunk = 1000)
        : data_(std::move(data)), chunk_(chunk) {}
    task<std::string_view> read_some() override {
        std::size_t n = std::min(chunk_, data_.size() - pos_);
        std::string_view piece(data_.data() + pos_, n);
        pos_ += n;
        co_return piece;
    }

  private:
    std::string data_;
    std::size_t chunk_;
    std::size_t pos_ = 0;
};

// A handler that answers "endpoint|script_name|path_info": what the dispatcher told it.
inline handler reporter() {
    return [](request& req) -> task<response> {
        co_return response::text(req.endpoint + "|" + req.script_name + "|" + req.path_info);
    };
}

inline const std::string& body_of(const response& res) { return std::get<std::string>(res.body); }

}  // namespace corgi::test
