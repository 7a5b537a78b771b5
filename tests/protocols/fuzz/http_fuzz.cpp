// libFuzzer target for the HTTP request path: arbitrary bytes into Boost.Beast's request parser
// (the parser corgi's HTTP sessions are built on) under corgi's default limits, fed in pieces as a
// socket would deliver them, with pipelined requests parsed one after another.
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace http = boost::beast::http;
    if (size == 0) return 0;
    std::size_t step = std::size_t(data[0]) % 128 + 1;
    const char* p = reinterpret_cast<const char*>(data) + 1;
    std::size_t left = size - 1;
    std::optional<http::request_parser<http::string_body>> parser;
    auto fresh = [&] {
        parser.emplace();
        parser->eager(true);
        parser->header_limit(64 * 1024);
        parser->body_limit(1024 * 1024);
    };
    fresh();
    std::size_t window = 0;  // bytes offered: what arrived so far and was not consumed
    while (left > 0) {
        window = std::min(left, window + step);
        boost::beast::error_code ec;
        std::size_t used = parser->put(boost::asio::buffer(p, window), ec);
        p += used;
        left -= used;
        window -= used;
        if (used == 0 && window == left && (ec == http::error::need_more || !ec))
            break;  // nothing more to offer
        if (ec == http::error::need_more) {
            if (window == left) break;  // no more input will come
            continue;
        }
        if (ec) break;
        if (parser->is_done()) {
            auto& req = parser->get();
            (void)req.target(), (void)req.method_string(), (void)req.body().size();
            fresh();  // the next pipelined request
        }
    }
    return 0;
}
