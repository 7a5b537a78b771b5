// The live status page (status_page.html, a plain HTML page with an inline script that polls the
// stats JSON), embedded into the binary at build time; the stats HTTP listener serves it at
// /_corgi/status.
#pragma once

#include <string_view>

namespace corgi::master {

// The whole HTML document (UTF-8), alive for the whole program.
std::string_view status_page_html() noexcept;

}  // namespace corgi::master
