// Compiles the JSON `routes` of a config file into a url_map. Every error names the JSON pointer of
// what is wrong (the entry, or the key inside it), so `corgi --config` can point the user at the
// exact spot.
#include <corgi/core/route_config.hpp>

#include "targets_detail.hpp"
#include "url_map_detail.hpp"

#include <algorithm>
#include <cmath>
#include <initializer_list>

namespace corgi {

namespace {

using json = nlohmann::json;

// RFC 6901 escaping of a key inside a pointer.
std::string child(const std::string& pointer, std::string_view key) {
    std::string out = pointer;
    out += '/';
    for (char c : key) {
        if (c == '~') {
            out += "~0";
        } else if (c == '/') {
            out += "~1";
        } else {
            out += c;
        }
    }
    return out;
}
std::string child(const std::string& pointer, std::size_t index) {
    return pointer + '/' + std::to_string(index);
}

std::string quoted_list(std::initializer_list<std::string_view> names) {
    std::string s;
    for (auto n : names) {
        if (!s.empty()) s += ", ";
        s += '"';
        s += n;
        s += '"';
    }
    return s;
}

constexpr std::string_view rule_keys[] = {"rule",    "endpoint", "methods",  "strict_slashes",
                                          "return",  "echo",     "redirect", "static",
                                          "handler", "wsgi",     "metrics",  "timeout"};
constexpr std::string_view mount_keys[] = {"mount",   "endpoint", "wsgi",   "static",
                                           "handler", "echo",     "return", "timeout"};
constexpr std::string_view submount_keys[] = {"submount", "routes"};
constexpr std::string_view rule_targets[] = {"return",  "echo", "redirect", "static",
                                             "handler", "wsgi", "metrics"};
constexpr std::string_view mount_targets[] = {"wsgi", "static", "handler", "echo", "return"};

template <std::size_t N>
bool one_of(std::string_view key, const std::string_view (&keys)[N]) {
    return std::find(std::begin(keys), std::end(keys), key) != std::end(keys);
}

template <std::size_t N>
std::string list_of(const std::string_view (&keys)[N]) {
    std::string s;
    for (auto k : keys) {
        if (!s.empty()) s += ", ";
        s += k;
    }
    return s;
}

template <std::size_t N>
void check_keys(const json& entry, const std::string& pointer, const std::string_view (&allowed)[N],
                std::string_view what) {
    for (auto& [key, value] : entry.items()) {
        if (!one_of(key, allowed)) {
            throw config_error(child(pointer, key),
                               "unknown key \"" + key + "\" in a " + std::string(what) +
                                   " entry (expected one of: " + list_of(allowed) + ")");
        }
    }
}

// A route's "timeout": seconds (fractional allowed), 0 for no deadline on this route.
std::chrono::milliseconds timeout_at(const json& entry, const std::string& pointer) {
    if (!entry.contains("timeout")) return inherit_timeout;
    const json& v = entry.at("timeout");
    if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0)
        throw config_error(child(pointer, "timeout"),
                           "must be a duration in seconds (a non-negative number; 0: no "
                           "deadline for this route), got " +
                               v.dump());
    return std::chrono::milliseconds(
        static_cast<std::int64_t>(std::llround(v.get<double>() * 1000.0)));
}

const std::string& string_at(const json& entry, std::string_view key, const std::string& pointer) {
    auto& v = entry.at(std::string(key));
    if (!v.is_string()) throw config_error(child(pointer, key), "must be a string");
    return v.get_ref<const std::string&>();
}

struct seen_rule {
    std::string key;
    std::vector<std::string> methods;
    std::string pointer;
    std::string pattern;
};

class compiler {
  public:
    explicit compiler(const route_targets& targets) : targets_(targets) {}

