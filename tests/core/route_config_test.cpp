// The JSON route compiler: the issue's example compiles and routes as documented, and every mistake
// is reported with the JSON pointer of the offending entry or key.
#include <corgi/core/route_config.hpp>

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

using corgi::compile_routes;
using corgi::config_error;
using corgi::route_targets;
using corgi::test::temp_dir;
using nlohmann::json;

namespace {

namespace fs = std::filesystem;

route_targets demo_targets() {
    route_targets t;
    t.handlers["hello"] = [](corgi::request& req) -> corgi::task<corgi::response> {
        co_return corgi::response::text("hello " + req.arg<std::string>("name"));
    };
    return t;
}

}  // namespace

TEST_CASE("route_config: the issue's example compiles and matches", "[unit][route_config]") {
    temp_dir public_dir;
    std::ofstream(public_dir.path / "a.txt") << "file a";
    json doc = json::parse(R"({"routes": [
        {"rule": "/", "endpoint": "index", "return": {"status": 200, "body": "hello\n"}},
        {"rule": "/user/<int:id>", "endpoint": "user", "methods": ["GET", "POST"], "echo": true},
        {"rule": "/docs/", "endpoint": "docs", "echo": true, "strict_slashes": true},
        {"rule": "/old", "redirect": "/new"},
        {"rule": "/files/<path:p>", "static": "PUBLIC"},
        {"rule": "/hello/<name>", "endpoint": "hello", "handler": "hello"},
        {"submount": "/api", "routes": [{"rule": "/v1/<any(a,b):kind>", "endpoint": "api.kind", "echo": true}]}]})");
    doc["routes"][4]["static"] = public_dir.path.string();
    auto map = compile_routes(doc["routes"], demo_targets());

    auto index = map->match("GET", "/");
    CHECK(index.endpoint == "index");
    auto user = map->match("POST", "/user/42");
    CHECK(user.endpoint == "user");
    CHECK(user.args == corgi::route_args{{"id", std::int64_t{42}}});
    auto put = map->match("PUT", "/user/42");
    CHECK(put.status == 405);
    CHECK(put.allow == std::vector<std::string>{"GET", "HEAD", "OPTIONS", "POST"});
    auto docs = map->match("GET", "/docs");
    CHECK(docs.status == 308);
    CHECK(docs.location == "/docs/");
    CHECK(map->match("GET", "/old").endpoint == "/old");  // default endpoint: the rule
    CHECK(map->match("GET", "/files/a/b").endpoint == "/files/<path:p>");
    CHECK(map->match("GET", "/hello/bob").endpoint == "hello");
    CHECK(map->match("GET", "/api/v1/a").endpoint == "api.kind");
    CHECK(map->match("GET", "/api/v1/c").status == 404);
    CHECK(map->build("user", {{"id", "7"}}) == "/user/7");

    // The targets behind the rules.
    auto dispatch = corgi::make_dispatcher(map);
    auto run = [&](std::string method, std::string path) {
        auto req = corgi::test::make_request(std::move(method), std::move(path));
        return corgi::test::run(dispatch, req);
    };
    auto r_index = run("GET", "/");
    CHECK(r_index.status == 200);
    CHECK(corgi::test::body_of(r_index) == "hello\n");
    CHECK(r_index.headers.get("Content-Type") == "text/plain; charset=utf-8");
    auto r_old = run("GET", "/old");
    CHECK(r_old.status == 308);
    CHECK(r_old.headers.get("Location") == "/new");
    CHECK(corgi::test::body_of(run("GET", "/hello/bob")) == "hello bob");
    auto r_user = json::parse(corgi::test::body_of(run("POST", "/user/42")));
    CHECK(r_user["endpoint"] == "user");
    CHECK(r_user["args"]["id"] == 42);
    auto r_file = run("GET", "/files/a.txt");
    CHECK(r_file.status == 200);
    CHECK(r_file.known_length() == 6u);
    CHECK(run("GET", "/files/missing").status == 404);
}

