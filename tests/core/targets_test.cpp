// The built-in targets called directly with a request: return, redirect, echo and static
// (traversal, symlink escapes, conditional requests, ranges).
#include <corgi/core/http_error.hpp>
#include <corgi/core/route_config.hpp>

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <unistd.h>

using corgi::request;
using corgi::response;
using corgi::test::make_request;
using corgi::test::run;
using corgi::test::temp_dir;
using nlohmann::json;

namespace {

namespace fs = std::filesystem;

// The bytes a file_range body would send.
std::string body_bytes(const response& res) {
    if (auto* s = std::get_if<std::string>(&res.body)) return *s;
    auto& range = std::get<corgi::file_range>(res.body);
    REQUIRE(range.file);
    std::string out(range.length, '\0');
    auto n = ::pread(range.file.get(), out.data(), out.size(), static_cast<off_t>(range.offset));
    REQUIRE(n == static_cast<ssize_t>(out.size()));
    return out;
}

// A static site: root/ with files, and outside/ next to it that symlinks try to reach.
struct site {
    temp_dir dir;
    fs::path root = dir.path / "root";
    corgi::handler files;
    site() {
        dir.write("root/a.txt", "hello world");
        dir.write("root/page.html", "<p>hi</p>");
        dir.write("root/data.bin", "\x01\x02");
        dir.write("root/sub/index.html", "<h1>index</h1>");
        dir.write("root/noindex/x.css", "body{}");
        dir.write("outside/secret.txt", "secret");
        dir.write("root-sibling/secret.txt", "sibling secret");
        fs::create_symlink("../outside/secret.txt", root / "escape");
        fs::create_directory_symlink("../outside", root / "escape_dir");
        fs::create_symlink("../root-sibling/secret.txt", root / "prefix_trick");
        fs::create_symlink("a.txt", root / "inner_link");
        files = corgi::static_target(root.string());
    }
    response get(const std::string& rel,
                 std::vector<std::pair<std::string, std::string>> headers = {},
                 const std::string& method = "GET") {
        auto req = make_request(method, "/files/" + rel);
        req.args.emplace_back("p", rel);
        for (auto& [k, v] : headers) req.headers.add(k, v);
        return run(files, req);
    }
};

}  // namespace

TEST_CASE("targets: return answers its fixed response", "[unit][targets]") {
    auto h = corgi::return_target(201, "made\n", "text/x-made");
    auto req = make_request("POST", "/x");
    auto res = run(h, req);
    CHECK(res.status == 201);
    CHECK(corgi::test::body_of(res) == "made\n");
    CHECK(res.headers.get("Content-Type") == "text/x-made");
    auto again = run(h, req);  // the target is reusable
    CHECK(corgi::test::body_of(again) == "made\n");
}

TEST_CASE("targets: redirect fills placeholders from the route arguments", "[unit][targets]") {
    auto req = make_request("GET", "/old/x");
    req.args.emplace_back("name", std::string("a b"));
    req.args.emplace_back("id", std::int64_t{42});
    req.args.emplace_back("ratio", 0.5);

    auto res = run(corgi::redirect_target("/new/<name>/<id>?r=<ratio>"), req);
    CHECK(res.status == 308);
    CHECK(res.headers.get("Location") == "/new/a%20b/42?r=0.5");
    CHECK(run(corgi::redirect_target("/plain", 301), req).status == 301);

    // Relative to where the map is mounted, unless absolute.
    req.script_name = "/app";
    CHECK(run(corgi::redirect_target("/new"), req).headers.get("Location") == "/app/new");
    CHECK(run(corgi::redirect_target("https://example.org/<id>"), req).headers.get("Location") ==
          "https://example.org/42");
    CHECK(run(corgi::redirect_target("//cdn.example.org/x"), req).headers.get("Location") ==
          "//cdn.example.org/x");
    CHECK_THROWS_AS(run(corgi::redirect_target("/x/<missing>"), req), corgi::http_error);
}