    void entries(const json& routes, const std::string& pointer, const std::string& prefix,
                 std::vector<route_entry>& out) {
        if (!routes.is_array()) throw config_error(pointer, "must be an array of route entries");
        for (std::size_t i = 0; i < routes.size(); ++i) {
            const json& e = routes[i];
            std::string p = child(pointer, i);
            if (!e.is_object()) throw config_error(p, "a route entry must be an object");
            if (e.contains("submount")) {
                out.push_back(submount_entry(e, p, prefix));
            } else if (e.contains("mount")) {
                out.push_back(mount_entry(e, p, prefix));
            } else if (e.contains("rule")) {
                out.push_back(rule_entry(e, p, prefix));
            } else {
                throw config_error(p, "a route entry needs \"rule\", \"submount\" or \"mount\"");
            }
        }
    }

  private:
    route_entry submount_entry(const json& e, const std::string& p, const std::string& prefix) {
        check_keys(e, p, submount_keys, "submount");
        const std::string& sub = string_at(e, "submount", p);
        if (!sub.empty() && sub.front() != '/') {
            throw config_error(child(p, "submount"), "a submount prefix must start with '/'");
        }
        if (!e.contains("routes")) throw config_error(p, "a submount needs \"routes\"");
        std::vector<route_entry> children;
        entries(e.at("routes"), child(p, "routes"), detail::join_prefix(prefix, sub), children);
        return submount(sub, std::move(children));
    }

    route_entry mount_entry(const json& e, const std::string& p, const std::string& prefix) {
        check_keys(e, p, mount_keys, "mount");
        std::string mount_prefix = string_at(e, "mount", p);
        if ((!mount_prefix.empty() && mount_prefix.front() != '/') ||
            mount_prefix.find('<') != std::string::npos) {
            throw config_error(child(p, "mount"),
                               "a mount prefix must start with '/' and be static");
        }
        std::string full = detail::join_prefix(prefix, mount_prefix);
        while (!full.empty() && full.back() == '/') full.pop_back();
        for (auto& m : mounts_) {
            if (m.first == full) {
                throw config_error(child(p, "mount"), "mount \"" + (full.empty() ? "/" : full) +
                                                          "\" is already declared at " + m.second);
            }
        }
        mounts_.emplace_back(full, p);
        std::string endpoint = e.contains("endpoint") ? string_at(e, "endpoint", p) : std::string();
        const std::chrono::milliseconds timeout = timeout_at(e, p);
        handler h = target(e, p, mount_targets);
        return mount(mount_prefix, std::move(h), std::move(endpoint), timeout);
    }

    route_entry rule_entry(const json& e, const std::string& p, const std::string& prefix) {
        check_keys(e, p, rule_keys, "rule");
        const std::string& pattern = string_at(e, "rule", p);
        std::string full = detail::join_prefix(prefix, pattern);
        std::string key;
        std::vector<std::string> arguments;
        try {
            key = detail::rule_key(full);
            arguments = detail::rule_arguments(full);
        } catch (const routing_error& err) {
            throw config_error(child(p, "rule"), err.what());
        }
        rule_options options;
        if (e.contains("methods")) {
            auto& methods = e.at("methods");
            std::string mp = child(p, "methods");
            if (!methods.is_array() || methods.empty()) {
                throw config_error(mp, "must be a non-empty array of method names");
            }
            for (std::size_t i = 0; i < methods.size(); ++i) {
                if (!methods[i].is_string()) throw config_error(child(mp, i), "must be a string");
                options.methods.push_back(methods[i].get<std::string>());
            }
            try {
                detail::normalize_methods(options.methods);
            } catch (const routing_error& err) {
                throw config_error(mp, err.what());
            }
        }
        if (e.contains("strict_slashes")) {
            if (!e.at("strict_slashes").is_boolean()) {
                throw config_error(child(p, "strict_slashes"), "must be true or false");
            }
            options.strict_slashes = e.at("strict_slashes").get<bool>();
        }
        options.timeout = timeout_at(e, p);
        std::string endpoint = e.contains("endpoint") ? string_at(e, "endpoint", p) : full;
        if (endpoint.empty()) throw config_error(child(p, "endpoint"), "must not be empty");

        auto methods = detail::normalize_methods(options.methods);
        for (auto& s : seen_) {
            if (s.key == key && detail::methods_overlap(s.methods, methods)) {
                throw config_error(child(p, "rule"), "rule \"" + full + "\" duplicates rule \"" +
                                                         s.pattern + "\" at " + s.pointer +
                                                         " for the same methods");
            }
        }
        seen_.push_back(seen_rule{std::move(key), std::move(methods), p, full});

        if (e.contains("redirect")) check_redirect_placeholders(e.at("redirect"), p, arguments);
        handler h = target(e, p, rule_targets);
        return rule(pattern, std::move(endpoint), std::move(h), std::move(options));
    }

