// libFuzzer target: arbitrary bytes as an SCGI request head, through the netstring parser and the
// CGI request builder, exactly as the session runs them.
#include "cgi_vars.hpp"
#include "scgi_parser.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static corgi::request req;
    static corgi::protocols::detail::cgi_request_builder builder;
    namespace scgi = corgi::protocols::detail::scgi;
    std::string_view in(reinterpret_cast<const char*>(data), size);
    for (std::size_t n : {std::size_t(0), size / 3, size / 2})
        (void)scgi::parse_head(in.substr(0, n), 4096);
    auto head = scgi::parse_head(in, 4096);
    if (head.status != scgi::parse_status::complete) return 0;
    builder.begin(req, "scgi");
    if (scgi::for_each_var(head.vars, [&](auto k, auto v) { builder.add(k, v); }) == nullptr)
        (void)builder.finish();
    return 0;
}
