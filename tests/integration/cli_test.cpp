// The corgi command line: --help, --version, usage and config errors (exit status 2, naming the
// flag or the JSON pointer), and `corgi routes` (the table, --match, --build) on
// examples/demo.json.
#include "test_support.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <regex>
#include <sstream>

using namespace corgi::test;

namespace {

run_result run_corgi(std::vector<std::string> args) {
    args.insert(args.begin(), corgi_binary());
    return run(std::move(args), source_dir(), 5s);
}

nlohmann::json match(const std::string& what) {
    auto r = run_corgi({"routes", "--config", "examples/demo.json", "--match", what});
    INFO(what);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    REQUIRE(lines_of(r.out).size() <= 2);  // one line (and the final newline)
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    return j;
}

}  // namespace

TEST_CASE("cli: --help fits a screen and exits 0", "[cli]") {
    auto r = run_corgi({"--help"});
    REQUIRE(r.exit_code == 0);
    auto lines = lines_of(r.out);
    CHECK(lines.size() <= 40);
    for (const auto& line : lines) CHECK(line.size() <= 120);
    for (const char* flag :
         {"--http", "--config", "--io-threads", "--max-body-bytes", "--disable-logging", "routes"})
        CHECK(r.out.find(flag) != std::string::npos);
}

TEST_CASE("cli: --version prints the version and exits 0", "[cli]") {
    auto r = run_corgi({"--version"});
    REQUIRE(r.exit_code == 0);
    // A sanitizer build says so after the version.
    CHECK(std::regex_match(r.out,
                           std::regex(R"(corgi \d+\.\d+\.\d+( \(sanitizers: [a-z,]+\))?\s*)")));
}

TEST_CASE("cli: an unknown flag exits 2 naming it", "[cli]") {
    auto r = run_corgi({"--http", "127.0.0.1:0", "--no-such-flag"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("--no-such-flag") != std::string::npos);
    CHECK(r.out.empty());
}

TEST_CASE("cli: bad flag values exit 2 naming the flag", "[cli]") {
    for (std::vector<std::string> args : {std::vector<std::string>{"--io-threads", "many"},
                                          {"--io-threads", "0"},
                                          {"--http", "nowhere"},
                                          {"--header-timeout", "-1"},
                                          {"--max-connections"}}) {
        auto r = run_corgi(args);
        INFO(args[0] << " " << (args.size() > 1 ? args[1] : ""));
        INFO(r.err);
        CHECK(r.exit_code == 2);
        CHECK(r.err.find(args[0]) != std::string::npos);
    }
}

TEST_CASE("cli: a config with an unknown key exits 2 naming its JSON pointer", "[cli]") {
    temp_file cfg(
        "bad.json",
        R"({"listen": [{"http": "127.0.0.1:0"}], "limits": {"max_header_bytes": 4096, "bogus_limit": 1}})");
    auto r = run_corgi({"--config", cfg.path});
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("/limits/bogus_limit") != std::string::npos);

    temp_file top("bad2.json", R"({"listen": [{"http": "127.0.0.1:0"}], "lisen": []})");
    auto r2 = run_corgi({"--config", top.path});
    INFO(r2.err);
    CHECK(r2.exit_code == 2);
    CHECK(r2.err.find("/lisen") != std::string::npos);
}

TEST_CASE("cli: a bad route entry exits 2 naming its JSON pointer", "[cli]") {
    temp_file cfg("badroute.json", R"({"listen": [{"http": "127.0.0.1:0"}], "routes": [
        {"rule": "/", "endpoint": "index", "return": {"status": 200, "body": "hi"}},
        {"rule": "/x", "endpoint": "x", "retrun": {"status": 200, "body": "typo"}}]})");
    auto r = run_corgi({"--config", cfg.path});
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("/routes/1") != std::string::npos);

    temp_file bad_rule("badrule.json", R"({"routes": [{"submount": "/api", "routes": [
        {"rule": "/v1/<int:id", "endpoint": "broken", "echo": true}]}]})");
    auto r2 = run_corgi({"routes", "--config", bad_rule.path});
    INFO(r2.err);
    CHECK(r2.exit_code == 2);
    CHECK(r2.err.find("/routes/0/routes/0") != std::string::npos);

    temp_file dup("dup.json", R"({"routes": [{"rule": "/a", "endpoint": "a", "echo": true},
        {"rule": "/a", "endpoint": "b", "echo": true}]})");
    auto r3 = run_corgi({"routes", "--config", dup.path});
    INFO(r3.err);
    CHECK(r3.exit_code == 2);
    CHECK(r3.err.find("/routes/1") != std::string::npos);
}

TEST_CASE("cli: a config file that is not JSON or does not exist exits 2", "[cli]") {
    temp_file cfg("notjson.json", "{\"listen\": [");
    auto r = run_corgi({"--config", cfg.path});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(cfg.path) != std::string::npos);
    auto missing = run_corgi({"--config", "/nonexistent/corgi.json"});
    CHECK(missing.exit_code == 2);
    CHECK(missing.err.find("/nonexistent/corgi.json") != std::string::npos);
}

