// Internal to protocols: rebuilds a corgi::request from the CGI-style variables a front proxy sends
// (uwsgi, FastCGI and SCGI all carry the same REQUEST_METHOD / REQUEST_URI / PATH_INFO / HTTP_*
// set), so the three protocols agree on what a handler sees, and nginx's stock *_params files work
// unchanged.
#pragma once

#include <corgi/core/request.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace corgi::protocols::detail {

// Parses a non-negative decimal with no sign, no blanks and no overflow; nullopt otherwise.
std::optional<std::uint64_t> parse_decimal(std::string_view text) noexcept;

// Feeds one request's variables into a request object. One builder per connection: its scratch
// strings keep their capacity. The views given to add() must stay valid until finish() returns.
class cgi_request_builder {
  public:
    // Starts a request: resets `req` (keeping capacity) and remembers where it goes.
    void begin(request& req, std::string_view protocol_name);
    void add(std::string_view name, std::string_view value);
    // Derives path, script_name, path_info, target and query_string. Returns nullptr when the
    // request is usable, otherwise what is wrong with it (the request is then answered 400).
    const char* finish();

  private:
    void set_content_length(std::string_view value);

    request* req_ = nullptr;
    std::string scratch_;
    std::string_view request_uri_, path_info_, script_name_, document_uri_, query_string_;
    std::string_view http_content_length_, http_content_type_;
    bool has_request_uri_ = false, has_query_string_ = false;
    bool has_content_length_ = false, has_content_type_ = false;
    const char* error_ = nullptr;
};

// The path of a request target: "/a%20b" of "/a%20b?x=1"; the path of an absolute-form target too.
std::string_view target_path(std::string_view target) noexcept;

}  // namespace corgi::protocols::detail
