// The WSGI layer's settings in the settings schema (no Python here: only the bounds and the
// forms uWSGI and Gunicorn give them).
#include <corgi/core/config.hpp>
#include <corgi/core/settings.hpp>
#include <corgi/wsgi/settings.hpp>

namespace corgi::wsgi {

void add_python_settings(settings_schema& schema, python_settings& py) {
    schema.add(text_setting({"wsgi", "module"}, {"--wsgi", "--module"}, {"module", "wsgi"}, py.wsgi,
                            false));
    schema.add(
        text_setting({"wsgi_file"}, {"--wsgi-file"}, {"wsgi-file", "file"}, py.wsgi_file, false));
    schema.add(text_setting({"callable"}, {"--callable"}, {"callable"}, py.callable));
    {
        // {"/prefix": "MODULE[:CALLABLE]" or "path.py"}; --mount and uWSGI's mount take
        // /PREFIX=APP.
        setting s;
        s.keys = {"mounts"};
        s.type = setting_type::json;
        s.flags = {"--mount"};
        s.ini = {"mount"};
        s.from_text = [](std::string_view t) -> nlohmann::json {
            auto eq = t.find('=');
            if (eq == std::string_view::npos || eq == 0 || t[0] != '/' || eq + 1 == t.size())
                throw config_error("",
                                   "expects /PREFIX=MODULE[:CALLABLE] or /PREFIX=PATH.py, got '" +
                                       std::string(t) + "'");
            return {{std::string(t.substr(0, eq)), std::string(t.substr(eq + 1))}};
        };
        s.set = [&py](const nlohmann::json& v) {
            if (!v.is_object())
                throw config_error("", "expected an object of \"/prefix\": \"app\" entries");
            for (auto it = v.begin(); it != v.end(); ++it) {
                std::string at = "/" + it.key();
                if (it.key().empty() || it.key()[0] != '/')
                    throw config_error(at, "a mount prefix starts with '/'");
                if (!it.value().is_string() || it.value().get<std::string>().empty())
                    throw config_error(at, "expected MODULE[:CALLABLE] or PATH.py");
                py.mounts.emplace_back(it.key(), it.value().get<std::string>());
            }
        };
        s.clear = [&py] { py.mounts.clear(); };
        s.get = [&py]() -> nlohmann::json {
            if (py.mounts.empty()) return nullptr;
            nlohmann::json out = nlohmann::json::object();
            for (const auto& [prefix, app] : py.mounts) out[prefix] = app;
            return out;
        };
        schema.add(std::move(s));
    }
    {
        // Repeatable; Gunicorn's --pythonpath takes a comma-separated list.
        setting s;
        s.keys = {"pythonpath"};
        s.type = setting_type::list;
        s.flags = {"--pythonpath"};
        s.ini = {"pythonpath", "python-path"};
        s.from_text = [](std::string_view t) {
            nlohmann::json out = nlohmann::json::array();
            std::size_t start = 0;
            while (start <= t.size()) {
                auto comma = t.find(',', start);
                auto part =
                    t.substr(start, comma == std::string_view::npos ? t.npos : comma - start);
                if (!part.empty()) out.push_back(std::string(part));
                if (comma == std::string_view::npos) break;
                start = comma + 1;
            }
            return out;
        };
        s.set = [&py](const nlohmann::json& v) { py.pythonpath.push_back(v.get<std::string>()); };
        s.clear = [&py] { py.pythonpath.clear(); };
        s.get = [&py] { return py.pythonpath; };
        schema.add(std::move(s));
    }
    schema.add(text_setting({"chdir"}, {"--chdir"}, {"chdir"}, py.chdir, false));
    schema.add(count_setting({"threads"}, {"--threads"}, {"threads"}, py.threads, 1,
                             python_settings::max_threads));
    schema.add(
        count_setting({"fibers"}, {"--fibers"}, {}, py.fibers, 1, python_settings::max_fibers));
    schema.add(count_setting({"fiber_stack_kib"}, {"--fiber-stack-kib"}, {}, py.fiber_stack_kib,
                             python_settings::min_fiber_stack_kib,
                             python_settings::max_fiber_stack_kib));
    schema.add(bool_setting({"async_views_hook"}, {"--async-views-hook"}, {}, py.async_views_hook));
    schema.add(count_setting({"lane_nice"}, {"--lane-nice"}, {}, py.lane_nice, 0,
                             python_settings::max_lane_nice));
    {
        // auto, or a boolean: true runs Python on the io threads, false on lanes of their own.
        setting s;
        s.keys = {"python_on_io_threads"};
        s.type = setting_type::json;
        s.flags = {"--python-on-io-threads"};
        s.from_text = [](std::string_view t) -> nlohmann::json {
            if (t == "auto") return "auto";
            return parse_boolean_text(t, "");
        };
        s.set = [&py](const nlohmann::json& v) {
            if (v.is_boolean())
                py.python_on_io_threads =
                    v.get<bool>() ? lane_placement::io_threads : lane_placement::own_threads;
            else if (v == "auto")
                py.python_on_io_threads = lane_placement::automatic;
            else
                throw config_error("", "expected true, false or \"auto\"");
        };
        s.get = [&py]() -> nlohmann::json {
            switch (py.python_on_io_threads) {
                case lane_placement::io_threads:
                    return true;
                case lane_placement::own_threads:
                    return false;
                default:
                    return "auto";
            }
        };
        schema.add(std::move(s));
    }
}

}  // namespace corgi::wsgi