TEST_CASE("cli: corgi routes prints the table", "[cli][routes]") {
    auto r = run_corgi({"routes", "--config", "examples/demo.json"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    auto lines = lines_of(r.out);
    REQUIRE(lines.size() >= 12);
    CHECK(lines[0].find("RULE") != std::string::npos);
    CHECK(lines[0].find("ENDPOINT") != std::string::npos);
    // The row whose first two columns are the rule and the endpoint.
    auto row = [&](const std::string& rule, const std::string& endpoint) {
        for (const auto& line : lines) {
            std::istringstream in(line);
            std::string first, second;
            if (in >> first >> second && first == rule && second == endpoint) return line;
        }
        return std::string();
    };
    CHECK_FALSE(row("/user/<int:id>", "user").empty());
    CHECK(row("/user/<int:id>", "user").find("POST") != std::string::npos);
    CHECK_FALSE(row("/docs/", "docs").empty());
    CHECK_FALSE(row("/api/v1/<any(a,b):kind>", "api.kind").empty());
    CHECK_FALSE(row("/files/<path:p>", "files").empty());
    CHECK_FALSE(row("/hello/<name>", "hello").empty());
}

TEST_CASE("cli: routes --match prints the match as JSON with typed args", "[cli][routes]") {
    CHECK(match("GET /user/42") ==
          nlohmann::json({{"status", 200}, {"endpoint", "user"}, {"args", {{"id", 42}}}}));
    CHECK(match("GET /user/42")["args"]["id"].is_number_integer());
    CHECK(match("POST /user/7") ==
          nlohmann::json({{"status", 200}, {"endpoint", "user"}, {"args", {{"id", 7}}}}));
    CHECK(match("GET /hello/corgi") ==
          nlohmann::json({{"status", 200}, {"endpoint", "hello"}, {"args", {{"name", "corgi"}}}}));
    CHECK(match("GET /files/a/b.txt") ==
          nlohmann::json({{"status", 200}, {"endpoint", "files"}, {"args", {{"p", "a/b.txt"}}}}));
    CHECK(match("GET /api/v1/a") ==
          nlohmann::json({{"status", 200}, {"endpoint", "api.kind"}, {"args", {{"kind", "a"}}}}));
    CHECK(match("GET /docs/") ==
          nlohmann::json(
              {{"status", 200}, {"endpoint", "docs"}, {"args", nlohmann::json::object()}}));
}

TEST_CASE("cli: routes --match prints 404, 405 with allow and 308 with location", "[cli][routes]") {
    CHECK(match("GET /nope") == nlohmann::json({{"status", 404}}));
    CHECK(match("GET /user/abc") == nlohmann::json({{"status", 404}}));
    CHECK(match("GET /api/v1/c") == nlohmann::json({{"status", 404}}));

    auto not_allowed = match("DELETE /user/42");
    CHECK(not_allowed["status"] == 405);
    REQUIRE(not_allowed["allow"].is_array());
    auto allow = not_allowed["allow"].get<std::vector<std::string>>();
    CHECK(std::find(allow.begin(), allow.end(), "GET") != allow.end());
    CHECK(std::find(allow.begin(), allow.end(), "HEAD") != allow.end());
    CHECK(std::find(allow.begin(), allow.end(), "POST") != allow.end());
    CHECK(std::find(allow.begin(), allow.end(), "DELETE") == allow.end());
    CHECK(not_allowed.size() == 2);

    CHECK(match("GET /docs") == nlohmann::json({{"status", 308}, {"location", "/docs/"}}));
    CHECK(match("GET /api/v1/a/") == nlohmann::json({{"status", 404}}));
}

TEST_CASE("cli: routes --build prints the URL with extra args as query", "[cli][routes]") {
    auto r = run_corgi({"routes", "--config", "examples/demo.json", "--build", "user id=42 q=x"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out == "/user/42?q=x\n");

    // Percent-encoding: a '?' in a path segment and a '&' in a query value must not change the
    // URL's structure.
    auto hello =
        run_corgi({"routes", "--config", "examples/demo.json", "--build", "hello name=a?b"});
    REQUIRE(hello.exit_code == 0);
    CHECK(hello.out == "/hello/a%3Fb\n");
    auto query =
        run_corgi({"routes", "--config", "examples/demo.json", "--build", "user id=1 q=a&b"});
    REQUIRE(query.exit_code == 0);
    CHECK(query.out == "/user/1?q=a%26b\n");

    auto bad =
        run_corgi({"routes", "--config", "examples/demo.json", "--build", "user id=notanumber"});
    CHECK(bad.exit_code != 0);
    CHECK(bad.out.empty());
    auto unknown =
        run_corgi({"routes", "--config", "examples/demo.json", "--build", "no_such_endpoint"});
    CHECK(unknown.exit_code != 0);
    CHECK(unknown.err.find("no_such_endpoint") != std::string::npos);
}

TEST_CASE("cli: --match outside 'corgi routes' is a usage error", "[cli]") {
    auto r = run_corgi({"--match", "GET /"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("--match") != std::string::npos);
}

TEST_CASE("cli: request limit and lingering flags refuse bad values with exit 2", "[cli]") {
    for (std::vector<std::string> args : {std::vector<std::string>{"--limit-request-line", "8191"},
                                          {"--limit-request-line", "long"},
                                          {"--limit-request-fields", "32769"},
                                          {"--limit-request-field-size", "-1"},
                                          {"--lingering-time", "-1"},
                                          {"--lingering-timeout", "soon"}}) {
        auto r = run_corgi(args);
        INFO(args[0] << " " << args[1]);
        INFO(r.err);
        CHECK(r.exit_code == 2);
        CHECK(r.err.find(args[0]) != std::string::npos);
        CHECK(r.err.find("unknown") == std::string::npos);  // known, and the value is wrong
    }
}

TEST_CASE("cli: request limit and lingering JSON keys refuse bad values naming the pointer",
          "[cli]") {
    for (std::string limit : {R"("limit_request_line": 8191)", R"("limit_request_fields": 32769)",
                              R"("limit_request_field_size": "big")", R"("lingering_time": -1)",
                              R"("lingering_timeout": "5s")"}) {
        temp_file cfg("limits.json",
                      R"({"listen": [{"http": "127.0.0.1:0"}], "limits": {)" + limit + "}}");
        auto r = run_corgi({"--config", cfg.path});
        const std::string key = limit.substr(1, limit.find('"', 1) - 1);
        INFO(limit);
        INFO(r.err);
        CHECK(r.exit_code == 2);
        CHECK(r.err.find("/limits/" + key) != std::string::npos);
        CHECK(r.err.find("unknown") == std::string::npos);  // known, and the value is wrong
    }
}

TEST_CASE("cli: deadline flags, JSON keys and a route's timeout refuse bad values", "[cli]") {
    for (std::vector<std::string> args : {std::vector<std::string>{"--harakiri", "-1"},
                                          {"--timeout-request", "soon"},
                                          {"--harakiri-grace", "nan"}}) {
        auto r = run_corgi(args);
        INFO(args[0] << " " << args[1]);
        INFO(r.err);
        CHECK(r.exit_code == 2);
        CHECK(r.err.find(args[0]) != std::string::npos);
    }
    for (std::string limit :
         {R"("harakiri": -2)", R"("timeout_request": "1s")", R"("harakiri_grace": [10])"}) {
        temp_file cfg("deadline.json",
                      R"({"listen": [{"http": "127.0.0.1:0"}], "limits": {)" + limit + "}}");
        auto r = run_corgi({"--config", cfg.path});
        const std::string key = limit.substr(1, limit.find('"', 1) - 1);
        INFO(limit);
        INFO(r.err);
        CHECK(r.exit_code == 2);
        CHECK(r.err.find("/limits/" + key) != std::string::npos);
        CHECK(r.err.find("unknown") == std::string::npos);
    }
    temp_file routes("route-timeout.json", R"({"routes": [
        {"rule": "/a", "return": "a"},
        {"mount": "/m", "return": "m", "timeout": "long"}]})");
    auto r = run_corgi({"routes", "--config", routes.path});
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("/routes/1/timeout") != std::string::npos);
}

TEST_CASE("cli: corgi routes shows a route's own timeout; --match reports it", "[cli][routes]") {
    temp_file routes("route-timeout.json", R"({"routes": [
        {"rule": "/slow", "handler": "sleep", "timeout": 2.5},
        {"rule": "/free", "handler": "sleep", "timeout": 0},
        {"rule": "/plain", "handler": "plaintext"}]})");
    auto r = run_corgi({"routes", "--config", routes.path});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    auto lines = lines_of(r.out);
    REQUIRE(lines.size() >= 4);
    CHECK(lines[0].find("TIMEOUT") != std::string::npos);
    auto row = [&](std::string_view rule) {
        for (const auto& line : lines)
            if (line.starts_with(rule)) return line;
        return std::string();
    };
    CHECK(row("/slow").ends_with("2.5s"));
    CHECK(row("/free").ends_with("off"));
    CHECK(row("/plain").ends_with("-"));

    auto m = run_corgi({"routes", "--config", routes.path, "--match", "GET /slow"});
    INFO(m.err);
    REQUIRE(m.exit_code == 0);
    auto j = nlohmann::json::parse(m.out);
    CHECK(j.at("timeout").get<double>() == 2.5);
    auto plain = run_corgi({"routes", "--config", routes.path, "--match", "GET /plain"});
    CHECK_FALSE(nlohmann::json::parse(plain.out).contains("timeout"));
}