TEST_CASE("route_config: extensions of the shape (mounts, return forms, redirect objects, wsgi)",
          "[unit][route_config]") {
    route_targets t = demo_targets();
    json seen_entry;
    std::string seen_pointer;
    t.wsgi = [&](const json& entry, const std::string& pointer) -> corgi::handler {
        seen_entry = entry;
        seen_pointer = pointer;
        return [](corgi::request& req) -> corgi::task<corgi::response> {
            co_return corgi::response::text("wsgi " + req.script_name + " " + req.path_info);
        };
    };
    auto routes = json::parse(R"([
        {"rule": "/teapot", "return": {"status": 418, "body": "short and stout", "content_type": "text/x-tea",
                                       "headers": {"X-Tea": "earl grey"}}},
        {"rule": "/empty", "return": 204},
        {"rule": "/text", "return": "just text"},
        {"rule": "/u/<int:id>", "redirect": {"location": "/users/<id>", "status": 301}},
        {"rule": "/any", "methods": ["get"], "strict_slashes": false, "echo": true},
        {"submount": "/sub", "routes": [{"mount": "/flask", "wsgi": "app:app", "endpoint": "flask"}]},
        {"mount": "/", "return": {"body": "fallback"}}])");
    auto map = compile_routes(routes, t);
    CHECK(seen_pointer == "/routes/5/routes/0");
    CHECK(seen_entry["wsgi"] == "app:app");
    auto dispatch = corgi::make_dispatcher(map);
    auto run = [&](std::string path) {
        auto req = corgi::test::make_request("GET", std::move(path));
        return corgi::test::run(dispatch, req);
    };
    auto tea = run("/teapot");
    CHECK(tea.status == 418);
    CHECK(corgi::test::body_of(tea) == "short and stout");
    CHECK(tea.headers.get("Content-Type") == "text/x-tea");
    CHECK(tea.headers.get("X-Tea") == "earl grey");
    CHECK(run("/empty").status == 204);
    CHECK(corgi::test::body_of(run("/text")) == "just text");
    auto moved = run("/u/5");
    CHECK(moved.status == 301);
    CHECK(moved.headers.get("Location") == "/users/5");
    CHECK(map->match("GET", "/any/").endpoint == "/any");
    CHECK(map->match("POST", "/any").status == 405);
    CHECK(corgi::test::body_of(run("/sub/flask/x")) == "wsgi /sub/flask /x");
    CHECK(map->match("GET", "/sub/flask/x").endpoint == "flask");
    CHECK(corgi::test::body_of(run("/elsewhere")) == "fallback");

    CHECK(compile_routes(json::array(), t)->rules().empty());
}

