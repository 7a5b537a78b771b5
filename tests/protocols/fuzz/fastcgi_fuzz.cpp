// libFuzzer target: arbitrary bytes as the records of one FastCGI connection, cut into pieces of
// varying size, through the record reader and the CGI request builder, driven the way the session
// drives them.
#include "cgi_vars.hpp"
#include "fastcgi_parser.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace fcgi = corgi::protocols::detail::fastcgi;
    using kind = fcgi::reader::event_kind;
    if (size == 0) return 0;
    static corgi::request req;
    static corgi::protocols::detail::cgi_request_builder builder;
    // The first byte picks the piece size, so that records split at every offset get explored.
    std::size_t step = std::size_t(data[0]) % 64 + 1;
    std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
    fcgi::reader reader(4096, {10, 10}, 64);
    for (std::size_t i = 0; i < in.size(); i += step) {
        auto space = reader.writable();
        std::size_t n = std::min({step, in.size() - i, space.size()});
        std::copy_n(in.data() + i, n, space.data());
        reader.commit(n);
        if (n < step) i -= step - n;  // the rest of this piece comes with the next one
        for (;;) {
            auto e = reader.next();
            reader.replies().clear();
            if (e.kind == kind::need_more) break;
            if (e.kind == kind::error) return 0;
            switch (e.kind) {
                case kind::params_complete:
                    builder.begin(req, "fastcgi");
                    if (fcgi::for_each_pair(e.data, [&](auto k, auto v) { builder.add(k, v); }) ==
                        nullptr)
                        (void)builder.finish();
                    break;
                case kind::stdin_data: {
                    // Reads the piece's first and last bytes: ASan checks that the view lies inside
                    // the reader's buffer.
                    volatile char edge = 0;
                    if (!e.data.empty()) edge = static_cast<char>(e.data.front() ^ e.data.back());
                    (void)edge;
                    break;
                }
                case kind::stdin_end:
                case kind::abort_request:
                    reader.finish_request();
                    break;
                default:
                    break;
            }
        }
    }
    return 0;
}
