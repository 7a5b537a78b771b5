// One settings schema for every source: the JSON config file, uWSGI ini files, CORGI_* environment
// variables and the command line. Each setting is described once (its JSON key, its flags, its
// uWSGI ini names, its type and range) and checked by one validation whatever the source;
// precedence is command line > environment > files. Each layer registers its own section (core:
// listeners, server, logs, processes, stats; wsgi: the Python settings), so core knows nothing of
// the layers above it.
#pragma once

#include <corgi/core/config.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace corgi {

enum class setting_type {
    text,     // a string
    boolean,  // true/false; a flag without a value is true, --no-FLAG is false
    count,    // a non-negative integer in [min, max]
    seconds,  // a non-negative number of seconds (fractions allowed)
    address,  // host:port, :port, [ipv6]:port, unix:/path (or a path starting with '/')
    mode,     // an octal file mode: "660" or 660
    list,     // strings; each use adds one
    json,     // any JSON value, checked by the setting itself (routes, listen, mounts)
};

// Where a value came from, lowest precedence first.
enum class setting_source { file, environment, command_line };

struct setting {
    // JSON keys, the first canonical; a section's settings are "section/key" ("limits/harakiri").
    std::vector<std::string> keys;
    setting_type type = setting_type::text;
    // Command-line flags, the first canonical (it names the environment variable: --max-rss ->
    // CORGI_MAX_RSS); aliases are uWSGI's and Gunicorn's spellings ("-w", "--workers").
    std::vector<std::string> flags;
    // uWSGI ini names with the same meaning (also accepted as --NAME flags).
    std::vector<std::string> ini;
    std::uint64_t min = 0, max = UINT64_MAX;  // count bounds
    // Repeatable settings that fill one list share a group ("listen"); values from a higher
    // source replace the list a lower source filled. Those (the settings with `clear`) take
    // comma-separated values in one environment variable.
    std::string group;
    // The text form (flags, environment, ini) -> the JSON value `set` takes; by default from the
    // type.
    std::function<nlohmann::json(std::string_view text)> from_text;
    // Applies a value already checked against the type (throws std::invalid_argument or
    // config_error for what the type cannot say).
    std::function<void(const nlohmann::json& value)> set;
    // Empties a group's list (for a higher source's values).
    std::function<void()> clear;
    // The effective value for --print-config; null leaves the setting out.
    std::function<nlohmann::json()> get;

    const std::string& key() const { return keys.front(); }
    // CORGI_ + the canonical flag in capitals ("" when the setting has no flag).
    std::string environment_name() const;
};

class settings_schema {
  public:
    void add(setting s);

    const setting* find_key(std::string_view key) const;
    const setting* find_flag(std::string_view flag) const;
    const setting* find_ini(std::string_view name) const;
    const setting* find_environment(std::string_view name) const;
    const std::vector<setting>& all() const noexcept { return settings_; }

    // Checks `value` against the setting's type and range, then applies it. Errors are
    // config_error naming `where` (the flag, the variable, "FILE: /pointer", "FILE:LINE").
    void apply(const setting& s, const nlohmann::json& value, const std::string& where,
               setting_source source);
    // The same from text (a flag's value, a variable, an ini value).
    void apply_text(const setting& s, std::string_view text, const std::string& where,
                    setting_source source);
    // A JSON config document (unknown keys are errors); `file` names it in errors.
    void apply_document(const nlohmann::json& doc, const std::string& file);
    // Every CORGI_* variable of `environ` that names a setting; others are reported through
    // `unknown` (the binary warns).
    void apply_environment(char** environ, const std::function<void(const std::string&)>& unknown);
    // The effective settings as a JSON document that apply_document accepts.
    nlohmann::json effective() const;

  private:
    void apply_section(const nlohmann::json& obj, const std::string& prefix,
                       const std::string& file, const std::string& pointer);
    std::vector<setting> settings_;
    std::map<std::string, setting_source, std::less<>> group_source_;
    bool in_document_ = false;  // list items are named by JSON pointers ("/pythonpath/1")
};

// The text of a boolean: true/false, yes/no, on/off, 1/0 (any case); throws config_error at
// `where`.
bool parse_boolean_text(std::string_view text, const std::string& where);
// A seconds value as JSON (whole seconds as integers).
nlohmann::json seconds_json(std::chrono::milliseconds ms);

// "/a" + "b/c" -> "/a/b~1c" (RFC 6901 escaping).
std::string json_pointer_child(const std::string& pointer, std::string_view key);

// Builders for the common kinds, bound to a field (sections customise the result further).
setting seconds_setting(std::vector<std::string> keys, std::vector<std::string> flags,
                        std::vector<std::string> ini, std::chrono::milliseconds& field);
// `print_empty`: --print-config shows "" rather than leaving the setting out.
setting text_setting(std::vector<std::string> keys, std::vector<std::string> flags,
                     std::vector<std::string> ini, std::string& field, bool print_empty = true);
setting bool_setting(std::vector<std::string> keys, std::vector<std::string> flags,
                     std::vector<std::string> ini, bool& field);
template <class Int>
setting count_setting(std::vector<std::string> keys, std::vector<std::string> flags,
                      std::vector<std::string> ini, Int& field, std::uint64_t min,
                      std::uint64_t max) {
    setting s;
    s.keys = std::move(keys);
    s.type = setting_type::count;
    s.flags = std::move(flags);
    s.ini = std::move(ini);
    s.min = min;
    s.max = max;
    s.set = [&field](const nlohmann::json& v) { field = static_cast<Int>(v.get<std::uint64_t>()); };
    s.get = [&field] { return static_cast<std::uint64_t>(field); };
    return s;
}

// core's section: listeners, server options, limits and timeouts, logs, the URL map, processes and
// stats.
void add_core_settings(settings_schema& schema, config& cfg);

}  // namespace corgi
