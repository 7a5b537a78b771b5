// Command-line parsing for the corgi executable: config files, CORGI_* variables and flags onto
// the settings (through the settings schema), with every mistake reported as a usage_error or a
// config_error naming the flag, key, variable or ini line (exit status 2).
#pragma once

#include <corgi/core/config.hpp>
#include <corgi/wsgi/settings.hpp>

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>
#include <vector>

namespace corgi::cli {

struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

enum class command { serve, routes, check_config, print_config, help, version };

// Everything the corgi binary is configured with: core's settings and the WSGI layer's.
struct settings : config {
    wsgi::python_settings python;
    std::string routes_origin;  // the JSON file the routes came from (named in URL-map errors)
};

struct options {
    command cmd = command::serve;
    settings cfg;
    std::vector<std::string> config_files;  // the JSON files read
    std::string match;                      // corgi routes --match "GET /path"
    std::string build;                      // corgi routes --build "endpoint key=value ..."
    std::vector<std::string> warnings;      // ignored ini options, unknown CORGI_* variables
    nlohmann::json effective;               // --print-config: the settings in effect
};

// Parses argv (without argv[0]) with `environment` (environ) for CORGI_* variables: files first
// (--config, --ini, or CORGI_CONFIG/CORGI_INI when no file flag is given), then the variables,
// then the flags, each through the same validation.
options parse(const std::vector<std::string>& args, char** environment = nullptr);

const char* help_text();

}  // namespace corgi::cli
