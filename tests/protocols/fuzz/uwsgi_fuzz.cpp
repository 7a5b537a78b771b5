// libFuzzer target: arbitrary bytes as a uwsgi request head, through the parser and the CGI request
// builder, exactly as the session runs them.
#include "cgi_vars.hpp"
#include "uwsgi_parser.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static corgi::request req;
    static corgi::protocols::detail::cgi_request_builder builder;
    namespace uwsgi = corgi::protocols::detail::uwsgi;
    std::string_view in(reinterpret_cast<const char*>(data), size);
    // Every prefix the session might see before the head is complete must be handled too.
    for (std::size_t n : {std::size_t(0), size / 3, size / 2})
        (void)uwsgi::parse_head(in.substr(0, n), 65535);
    auto head = uwsgi::parse_head(in, 4096);
    if (head.status != uwsgi::parse_status::complete) return 0;
    builder.begin(req, "uwsgi");
    if (uwsgi::for_each_var(head.vars, [&](auto k, auto v) { builder.add(k, v); }) == nullptr)
        (void)builder.finish();
    return 0;
}