    // `<name>` in a redirect location must be an argument of the rule, or every request would fail.
    static void check_redirect_placeholders(const json& redirect, const std::string& p,
                                            const std::vector<std::string>& arguments) {
        std::string location;
        std::string lp = child(p, "redirect");
        if (redirect.is_string()) {
            location = redirect.get<std::string>();
        } else if (redirect.is_object() && redirect.contains("location") &&
                   redirect.at("location").is_string()) {
            location = redirect.at("location").get<std::string>();
            lp = child(lp, "location");
        } else {
            return;  // reported by target()
        }
        std::string_view rest = location;
        for (auto open = rest.find('<'); open != std::string_view::npos; open = rest.find('<')) {
            auto close = rest.find('>', open);
            if (close == std::string_view::npos) break;
            auto name = rest.substr(open + 1, close - open - 1);
            if (std::find(arguments.begin(), arguments.end(), name) == arguments.end()) {
                throw config_error(
                    lp, "placeholder <" + std::string(name) + "> is not an argument of the rule");
            }
            rest.remove_prefix(close + 1);
        }
    }

    template <std::size_t N>
    handler target(const json& e, const std::string& p, const std::string_view (&allowed)[N]) {
        std::string_view found;
        for (auto& [key, value] : e.items()) {
            if (!one_of(key, allowed)) continue;
            if (!found.empty()) {
                throw config_error(child(p, key), "an entry has one target; \"" +
                                                      std::string(found) + "\" is already given");
            }
            found = *std::find(std::begin(allowed), std::end(allowed), key);
        }
        if (found.empty())
            throw config_error(p, "the entry needs a target, one of: " + list_of(allowed));
        const json& v = e.at(std::string(found));
        std::string tp = child(p, found);
        if (found == "return") return return_spec(v, tp);
        if (found == "echo") {
            if (!v.is_boolean() || !v.get<bool>()) throw config_error(tp, "must be true");
            return echo_target();
        }
        if (found == "redirect") return redirect_spec(v, tp);
        if (found == "metrics") {
            if (!v.is_boolean() || !v.get<bool>()) throw config_error(tp, "must be true");
            return metrics_target();
        }
        if (found == "static") {
            if (!v.is_string() || v.get_ref<const std::string&>().empty()) {
                throw config_error(tp, "must be the path of a directory or file");
            }
            try {
                return static_target(v.get<std::string>());
            } catch (const std::invalid_argument& err) {
                throw config_error(tp, err.what());
            }
        }
        if (found == "handler") {
            if (!v.is_string()) throw config_error(tp, "must be the name of a registered handler");
            auto& name = v.get_ref<const std::string&>();
            auto it = targets_.handlers.find(name);
            if (it == targets_.handlers.end()) {
                std::string known;
                for (auto& [n, _] : targets_.handlers) known += (known.empty() ? "" : ", ") + n;
                throw config_error(tp, "unknown handler \"" + name + "\" (registered: " +
                                           (known.empty() ? std::string("none") : known) + ")");
            }
            return it->second;
        }
        // wsgi
        if (!v.is_string() || v.get_ref<const std::string&>().empty()) {
            throw config_error(tp, "must be \"module:callable\" or a .py file");
        }
        if (!targets_.wsgi)
            throw config_error(tp, "WSGI applications are not available in this program");
        handler h = targets_.wsgi(e, p);
        if (!h) throw config_error(tp, "the WSGI application could not be loaded");
        return h;
    }

