// Command-line parsing for the corgi executable: flags onto corgi::config (after the JSON file),
// with every mistake reported as a usage_error (exit status 2).
#pragma once

#include <corgi/core/config.hpp>

#include <stdexcept>
#include <string>
#include <vector>

namespace corgi::cli {

struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

enum class command { serve, routes, check_config, help, version };

struct options {
    command cmd = command::serve;
    config cfg;
    std::vector<std::string> config_files;
    std::string match;  // corgi routes --match "GET /path"
    std::string build;  // corgi routes --build "endpoint key=value ..."
};

// Parses argv (without argv[0]); reads --config files as it meets them so later flags override
// them.
options parse(const std::vector<std::string>& args);

const char* help_text();

}  // namespace corgi::cli