TEST_CASE("targets: echo describes the request as JSON", "[unit][targets]") {
    auto req = make_request("PUT", "/api/item/7", "q=a+b&tag=x&tag=y&e=%C3%A9");
    req.path = "/prefix/api/item/7";
    req.script_name = "/prefix";
    req.endpoint = "item";
    req.args.emplace_back("id", std::int64_t{7});
    req.args.emplace_back("ratio", 2.5);
    req.args.emplace_back("name", std::string("n"));
    req.headers.add("X-Custom", "one");
    req.headers.add("x-custom", "two");
    req.headers.add("Content-Type", "text/plain");
    req.protocol_name = "uwsgi";
    req.remote_addr = "10.0.0.1";
    corgi::test::string_body body(std::string(3000, 'b'), 700);
    req.body = &body;
    req.content_length = 3000;

    auto res = run(corgi::echo_target(), req);
    CHECK(res.status == 200);
    CHECK(res.headers.get("Content-Type") == "application/json");
    auto j = json::parse(corgi::test::body_of(res));
    CHECK(j["endpoint"] == "item");
    CHECK(j["args"] == json{{"id", 7}, {"ratio", 2.5}, {"name", "n"}});
    CHECK(j["args"]["id"].is_number_integer());
    CHECK(j["args"]["ratio"].is_number_float());
    CHECK(j["method"] == "PUT");
    CHECK(j["path"] == "/prefix/api/item/7");
    CHECK(j["script_name"] == "/prefix");
    CHECK(j["path_info"] == "/api/item/7");
    CHECK(j["query"] == json{{"q", "a b"}, {"tag", json::array({"x", "y"})}, {"e", "\xc3\xa9"}});
    CHECK(j["headers"]["x-custom"] == "one, two");
    CHECK(j["headers"]["content-type"] == "text/plain");
    CHECK_FALSE(j["headers"].contains("X-Custom"));
    CHECK(j["protocol"] == "uwsgi");
    CHECK(j["remote_addr"] == "10.0.0.1");
    CHECK(j["body_length"] == 3000);

    auto empty = make_request("GET", "/\xff");  // not UTF-8: replaced, not an exception
    auto j2 = json::parse(corgi::test::body_of(run(corgi::echo_target(), empty)));
    CHECK(j2["body_length"] == 0);
    CHECK(j2["query"] == json::object());
    CHECK(j2["args"] == json::object());
}

TEST_CASE("targets: echo refuses a body over 1 MiB with 413", "[unit][targets]") {
    auto req = make_request("POST", "/echo");
    corgi::test::string_body body(std::string(1024 * 1024 + 1, 'x'), 64 * 1024);
    req.body = &body;  // no Content-Length: chunked, counted as it arrives
    req.chunked = true;
    CHECK(run(corgi::echo_target(), req).status == 413);

    auto exact = make_request("POST", "/echo");
    corgi::test::string_body fits(std::string(1024 * 1024, 'x'), 64 * 1024);
    exact.body = &fits;
    auto j = json::parse(corgi::test::body_of(run(corgi::echo_target(), exact)));
    CHECK(j["body_length"] == 1024 * 1024);
}

TEST_CASE("targets: static serves files as open file ranges with validators", "[unit][targets]") {
    site s;
    auto res = s.get("a.txt");
    CHECK(res.status == 200);
    CHECK(std::holds_alternative<corgi::file_range>(res.body));
    CHECK(body_bytes(res) == "hello world");
    CHECK(res.known_length() == 11u);
    CHECK(res.headers.get("Content-Type") == "text/plain; charset=utf-8");
    CHECK(res.headers.get("Accept-Ranges") == "bytes");
    CHECK(res.headers.get("ETag").starts_with("\"b-"));  // size (11) in hex, then the mtime
    CHECK(res.headers.get("Last-Modified").ends_with(" GMT"));
    CHECK(s.get("page.html").headers.get("Content-Type") == "text/html; charset=utf-8");
    CHECK(s.get("data.bin").headers.get("Content-Type") == "application/octet-stream");
    CHECK(s.get("inner_link").status == 200);  // a symlink that stays inside the root is fine

    auto dir = s.get("sub");
    CHECK(dir.status == 200);
    CHECK(body_bytes(dir) == "<h1>index</h1>");
    CHECK(dir.headers.get("Content-Type") == "text/html; charset=utf-8");
    CHECK(s.get("sub/").status == 200);
    CHECK(s.get("noindex").status == 404);
    CHECK(s.get("missing.txt").status == 404);
    CHECK(s.get("a.txt/x").status == 404);

    auto head = s.get("a.txt", {}, "HEAD");
    CHECK(head.status == 200);
    CHECK(head.known_length() == 11u);
    auto post = s.get("a.txt", {}, "POST");
    CHECK(post.status == 405);
    CHECK(post.headers.get("Allow") == "GET, HEAD");
}

TEST_CASE("targets: static refuses traversal and symlink escapes", "[unit][targets]") {
    site s;
    for (const char* rel :
         {"../outside/secret.txt", "sub/../../outside/secret.txt", "..", "sub/..", "escape",
          "escape_dir/secret.txt", "prefix_trick", "/../outside/secret.txt"}) {
        INFO(rel);
        auto res = s.get(rel);
        CHECK(res.status == 404);
        CHECK(std::holds_alternative<std::string>(res.body));
    }
    // A leading slash is relative to the root, not to the file system.
    CHECK(body_bytes(s.get("/a.txt")) == "hello world");
    CHECK(s.get(std::string("a.txt\0x", 7)).status == 404);
}

