// uWSGI ini files onto the settings schema.
#include "ini_file.hpp"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

namespace corgi::cli {

namespace {

std::string trim(std::string_view s) {
    auto b = s.find_first_not_of(" \t\r");
    if (b == std::string_view::npos) return {};
    auto e = s.find_last_not_of(" \t\r");
    return std::string(s.substr(b, e - b + 1));
}

// Options whose meaning corgi already has, whatever the ini says: unix sockets and the pidfile
// are removed at exit (vacuum), SIGTERM stops gracefully (die-on-term).
bool honoured_without_setting(const std::string& key, const std::string& value,
                              const std::string& where, std::vector<std::string>& warnings) {
    if (key == "vacuum") {
        if (!parse_boolean_text(value, where))
            warnings.push_back(where +
                               ": vacuum = false is not corgi's way: it always removes its "
                               "unix sockets and pidfile at exit");
        return true;
    }
    if (key == "die-on-term") {
        if (!parse_boolean_text(value, where))
            warnings.push_back(where +
                               ": die-on-term = false (SIGTERM reloads) is not corgi's "
                               "way: SIGTERM stops gracefully, SIGHUP reloads");
        return true;
    }
    return false;
}

struct ini_place {
    std::filesystem::path file;  // absolute
    std::string section;
};

std::string expand(std::string_view value, const ini_place& at,
                   const std::map<std::string, std::string>& placeholders,
                   const std::string& where) {
    std::string out;
    for (std::size_t i = 0; i < value.size(); ++i) {
        char c = value[i];
        if (c == '$' && i + 1 < value.size() && value[i + 1] == '(') {
            auto close = value.find(')', i + 2);
            if (close == std::string_view::npos)
                throw config_error(where, "unterminated $( in '" + std::string(value) + "'");
            std::string name(value.substr(i + 2, close - i - 2));
            if (const char* env = std::getenv(name.c_str())) out += env;
            i = close;
            continue;
        }
        if (c == '@' && i + 1 < value.size() && value[i + 1] == '(')
            throw config_error(where, "@(...) file and exec includes are not supported by corgi");
        if (c != '%' || i + 1 == value.size()) {
            out += c;
            continue;
        }
        char m = value[++i];
        switch (m) {
            case '%':
                out += '%';
                break;
            case 'd':  // the directory of the ini file, with a trailing slash
                out += at.file.parent_path().string() + "/";
                break;
            case 'p':  // the ini file's absolute path
                out += at.file.string();
                break;
            case 's':  // its file name
                out += at.file.filename().string();
                break;
            case 'n':  // its name without the extension
                out += at.file.stem().string();
                break;
            case 'c':  // the name of the directory holding it
                out += at.file.parent_path().filename().string();
                break;
            case 'x':  // the section being read, as FILE:SECTION
                out += at.file.filename().string() + ":" + at.section;
                break;
            case 'k':
                out += std::to_string(std::max(1u, std::thread::hardware_concurrency()));
                break;
            case 'h': {
                char host[256] = {};
                ::gethostname(host, sizeof host - 1);
                out += host;
                break;
            }
            case '(': {
                auto close = value.find(')', i + 1);
                if (close == std::string_view::npos)
                    throw config_error(where, "unterminated %( in '" + std::string(value) + "'");
                std::string name(value.substr(i + 1, close - i - 1));
                auto it = placeholders.find(name);
                if (it == placeholders.end())
                    throw config_error(where,
                                       "placeholder %(" + name +
                                           ") is not set by an earlier line of this section");
                out += it->second;
                i = close;
                break;
            }
            default:
                throw config_error(where, std::string("magic variable %") + m +
                                              " is not supported by corgi (it honours %d %p %s %n "
                                              "%c %x %k %h %% %(name) and $(ENV))");
        }
    }
    return out;
}

}  // namespace

void read_ini_file(settings_schema& schema, const std::string& spec,
                   std::vector<std::string>& warnings) {
    std::string path = spec;
    ini_place at{{}, "uwsgi"};
    // FILE:SECTION, as uWSGI's --ini takes it.
    if (auto colon = spec.rfind(':');
        colon != std::string::npos && spec.find(".ini:") != std::string::npos) {
        path = spec.substr(0, colon);
        at.section = spec.substr(colon + 1);
    }
    std::ifstream in(path);
    if (!in) throw config_error("", "cannot read ini file '" + path + "'");
    at.file = std::filesystem::absolute(path).lexically_normal();
    std::map<std::string, std::string> placeholders;
    std::string line, current;
    bool found = false;
    for (std::size_t number = 1; std::getline(in, line); ++number) {
        std::string text = trim(line);
        if (text.empty() || text[0] == ';' || text[0] == '#') continue;
        const std::string where = path + ":" + std::to_string(number);
        if (text[0] == '[') {
            if (text.back() != ']') throw config_error(where, "expected [section]");
            current = trim(std::string_view(text).substr(1, text.size() - 2));
            found = found || current == at.section;
            continue;
        }
        if (current != at.section) continue;
        auto eq = text.find('=');
        // A bare option name is a boolean set to true (uWSGI reads "master" as "master = true").
        std::string key = trim(eq == std::string::npos ? text : text.substr(0, eq));
        std::string raw = eq == std::string::npos ? "true" : trim(text.substr(eq + 1));
        if (key.empty()) throw config_error(where, "expected option = value");
        const std::string named = where + " (" + key + ")";
        std::string value = expand(raw, at, placeholders, named);
        placeholders[key] = value;
        if (honoured_without_setting(key, value, named, warnings)) continue;
        const setting* s = schema.find_ini(key);
        if (!s) {
            warnings.push_back(named + ": uWSGI option '" + key +
                               "' is not supported by corgi; ignored");
            continue;
        }
        schema.apply_text(*s, value, named, setting_source::file);
    }
    if (!found)
        throw config_error("", "ini file '" + path + "' has no [" + at.section + "] section");
}

}  // namespace corgi::cli