    static handler return_spec(const json& v, const std::string& tp) {
        if (v.is_string()) return return_target(200, v.get<std::string>());
        if (v.is_number_integer()) return return_target(status_of(v, tp), {});
        if (!v.is_object()) {
            throw config_error(
                tp, "must be an object {status, body, content_type, headers}, a body or a status");
        }
        int status = 200;
        std::string body, content_type = "text/plain; charset=utf-8";
        std::vector<std::pair<std::string, std::string>> headers;
        for (auto& [key, value] : v.items()) {
            std::string kp = child(tp, key);
            if (key == "status") {
                status = status_of(value, kp);
            } else if (key == "body") {
                if (!value.is_string()) throw config_error(kp, "must be a string");
                body = value.get<std::string>();
            } else if (key == "content_type") {
                if (!value.is_string()) throw config_error(kp, "must be a string");
                content_type = value.get<std::string>();
            } else if (key == "headers") {
                if (!value.is_object())
                    throw config_error(kp, "must be an object of header names to values");
                for (auto& [name, hv] : value.items()) {
                    if (!hv.is_string()) throw config_error(child(kp, name), "must be a string");
                    headers.emplace_back(name, hv.get<std::string>());
                }
            } else {
                throw config_error(
                    kp, "unknown key \"" + key + "\" (expected one of: " +
                            quoted_list({"status", "body", "content_type", "headers"}) + ")");
            }
        }
        return detail::return_target_with_headers(status, std::move(body), std::move(content_type),
                                                  std::move(headers));
    }

    static int status_of(const json& v, const std::string& p) {
        if (!v.is_number_integer() || v.get<long long>() < 100 || v.get<long long>() > 599) {
            throw config_error(p, "must be an HTTP status code (100-599)");
        }
        return v.get<int>();
    }

    static handler redirect_spec(const json& v, const std::string& tp) {
        if (v.is_string()) {
            if (v.get_ref<const std::string&>().empty())
                throw config_error(tp, "must not be empty");
            return redirect_target(v.get<std::string>());
        }
        if (!v.is_object())
            throw config_error(tp, "must be a location or {\"location\", \"status\"}");
        std::string location;
        int status = 308;
        for (auto& [key, value] : v.items()) {
            std::string kp = child(tp, key);
            if (key == "location") {
                if (!value.is_string() || value.get_ref<const std::string&>().empty()) {
                    throw config_error(kp, "must be a non-empty string");
                }
                location = value.get<std::string>();
            } else if (key == "status") {
                status = status_of(value, kp);
                if (status != 301 && status != 302 && status != 303 && status != 307 &&
                    status != 308) {
                    throw config_error(kp, "must be 301, 302, 303, 307 or 308");
                }
            } else {
                throw config_error(
                    kp, "unknown key \"" + key + "\" (expected \"location\" or \"status\")");
            }
        }
        if (location.empty()) throw config_error(tp, "needs \"location\"");
        return redirect_target(std::move(location), status);
    }

    const route_targets& targets_;
    std::vector<seen_rule> seen_;
    std::vector<std::pair<std::string, std::string>> mounts_;  // full prefix -> pointer
};

}  // namespace

std::shared_ptr<url_map> compile_routes(const nlohmann::json& routes, const route_targets& targets,
                                        const std::string& pointer) {
    std::vector<route_entry> entries;
    compiler c(targets);
    c.entries(routes, pointer, {}, entries);
    try {
        return std::make_shared<url_map>(std::move(entries));
    } catch (const routing_error& err) {
        // Everything the map checks was checked above with a precise pointer; this is a safety net.
        throw config_error(pointer, err.what());
    }
}

}  // namespace corgi
