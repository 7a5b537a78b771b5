// The settings schema: one validation for the JSON file, ini files, the environment and flags.
#include <corgi/core/settings.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>

namespace corgi {

namespace {

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

// One element of a list or a whole scalar, checked against the type.
void check_type(const setting& s, const nlohmann::json& v, const std::string& where) {
    auto fail = [&](const std::string& what) {
        throw config_error(where, what + ", got " + v.dump());
    };
    switch (s.type) {
        case setting_type::text:
        case setting_type::list:
            if (!v.is_string()) fail("expected a string");
            break;
        case setting_type::boolean:
            if (!v.is_boolean()) fail("expected true or false");
            break;
        case setting_type::count: {
            if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<std::int64_t>() < 0))
                fail("expected a non-negative integer");
            auto n = v.get<std::uint64_t>();
            if (n < s.min || n > s.max)
                throw config_error(where, "must be between " + std::to_string(s.min) + " and " +
                                              std::to_string(s.max) + ", got " + std::to_string(n));
            break;
        }
        case setting_type::seconds:
            if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0)
                fail("expected a duration in seconds (a non-negative number)");
            break;
        case setting_type::address:
            if (!v.is_string())
                fail("expected an address (host:port, :port, [ipv6]:port, unix:/path)");
            try {
                listen_address::parse(v.get<std::string>());
            } catch (const std::invalid_argument& e) {
                throw config_error(where, e.what());
            }
            break;
        case setting_type::mode:
            if (v.is_number_unsigned()) {
                parse_socket_mode(std::to_string(v.get<std::uint64_t>()), where);
            } else if (v.is_string()) {
                parse_socket_mode(v.get<std::string>(), where);
            } else {
                fail("expected an octal mode such as \"660\"");
            }
            break;
        case setting_type::json:
            break;
    }
}

nlohmann::json default_from_text(const setting& s, std::string_view text,
                                 const std::string& where) {
    switch (s.type) {
        case setting_type::boolean:
            return parse_boolean_text(text, where);
        case setting_type::count: {
            std::uint64_t n = 0;
            auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
            if (text.empty() || ec != std::errc() || end != text.data() + text.size())
                throw config_error(
                    where, "expected a non-negative integer, got '" + std::string(text) + "'");
            return n;
        }
        case setting_type::seconds: {
            double seconds = 0;
            auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
            if (text.empty() || ec != std::errc() || end != text.data() + text.size() ||
                !std::isfinite(seconds) || seconds < 0)
                throw config_error(where, "expected seconds (a non-negative number), got '" +
                                              std::string(text) + "'");
            return seconds;
        }
        case setting_type::address:
            // uWSGI's and nginx's spelling of a unix socket: a bare path.
            if (text.starts_with("/") || text.starts_with("./")) return "unix:" + std::string(text);
            return std::string(text);
        case setting_type::json: {
            auto v = nlohmann::json::parse(text, nullptr, false);
            if (v.is_discarded()) throw config_error(where, "expected a JSON value");
            return v;
        }
        default:
            return std::string(text);
    }
}

}  // namespace

std::string json_pointer_child(const std::string& ptr, std::string_view key) {
    std::string escaped;
    for (char c : key) {
        if (c == '~')
            escaped += "~0";
        else if (c == '/')
            escaped += "~1";
        else
            escaped += c;
    }
    return ptr + "/" + escaped;
}

setting seconds_setting(std::vector<std::string> keys, std::vector<std::string> flags,
                        std::vector<std::string> ini, std::chrono::milliseconds& field) {
    setting s;
    s.keys = std::move(keys);
    s.type = setting_type::seconds;
    s.flags = std::move(flags);
    s.ini = std::move(ini);
    s.set = [&field](const nlohmann::json& v) {
        field = std::chrono::milliseconds(
            static_cast<std::int64_t>(std::llround(v.get<double>() * 1000.0)));
    };
    s.get = [&field] { return seconds_json(field); };
    return s;
}

