// Built-in targets' variants used by the JSON route compiler (private to core).
#pragma once

#include <corgi/core/handler.hpp>

#include <string>
#include <utility>
#include <vector>

namespace corgi::detail {

// return_target with extra response headers ({"return": {"headers": {...}}}).
handler return_target_with_headers(int status, std::string body, std::string content_type,
                                   std::vector<std::pair<std::string, std::string>> headers);

}  // namespace corgi::detail
