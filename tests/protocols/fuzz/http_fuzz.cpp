// libFuzzer target for corgi's HTTP request parser (protocols/src/http_parser.cpp, the one the
// HTTP sessions run): arbitrary bytes under limits chosen by the input, fed in pieces as a socket
// delivers them, kept in a buffer as the session keeps them, pipelined requests one after
// another. A refusal must come with one of the statuses the session answers.
#include "http_parser.hpp"

#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace http = boost::beast::http;
    using corgi::protocols::detail::http_parser;
    if (size < 2) return 0;
    // First byte: the piece size; second: small limits (so that they are reached) or defaults.
    const std::size_t step = std::size_t(data[0]) % 128 + 1;
    corgi::server_limits limits;
    if (data[1] & 1) {
        limits.max_header_bytes = 1024 + (data[1] >> 1) * 64;
        limits.max_body_bytes = data[1] * 4;
        limits.limit_request_line = data[1] & 2 ? 0 : 64 + data[1];
        limits.limit_request_fields = data[1] & 4 ? 0 : data[1] % 16;
        limits.limit_request_field_size = data[1] & 8 ? 0 : 32 + data[1];
    }
    const char* p = reinterpret_cast<const char*>(data) + 2;
    const char* const end = reinterpret_cast<const char*>(data) + size;

    corgi::request req;
    std::optional<http_parser> parser;
    auto fresh = [&] {
        req.reset();
        parser.emplace(req, limits);
    };
    fresh();
    std::string buffer;  // what arrived and was not consumed, as the session's flat buffer
    std::size_t body_bytes = 0;
    for (;;) {
        const std::size_t more = std::min<std::size_t>(step, static_cast<std::size_t>(end - p));
        buffer.append(p, more);
        p += more;
        boost::beast::error_code ec;
        std::size_t used = parser->put(boost::asio::buffer(buffer), ec);
        if (used > buffer.size()) std::abort();
        buffer.erase(0, used);
        body_bytes += parser->body_piece().size();
        parser->body_piece().clear();
        if (ec && ec != http::error::need_more) {
            const int status = parser->status(ec);
            if (status != 400 && status != 413 && status != 414 && status != 431 && status != 501)
                std::abort();
            (void)parser->reason(ec);
            return 0;  // the session answers and closes
        }
        if (parser->is_header_done() && body_bytes > limits.max_body_bytes) std::abort();
        if (parser->is_done()) {
            if (req.method.empty() || req.path.empty()) std::abort();
            body_bytes = 0;
            fresh();  // the next pipelined request
            continue;
        }
        if (p == end && (used == 0 || ec == http::error::need_more)) {
            if (parser->got_some()) {
                boost::beast::error_code eof_ec;
                parser->put_eof(eof_ec);
            }
            return 0;
        }
    }
}