setting text_setting(std::vector<std::string> keys, std::vector<std::string> flags,
                     std::vector<std::string> ini, std::string& field, bool print_empty) {
    setting s;
    s.keys = std::move(keys);
    s.flags = std::move(flags);
    s.ini = std::move(ini);
    s.set = [&field](const nlohmann::json& v) { field = v.get<std::string>(); };
    s.get = [&field, print_empty]() -> nlohmann::json {
        if (field.empty() && !print_empty) return nullptr;
        return field;
    };
    return s;
}

setting bool_setting(std::vector<std::string> keys, std::vector<std::string> flags,
                     std::vector<std::string> ini, bool& field) {
    setting s;
    s.keys = std::move(keys);
    s.type = setting_type::boolean;
    s.flags = std::move(flags);
    s.ini = std::move(ini);
    s.set = [&field](const nlohmann::json& v) { field = v.get<bool>(); };
    s.get = [&field] { return field; };
    return s;
}

bool parse_boolean_text(std::string_view text, const std::string& where) {
    std::string t = lower(text);
    if (t == "true" || t == "yes" || t == "on" || t == "1") return true;
    if (t == "false" || t == "no" || t == "off" || t == "0") return false;
    throw config_error(
        where, "expected true or false (yes/no, on/off, 1/0), got '" + std::string(text) + "'");
}

nlohmann::json seconds_json(std::chrono::milliseconds ms) {
    if (ms.count() % 1000 == 0) return ms.count() / 1000;
    return static_cast<double>(ms.count()) / 1000.0;
}

std::string setting::environment_name() const {
    if (flags.empty()) return {};
    std::string name = "CORGI_";
    for (char c : std::string_view(flags.front()).substr(flags.front().find_first_not_of('-')))
        name += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return name;
}

void settings_schema::add(setting s) {
    if (s.group.empty()) s.group = s.key();
    settings_.push_back(std::move(s));
}

const setting* settings_schema::find_key(std::string_view key) const {
    for (const auto& s : settings_)
        if (std::find(s.keys.begin(), s.keys.end(), key) != s.keys.end()) return &s;
    return nullptr;
}

const setting* settings_schema::find_flag(std::string_view flag) const {
    for (const auto& s : settings_)
        if (std::find(s.flags.begin(), s.flags.end(), flag) != s.flags.end()) return &s;
    // uWSGI's names work as flags too (--reload-on-rss 512), as on uWSGI's own command line.
    if (flag.starts_with("--"))
        if (const setting* s = find_ini(flag.substr(2))) return s;
    return nullptr;
}

const setting* settings_schema::find_ini(std::string_view name) const {
    for (const auto& s : settings_)
        if (std::find(s.ini.begin(), s.ini.end(), name) != s.ini.end()) return &s;
    return nullptr;
}

const setting* settings_schema::find_environment(std::string_view name) const {
    for (const auto& s : settings_)
        if (!s.flags.empty() && s.environment_name() == name) return &s;
    return nullptr;
}

void settings_schema::apply(const setting& s, const nlohmann::json& value, const std::string& where,
                            setting_source source) {
    // A list filled by a lower source is replaced, not extended, by a higher one.
    auto owner = group_source_.find(s.group);
    // The first value replaces the default list too (forwarded_allow_ips).
    if ((owner == group_source_.end() || owner->second < source) && s.clear) s.clear();
    group_source_[s.group] = source;
    auto set = [&](const nlohmann::json& v, const std::string& at) {
        check_type(s, v, at);
        try {
            s.set(v);
        } catch (const config_error& e) {
            // A setting that checks its own JSON names the place below it ("/0/http").
            throw config_error(at + e.pointer, e.message);
        } catch (const std::invalid_argument& e) {
            throw config_error(at, e.what());
        }
    };
    if (s.type == setting_type::list && value.is_array()) {
        for (std::size_t i = 0; i < value.size(); ++i)
            set(value[i], in_document_ ? where + "/" + std::to_string(i) : where);
        return;
    }
    set(value, where);
}