TEST_CASE("targets: static answers conditional requests with 304", "[unit][targets]") {
    site s;
    auto first = s.get("a.txt");
    std::string etag(first.headers.get("ETag"));
    std::string modified(first.headers.get("Last-Modified"));

    auto same = s.get("a.txt", {{"If-None-Match", etag}});
    CHECK(same.status == 304);
    CHECK(same.headers.get("ETag") == etag);
    CHECK(corgi::test::body_of(same).empty());
    CHECK(s.get("a.txt", {{"If-None-Match", "\"other\", W/" + etag}}).status == 304);
    CHECK(s.get("a.txt", {{"If-None-Match", "*"}}).status == 304);
    CHECK(s.get("a.txt", {{"If-None-Match", "\"other\""}}).status == 200);

    CHECK(s.get("a.txt", {{"If-Modified-Since", modified}}).status == 304);
    CHECK(s.get("a.txt", {{"If-Modified-Since", "Thu, 01 Jan 2099 00:00:00 GMT"}}).status == 304);
    CHECK(s.get("a.txt", {{"If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT"}}).status == 200);
    CHECK(s.get("a.txt", {{"If-Modified-Since", "yesterday"}}).status == 200);
    // If-None-Match takes precedence over If-Modified-Since.
    CHECK(
        s.get("a.txt", {{"If-None-Match", "\"other\""}, {"If-Modified-Since", modified}}).status ==
        200);

    // The validators change with the file.
    s.dir.write("root/a.txt", "hello world, again");
    auto changed = s.get("a.txt", {{"If-None-Match", etag}});
    CHECK(changed.status == 200);
    CHECK(changed.headers.get("ETag") != etag);
}

TEST_CASE("targets: static answers single byte ranges with 206 and 416", "[unit][targets]") {
    site s;
    struct range_case {
        const char* range;
        int status;
        const char* content_range;
        const char* body;
    };
    const std::vector<range_case> cases = {
        {"bytes=0-4", 206, "bytes 0-4/11", "hello"},
        {"bytes=6-", 206, "bytes 6-10/11", "world"},
        {"bytes=-5", 206, "bytes 6-10/11", "world"},
        {"bytes=-50", 206, "bytes 0-10/11", "hello world"},
        {"bytes=4-100", 206, "bytes 4-10/11", "o world"},
        {"bytes=10-10", 206, "bytes 10-10/11", "d"},
        {"BYTES = 0-0", 200, "", "hello world"},    // not the syntax: ignored
        {"bytes=0-1,3-4", 200, "", "hello world"},  // several ranges: the whole file
        {"bytes=5-2", 200, "", "hello world"},
        {"bytes=x-2", 200, "", "hello world"},
        {"items=0-1", 200, "", "hello world"},
        {"bytes=11-", 416, "bytes */11", nullptr},
        {"bytes=20-30", 416, "bytes */11", nullptr},
        {"bytes=-0", 416, "bytes */11", nullptr},
    };
    for (auto& c : cases) {
        INFO(c.range);
        auto res = s.get("a.txt", {{"Range", c.range}});
        CHECK(res.status == c.status);
        CHECK(res.headers.get("Content-Range") == c.content_range);
        if (c.body) CHECK(body_bytes(res) == c.body);
    }
    auto first = s.get("a.txt");
    std::string etag(first.headers.get("ETag"));
    CHECK(s.get("a.txt", {{"Range", "bytes=0-4"}, {"If-Range", etag}}).status == 206);
    CHECK(s.get("a.txt", {{"Range", "bytes=0-4"}, {"If-Range", "\"stale\""}}).status == 200);
}

TEST_CASE("targets: static under a mount uses path_info; a file root serves that file",
          "[unit][targets]") {
    site s;
    auto req = make_request("GET", "/a.txt");
    req.script_name = "/static";
    CHECK(body_bytes(run(s.files, req)) == "hello world");
    auto sub = make_request("GET", "/sub/");
    CHECK(body_bytes(run(s.files, sub)) == "<h1>index</h1>");
    auto root = make_request("GET", "");
    CHECK(run(s.files, root).status == 404);  // the root has no index.html

    auto single = corgi::static_target((s.root / "page.html").string());
    auto any = make_request("GET", "/whatever");
    auto res = run(single, any);
    CHECK(body_bytes(res) == "<p>hi</p>");
    CHECK(res.headers.get("Content-Type") == "text/html; charset=utf-8");

    CHECK_THROWS_AS(corgi::static_target((s.root / "nope").string()), std::invalid_argument);
}