TEST_CASE("route_config: every error names the JSON pointer of what is wrong",
          "[unit][route_config]") {
    temp_dir dir;
    route_targets t = demo_targets();
    route_targets with_wsgi = demo_targets();
    with_wsgi.wsgi = [](const json&, const std::string& pointer) -> corgi::handler {
        throw config_error(pointer + "/wsgi", "cannot import module");
    };
    struct error_case {
        const char* routes;
        const char* pointer;
        const char* message;
        bool wsgi = false;
    };
    const std::vector<error_case> cases = {
        {R"({"rule": "/"})", "/routes", "array"},
        {R"([1])", "/routes/0", "object"},
        {R"([{"endpoint": "x", "echo": true}])", "/routes/0",
         "\"rule\", \"submount\" or \"mount\""},
        {R"([{"rule": "/", "echo": true, "bogus": 1}])", "/routes/0/bogus",
         "unknown key \"bogus\""},
        {R"([{"rule": "/", "echo": true, "a/b": 1}])", "/routes/0/a~1b", "unknown key"},
        {R"([{"rule": "/"}])", "/routes/0", "needs a target"},
        {R"([{"rule": "/", "echo": true, "return": {"status": 200}}])", "/routes/0/return",
         "one target"},
        {R"([{"rule": "/", "handler": "nope"}])", "/routes/0/handler",
         "unknown handler \"nope\" (registered: hello)"},
        {R"([{"rule": "/", "handler": 5}])", "/routes/0/handler", "name of a registered handler"},
        {R"([{"rule": "/", "wsgi": "app:app"}])", "/routes/0/wsgi", "not available"},
        {R"([{"rule": "/", "wsgi": "app:app"}])", "/routes/0/wsgi", "cannot import", true},
        {R"([{"rule": "/", "wsgi": ""}])", "/routes/0/wsgi", "module:callable", true},
        {R"([{"rule": 5, "echo": true}])", "/routes/0/rule", "must be a string"},
        {R"([{"rule": "/<bad:x>", "echo": true}])", "/routes/0/rule", "unknown converter 'bad'"},
        {R"([{"rule": "nope", "echo": true}])", "/routes/0/rule", "must start with '/'"},
        {R"([{"rule": "/x", "echo": true}, {"rule": "/x", "echo": true}])", "/routes/1/rule",
         "duplicates rule \"/x\" at /routes/0"},
        {R"([{"rule": "/api/x", "echo": true}, {"submount": "/api", "routes": [{"rule": "/x", "echo": true}]}])",
         "/routes/1/routes/0/rule", "duplicates"},
        {R"([{"submount": "/api", "routes": [{"rule": "/x", "echo": true}, {"rule": "/<int(min=z):y>", "echo": true}]}])",
         "/routes/0/routes/1/rule", "must be an integer"},
        {R"([{"submount": "/api"}])", "/routes/0", "needs \"routes\""},
        {R"([{"submount": "/api", "routes": {}}])", "/routes/0/routes", "array"},
        {R"([{"submount": "api", "routes": []}])", "/routes/0/submount", "start with '/'"},
        {R"([{"submount": "/api", "routes": [], "echo": true}])", "/routes/0/echo", "unknown key"},
        {R"([{"rule": "/", "methods": "GET", "echo": true}])", "/routes/0/methods", "array"},
        {R"([{"rule": "/", "methods": ["GET", 1], "echo": true}])", "/routes/0/methods/1",
         "string"},
        {R"([{"rule": "/", "methods": ["G T"], "echo": true}])", "/routes/0/methods", "bad method"},
        {R"([{"rule": "/", "strict_slashes": "yes", "echo": true}])", "/routes/0/strict_slashes",
         "true or false"},
        {R"([{"rule": "/", "endpoint": "", "echo": true}])", "/routes/0/endpoint", "empty"},
        {R"([{"rule": "/", "echo": false}])", "/routes/0/echo", "must be true"},
        {R"([{"rule": "/", "return": {"status": 999}}])", "/routes/0/return/status", "100-599"},
        {R"([{"rule": "/", "return": {"body": 5}}])", "/routes/0/return/body", "string"},
        {R"([{"rule": "/", "return": {"headers": {"X": 1}}}])", "/routes/0/return/headers/X",
         "string"},
        {R"([{"rule": "/", "return": {"colour": "red"}}])", "/routes/0/return/colour",
         "unknown key"},
        {R"([{"rule": "/", "return": [1]}])", "/routes/0/return", "must be an object"},
        {R"([{"rule": "/", "redirect": {"location": "/x", "status": 200}}])",
         "/routes/0/redirect/status", "301, 302"},
        {R"([{"rule": "/", "redirect": {"status": 301}}])", "/routes/0/redirect",
         "needs \"location\""},
        {R"([{"rule": "/", "redirect": 5}])", "/routes/0/redirect", "location"},
        {R"([{"rule": "/u/<int:id>", "redirect": "/x/<uid>"}])", "/routes/0/redirect",
         "placeholder <uid> is not an argument"},
        {R"([{"rule": "/u/<int:id>", "redirect": {"location": "/x/<uid>"}}])",
         "/routes/0/redirect/location", "placeholder"},
        {R"([{"rule": "/s/<path:p>", "static": "/nonexistent/corgi/dir"}])", "/routes/0/static",
         "nonexistent"},
        {R"([{"rule": "/s/<path:p>", "static": ""}])", "/routes/0/static", "directory"},
        {R"([{"mount": "/m", "methods": ["GET"], "echo": true}])", "/routes/0/methods",
         "unknown key"},
        {R"([{"mount": "/m", "redirect": "/x"}])", "/routes/0/redirect", "unknown key"},
        {R"([{"mount": "/m", "endpoint": "m"}])", "/routes/0", "needs a target"},
        {R"([{"mount": "/m/<x>", "echo": true}])", "/routes/0/mount", "static"},
        {R"([{"mount": "/m", "echo": true}, {"mount": "/m/", "echo": true}])", "/routes/1/mount",
         "already declared at /routes/0"},
        {R"([{"mount": "/m", "echo": true, "handler": "hello"}])", "/routes/0/handler",
         "one target"},
    };
    for (auto& c : cases) {
        INFO(c.routes);
        try {
            compile_routes(json::parse(c.routes), c.wsgi ? with_wsgi : t);
            FAIL("no config_error");
        } catch (const config_error& e) {
            CHECK(e.pointer == c.pointer);
            CHECK_THAT(e.what(), Catch::Contains(c.message));
        }
    }
    // The pointer of the routes array is the caller's.
    try {
        compile_routes(json::parse(R"([{"rule": "/", "zap": 1}])"), t, "/site/routes");
        FAIL("no config_error");
    } catch (const config_error& e) {
        CHECK(e.pointer == "/site/routes/0/zap");
    }
    // Same pattern with disjoint methods is fine.
    CHECK_NOTHROW(compile_routes(json::parse(R"([{"rule": "/x", "methods": ["GET"], "echo": true},
                                                 {"rule": "/x", "methods": ["POST"], "echo": true}])"),
                                 t));
}