void settings_schema::apply_text(const setting& s, std::string_view text, const std::string& where,
                                 setting_source source) {
    nlohmann::json value;
    try {
        value = s.from_text ? s.from_text(text) : default_from_text(s, text, where);
    } catch (const config_error& e) {
        if (!e.pointer.empty()) throw;
        throw config_error(where, e.message);
    } catch (const std::invalid_argument& e) {
        throw config_error(where, e.what());
    }
    apply(s, value, where, source);
}

void settings_schema::apply_document(const nlohmann::json& doc, const std::string& file) {
    in_document_ = true;
    try {
        apply_section(doc, "", file, "");
    } catch (...) {
        in_document_ = false;
        throw;
    }
    in_document_ = false;
}

void settings_schema::apply_section(const nlohmann::json& obj, const std::string& prefix,
                                    const std::string& file, const std::string& pointer) {
    const std::string where_prefix = file.empty() ? "" : file + ": ";
    if (!obj.is_object())
        throw config_error(where_prefix + (pointer.empty() ? "/" : pointer),
                           std::string("expected an object, got ") + obj.type_name());
    for (auto it = obj.begin(); it != obj.end(); ++it) {
        std::string key = prefix + it.key();
        std::string ptr = json_pointer_child(pointer, it.key());
        if (const setting* s = find_key(key)) {
            apply(*s, it.value(), where_prefix + ptr, setting_source::file);
            continue;
        }
        bool section = std::any_of(settings_.begin(), settings_.end(), [&](const setting& s) {
            return std::any_of(s.keys.begin(), s.keys.end(),
                               [&](const std::string& k) { return k.starts_with(key + "/"); });
        });
        if (section) {
            apply_section(it.value(), key + "/", file, ptr);
            continue;
        }
        std::string known;
        for (const auto& s : settings_)
            if (s.key().starts_with(prefix) &&
                s.key().find('/', prefix.size()) == std::string::npos)
                known += (known.empty() ? "" : ", ") + s.key().substr(prefix.size());
        throw config_error(
            where_prefix + ptr,
            prefix.empty() ? "unknown setting" : "unknown setting (expected one of " + known + ")");
    }
}

void settings_schema::apply_environment(char** environ,
                                        const std::function<void(const std::string&)>& unknown) {
    if (!environ) return;
    for (char** e = environ; *e; ++e) {
        std::string_view entry(*e);
        if (!entry.starts_with("CORGI_")) continue;
        auto eq = entry.find('=');
        if (eq == std::string_view::npos) continue;
        std::string name(entry.substr(0, eq));
        std::string_view value = entry.substr(eq + 1);
        const setting* s = find_environment(name);
        if (!s) {
            if (unknown) unknown(name);
            continue;
        }
        if (s->clear) {
            // A repeatable setting in one variable: comma-separated values.
            std::size_t start = 0;
            while (start <= value.size()) {
                auto comma = value.find(',', start);
                auto part =
                    value.substr(start, comma == std::string_view::npos ? std::string_view::npos
                                                                        : comma - start);
                if (!part.empty()) apply_text(*s, part, name, setting_source::environment);
                if (comma == std::string_view::npos) break;
                start = comma + 1;
            }
        } else {
            apply_text(*s, value, name, setting_source::environment);
        }
    }
}

nlohmann::json settings_schema::effective() const {
    nlohmann::json doc = nlohmann::json::object();
    for (const auto& s : settings_) {
        if (!s.get) continue;
        nlohmann::json v = s.get();
        if (v.is_null()) continue;
        nlohmann::json* at = &doc;
        std::string_view key = s.key();
        for (auto slash = key.find('/'); slash != std::string_view::npos; slash = key.find('/')) {
            at = &(*at)[std::string(key.substr(0, slash))];
            key.remove_prefix(slash + 1);
        }
        (*at)[std::string(key)] = std::move(v);
    }
    return doc;
}

}  // namespace corgi
