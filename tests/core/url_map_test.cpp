// The URL map, in the spirit of werkzeug's tests/test_routing.py: converters and their arguments,
// ordering, methods, strict slashes, mounts, submounts, duplicates, build(), and the dispatcher on
// top.
#include <corgi/core/url_map.hpp>

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

using corgi::match_result;
using corgi::mount;
using corgi::route_value;
using corgi::routing_error;
using corgi::rule;
using corgi::rule_options;
using corgi::submount;
using corgi::url_map;
using corgi::test::reporter;

namespace {

using args_t = std::vector<std::pair<std::string, route_value>>;

url_map converter_map() {
    auto h = reporter();
    return url_map{
        rule("/", "index", h),
        rule("/foo", "foo", h),
        rule("/bar/", "bar", h),
        rule("/user/<int:id>", "user", h),
        rule("/user/me", "me", h),
        rule("/page/<string(length=2):lang>", "lang", h),
        rule("/len/<string(minlength=2, maxlength=3):s>", "len", h),
        rule("/num/<int(min=1, max=9):x>", "small", h),
        rule("/num/<string:s>", "num_str", h),
        rule("/f/<float:v>", "float", h),
        rule("/fr/<float(min=0.5, max=2.5):v>", "float_range", h),
        rule("/s/<int(signed=True):n>", "signed", h),
        rule("/sf/<float(signed=True):v>", "signed_float", h),
        rule("/files/<path:p>", "files", h),
        rule("/files/<path:p>/edit", "edit", h),
        rule("/u/<uuid:id>", "uuid", h),
        rule("/k/<any(a, \"b c\", 'd,e'):k>", "any", h),
        rule("/fixed/<int(fixed_digits=4):y>", "fixed", h),
        rule("/fixedpos/<int(4, 1, 9999):y>", "fixed_positional", h),
        rule("/mix/page-<int:n>.html", "mix", h),
        rule("/split/<a>-<b>", "split", h),
        rule("/two/<int:a>/<string:b>", "two", h),
    };
}

struct match_case {
    const char* method;
    const char* path;
    int status;
    const char* endpoint;  // 200 only
    args_t args;
};

}  // namespace

TEST_CASE("url_map: converters match, convert and reject like werkzeug's", "[unit][url_map]") {
    auto map = converter_map();
    const std::vector<match_case> cases = {
        {"GET", "/", 200, "index", {}},
        {"GET", "/foo", 200, "foo", {}},
        {"GET",
         "/foo/",
         404,
         "",
         {}},  // strict: the rule without slash does not take the slashed path
        {"GET", "/bar/", 200, "bar", {}},
        {"GET", "/user/42", 200, "user", {{"id", std::int64_t{42}}}},
        {"GET", "/user/007", 200, "user", {{"id", std::int64_t{7}}}},
        {"GET", "/user/me", 200, "me", {}},  // static beats the int converter
        {"GET", "/user/abc", 404, "", {}},
        {"GET", "/user/-1", 404, "", {}},
        {"GET", "/user/99999999999999999999", 404, "", {}},  // beyond int64: no match, no crash
        {"GET", "/user/", 404, "", {}},
        {"GET", "/page/en", 200, "lang", {{"lang", std::string("en")}}},
        {"GET", "/page/eng", 404, "", {}},
        {"GET",
         "/page/\xc3\xa9",
         404,
         "",
         {}},  // one character, two bytes: length counts characters
        {"GET",
         "/page/\xc3\xa9"
         "a",
         200,
         "lang",
         {{"lang", std::string("\xc3\xa9"
                               "a")}}},
        {"GET", "/len/ab", 200, "len", {{"s", std::string("ab")}}},
        {"GET", "/len/abc", 200, "len", {{"s", std::string("abc")}}},
        {"GET", "/len/a", 404, "", {}},
        {"GET", "/len/abcd", 404, "", {}},
        {"GET", "/num/5", 200, "small", {{"x", std::int64_t{5}}}},
        // Out of the int's range: the string rule gets it (werkzeug would stop with a 404 here).
        {"GET", "/num/10", 200, "num_str", {{"s", std::string("10")}}},
        {"GET", "/num/0", 200, "num_str", {{"s", std::string("0")}}},
        {"GET", "/f/1.5", 200, "float", {{"v", 1.5}}},
        {"GET", "/f/1", 404, "", {}},
        {"GET", "/f/1.", 404, "", {}},
        {"GET", "/f/.5", 404, "", {}},
        {"GET", "/f/-1.5", 404, "", {}},
        {"GET", "/fr/2.5", 200, "float_range", {{"v", 2.5}}},
        {"GET", "/fr/2.6", 404, "", {}},
        {"GET", "/fr/0.4", 404, "", {}},
        {"GET", "/s/-3", 200, "signed", {{"n", std::int64_t{-3}}}},
        {"GET", "/s/3", 200, "signed", {{"n", std::int64_t{3}}}},
        {"GET", "/s/--3", 404, "", {}},
        {"GET", "/sf/-0.25", 200, "signed_float", {{"v", -0.25}}},
        {"GET", "/files/a/b/c.txt", 200, "files", {{"p", std::string("a/b/c.txt")}}},
        {"GET", "/files/x", 200, "files", {{"p", std::string("x")}}},
        {"GET", "/files/a/b/edit", 200, "edit", {{"p", std::string("a/b")}}},
        {"GET", "/files/a/", 200, "files", {{"p", std::string("a/")}}},
        {"GET", "/files/", 404, "", {}},
        {"GET", "/files//x", 404, "", {}},  // path is [^/].*? : it cannot start with a slash
        {"GET",
         "/u/550E8400-E29B-41D4-A716-446655440000",
         200,
         "uuid",
         {{"id", std::string("550e8400-e29b-41d4-a716-446655440000")}}},
        {"GET", "/u/550e8400-e29b-41d4-a716-44665544000", 404, "", {}},
        {"GET", "/u/550e8400xe29b-41d4-a716-446655440000", 404, "", {}},
        {"GET", "/k/a", 200, "any", {{"k", std::string("a")}}},
        {"GET", "/k/b c", 200, "any", {{"k", std::string("b c")}}},
        {"GET", "/k/d,e", 200, "any", {{"k", std::string("d,e")}}},
        {"GET", "/k/b", 404, "", {}},
        {"GET", "/fixed/0042", 200, "fixed", {{"y", std::int64_t{42}}}},
        {"GET", "/fixed/42", 404, "", {}},
        {"GET", "/fixed/00042", 404, "", {}},
        {"GET", "/fixedpos/0042", 200, "fixed_positional", {{"y", std::int64_t{42}}}},
        {"GET", "/fixedpos/0000", 404, "", {}},  // min=1 given positionally
        {"GET", "/mix/page-12.html", 200, "mix", {{"n", std::int64_t{12}}}},
        {"GET", "/mix/page-x.html", 404, "", {}},
        {"GET", "/mix/page-12.htm", 404, "", {}},
        {"GET", "/split/a-b-c", 200, "split", {{"a", std::string("a-b")}, {"b", std::string("c")}}},
        {"GET", "/two/3/x", 200, "two", {{"a", std::int64_t{3}}, {"b", std::string("x")}}},
        {"GET", "/two/x/3", 404, "", {}},
        {"GET", "/nowhere", 404, "", {}},
    };
    for (auto& c : cases) {
        INFO(c.method << " " << c.path);
        auto m = map.match(c.method, c.path);
        CHECK(m.status == c.status);
        if (c.status == 200) {
            CHECK(m.endpoint == c.endpoint);
            CHECK(m.args == c.args);
            CHECK(m.target != nullptr);
            CHECK_FALSE(m.is_mount);
        } else {
            CHECK(m.target == nullptr);
            CHECK(m.args.empty());
        }
    }
}

TEST_CASE("url_map: static parts before converters, converters by weight, path last",
          "[unit][url_map]") {
    auto h = reporter();
    url_map map{
        rule("/<path:p>", "path", h),        rule("/<string:s>", "string", h),
        rule("/<int:i>", "int", h),          rule("/<name>.json", "json", h),
        rule("/a/<x>/c", "dyn", h),          rule("/a/b/d", "static", h),
        rule("/v/<float:f>", "float", h),    rule("/v/<int:i>", "int2", h),
        rule("/v/<string:s>", "string2", h),
    };
    CHECK(map.match("GET", "/5").endpoint == "int");
    CHECK(map.match("GET", "/x").endpoint == "string");
    CHECK(map.match("GET", "/x.json").endpoint == "json");  // more static text: tried first
    CHECK(map.match("GET", "/a/b").endpoint == "path");
    CHECK(map.match("GET", "/a/b/c").endpoint ==
          "dyn");  // the static branch /a/b fails, then backtracks
    CHECK(map.match("GET", "/a/b/d").endpoint == "static");
    CHECK(map.match("GET", "/a/q/c").endpoint == "dyn");
    CHECK(map.match("GET", "/a/q/z").endpoint == "path");
    CHECK(map.match("GET", "/v/1.5").endpoint == "float");
    CHECK(map.match("GET", "/v/15").endpoint == "int2");
    CHECK(map.match("GET", "/v/x").endpoint == "string2");

    // rules(): the matcher's order, whatever the declaration order.
    std::vector<std::string> order;
    for (auto& r : map.rules()) order.push_back(r.pattern);
    auto pos = [&](const std::string& p) {
        return std::find(order.begin(), order.end(), p) - order.begin();
    };
    REQUIRE(order.size() == 9);
    CHECK(pos("/a/b/d") < pos("/a/<x>/c"));
    CHECK(pos("/<int:i>") < pos("/<string:s>"));
    CHECK(pos("/<string:s>") < pos("/<path:p>"));
    CHECK(pos("/<name>.json") < pos("/<string:s>"));
    // The same declarations in another order give the same matches.
    url_map reversed{
        rule("/v/<string:s>", "string2", h), rule("/v/<int:i>", "int2", h),
        rule("/v/<float:f>", "float", h),    rule("/a/b/d", "static", h),
        rule("/a/<x>/c", "dyn", h),          rule("/<name>.json", "json", h),
        rule("/<int:i>", "int", h),          rule("/<string:s>", "string", h),
        rule("/<path:p>", "path", h),
    };
    for (const char* p :
         {"/5", "/x", "/x.json", "/a/b", "/a/b/c", "/a/b/d", "/v/1.5", "/v/15", "/v/x"}) {
        INFO(p);
        CHECK(reversed.match("GET", p).endpoint == map.match("GET", p).endpoint);
    }
}

TEST_CASE("url_map: methods, HEAD from GET, 405 with the allowed set", "[unit][url_map]") {
    auto h = reporter();
    url_map map{
        rule("/m", "get", h, {.methods = {"GET"}}),
        rule("/m", "post", h, {.methods = {"post"}}),  // names are upper-cased
        rule("/any", "any", h),
        rule("/opt", "opt", h, {.methods = {"GET", "OPTIONS"}}),
        rule("/only-post/", "only_post", h, {.methods = {"POST"}}),
    };
    CHECK(map.match("GET", "/m").endpoint == "get");
    CHECK(map.match("HEAD", "/m").endpoint == "get");
    CHECK(map.match("POST", "/m").endpoint == "post");
    auto put = map.match("PUT", "/m");
    CHECK(put.status == 405);
    CHECK(put.allow == std::vector<std::string>{"GET", "HEAD", "OPTIONS", "POST"});
    auto options = map.match("OPTIONS", "/m");
    CHECK(options.status == 405);  // no rule takes OPTIONS: the dispatcher answers it
    CHECK(options.allow == put.allow);
    for (const char* method : {"GET", "PATCH", "DELETE", "OPTIONS", "BREW"}) {
        CHECK(map.match(method, "/any").status == 200);
    }
    auto opt = map.match("OPTIONS", "/opt");
    CHECK(opt.status == 200);
    CHECK(opt.allow == std::vector<std::string>{"GET", "HEAD", "OPTIONS"});
    CHECK(map.match("GET", "/opt").allow.empty());
    // The slashed rule only exists for POST: GET finds nothing to redirect to.
    CHECK(map.match("GET", "/only-post").status == 404);
    CHECK(map.match("POST", "/only-post").status == 308);
    auto slashed = map.match("GET", "/only-post/");
    CHECK(slashed.status == 405);
    CHECK(slashed.allow == std::vector<std::string>{"OPTIONS", "POST"});
    CHECK(map.match("GET", "/nothing").allow.empty());
}

TEST_CASE("url_map: strict slashes redirect with 308, or match both forms when off",
          "[unit][url_map]") {
    auto h = reporter();
    url_map map{
        rule("/", "index", h),
        rule("/docs/", "docs", h),
        rule("/docs/<int:page>/", "page", h),
        rule("/loose/", "loose", h, {.methods = {}, .strict_slashes = false}),
        rule("/bare", "bare", h, {.methods = {}, .strict_slashes = false}),
    };
    auto m = map.match("GET", "/docs");
    CHECK(m.status == 308);
    CHECK(m.location == "/docs/");
    CHECK(m.target == nullptr);
    auto p = map.match("GET", "/docs/3");
    CHECK(p.status == 308);
    CHECK(p.location == "/docs/3/");
    CHECK(map.match("GET", "/docs/3/").args == args_t{{"page", std::int64_t{3}}});
    auto root = map.match("GET", "");
    CHECK(root.status == 308);
    CHECK(root.location == "/");
    CHECK(map.match("GET", "/loose").endpoint == "loose");
    CHECK(map.match("GET", "/loose/").endpoint == "loose");
    CHECK(map.match("GET", "/bare").endpoint == "bare");
    CHECK(map.match("GET", "/bare/").endpoint == "bare");
    CHECK(map.match("GET", "/docs//").status == 404);
}

TEST_CASE("url_map: mounts take what rules leave, longest prefix first", "[unit][url_map]") {
    auto h = reporter();
    url_map map{
        rule("/api/ping", "ping", h),
        rule("/legacy/special", "special", h),
        mount("/legacy", h, "legacy"),
        mount("/", h, "root"),
        mount("/legacy/admin/", h),  // trailing slash ignored; default endpoint: the prefix
        submount("/sub", {mount("/app", h, "sub.app")}),
    };
    struct mount_case {
        const char* path;
        const char* endpoint;
        bool is_mount;
        const char* prefix;
    };
    const std::vector<mount_case> cases = {
        {"/api/ping", "ping", false, ""},
        {"/legacy/special", "special", false, ""},
        {"/legacy", "legacy", true, "/legacy"},
        {"/legacy/", "legacy", true, "/legacy"},
        {"/legacy/x/y", "legacy", true, "/legacy"},
        {"/legacyx", "root", true, ""},
        {"/legacy/admin", "/legacy/admin", true, "/legacy/admin"},
        {"/legacy/admin/users", "/legacy/admin", true, "/legacy/admin"},
        {"/api/pong", "root", true, ""},
        {"/", "root", true, ""},
        {"/sub/app/x", "sub.app", true, "/sub/app"},
    };
    for (auto& c : cases) {
        INFO(c.path);
        auto m = map.match("POST", c.path);
        CHECK(m.status == 200);
        CHECK(m.endpoint == c.endpoint);
        CHECK(m.is_mount == c.is_mount);
        CHECK(m.mount_prefix == c.prefix);
    }
    // A rule that knows the path but not the method wins over the mount under it.
    CHECK(url_map{rule("/x", "x", h, {.methods = {"GET"}}), mount("/", h)}
              .match("POST", "/x")
              .status == 405);
    url_map no_root{mount("/app", h)};
    CHECK(no_root.match("GET", "/other").status == 404);
    CHECK(no_root.match("GET", "/ap").status == 404);
}

TEST_CASE("url_map: submounts prefix rules and keep their endpoints", "[unit][url_map]") {
    auto h = reporter();
    url_map map{
        submount("/api",
                 {rule("/v1/<any(a,b):kind>", "api.kind", h),
                  submount("/deep/", {rule("/x", "deep.x", h), rule("/", "deep.index", h)})}),
    };
    auto m = map.match("GET", "/api/v1/b");
    CHECK(m.endpoint == "api.kind");
    CHECK(m.args == args_t{{"kind", std::string("b")}});
    CHECK(map.match("GET", "/api/v1/c").status == 404);
    CHECK(map.match("GET", "/api/deep/x").endpoint == "deep.x");
    CHECK(map.match("GET", "/api/deep/").endpoint == "deep.index");
    CHECK(map.match("GET", "/api/deep").location == "/api/deep/");
    CHECK(map.build("api.kind", {{"kind", "a"}}) == "/api/v1/a");
    auto rules = map.rules();
    REQUIRE(rules.size() == 3);
    CHECK(std::any_of(rules.begin(), rules.end(),
                      [](auto& r) { return r.pattern == "/api/deep/x"; }));
}

TEST_CASE("url_map: duplicate rules are rejected when the map is built", "[unit][url_map]") {
    auto h = reporter();
    auto builds = [&](std::vector<corgi::route_entry> entries) {
        try {
            url_map map(std::move(entries));
            return std::string("ok");
        } catch (const routing_error& e) {
            return std::string(e.what());
        }
    };
    CHECK_THAT(builds({rule("/a", "one", h), rule("/a", "two", h)}),
               Catch::Contains("'/a'") && Catch::Contains("two") && Catch::Contains("duplicates"));
    // Another variable name is still the same URL space.
    CHECK_THAT(builds({rule("/a/<x>", "one", h), rule("/a/<y>", "two", h)}),
               Catch::Contains("duplicates"));
    CHECK_THAT(builds({rule("/a", "one", h, {.methods = {"GET"}}),
                       rule("/a", "two", h, {.methods = {"get"}})}),
               Catch::Contains("duplicates"));
    // GET implies HEAD.
    CHECK_THAT(builds({rule("/a", "one", h, {.methods = {"GET"}}),
                       rule("/a", "two", h, {.methods = {"HEAD"}})}),
               Catch::Contains("duplicates"));
    CHECK_THAT(builds({rule("/a", "one", h), rule("/a", "two", h, {.methods = {"POST"}})}),
               Catch::Contains("duplicates"));
    CHECK_THAT(builds({submount("/x", {rule("/a", "one", h)}), rule("/x/a", "two", h)}),
               Catch::Contains("duplicates"));
    CHECK_THAT(builds({mount("/m", h), mount("/m/", h)}), Catch::Contains("twice"));
    // Not duplicates.
    CHECK(builds({rule("/a", "one", h, {.methods = {"GET"}}),
                  rule("/a", "two", h, {.methods = {"POST"}})}) == "ok");
    CHECK(builds({rule("/a", "one", h), rule("/a/", "two", h)}) == "ok");
    CHECK(builds({rule("/a/<int:x>", "one", h), rule("/a/<x>", "two", h)}) == "ok");
    CHECK(builds({rule("/a/<int(min=1):x>", "one", h), rule("/a/<int:x>", "two", h)}) == "ok");
}

TEST_CASE("url_map: bad patterns and converter arguments are clear errors", "[unit][url_map]") {
    auto h = reporter();
    struct bad_case {
        const char* pattern;
        const char* message;
    };
    const std::vector<bad_case> cases = {
        {"no-slash", "must start with '/'"},
        {"", "must start with '/'"},
        {"/<int:>", "variable name"},
        {"/<>", "name after '<'"},
        {"/<int", "malformed"},
        {"/<x", "malformed"},
        {"/<int(min=1:x>", "unclosed"},
        {"/<unknown:x>", "unknown converter 'unknown'"},
        {"/<int(foo=1):x>", "unknown argument 'foo'"},
        {"/<int(min=a):x>", "must be an integer"},
        {"/<int(min=5, max=1):x>", "min is above max"},
        {"/<int(1, 2, 3, True, 5):x>", "too many arguments"},
        {"/<int(signed=maybe):x>", "True or False"},
        {"/<float(min=x):x>", "must be a number"},
        {"/<x>/<x>", "appears twice"},
        {"/<string(length=0):x>", "at least 1"},
        {"/<string(minlength=3, maxlength=2):x>", "below minlength"},
        {"/<string(length=2, maxlength=3):x>", "excludes"},
        {"/<any():x>", "at least one item"},
        {"/<any(a, k=b):x>", "no keyword"},
        {"/<path(1):x>", "takes no arguments"},
        {"/<uuid(v=4):x>", "takes no arguments"},
        {"/<any(\"a):x>", "unclosed"},
        {"/<any(\"a, b):x>", "unclosed"},
        {"/<int(min=1 max=2):x>", "bad converter argument"},
        {"/<int(min=1, min=2):x>", "given twice"},
    };
    for (auto& c : cases) {
        INFO(c.pattern);
        try {
            url_map map{rule(c.pattern, "e", h)};
            FAIL("no routing_error");
        } catch (const routing_error& e) {
            CHECK_THAT(e.what(), Catch::Contains(c.message));
            CHECK_THAT(e.what(), Catch::Contains(std::string("'") + c.pattern + "'"));
        }
    }
    CHECK_THROWS_AS(url_map{mount("/a/<x>", h)}, routing_error);
    CHECK_THROWS_AS(url_map{mount("relative", h)}, routing_error);
    CHECK_THROWS_AS(url_map{rule("/x", "e", h, {.methods = {""}})}, routing_error);
    CHECK_THROWS_AS(url_map{rule("/x", "e", nullptr)}, routing_error);
}

TEST_CASE("url_map: build formats values, encodes them and adds the rest as a query",
          "[unit][url_map]") {
    auto map = converter_map();
    auto h = reporter();
    url_map extra{
        rule("/p/", "pages", h),
        rule("/p/<int:n>", "pages", h),
        rule("/a b/<name>", "spaced", h),
        mount("/legacy", h, "legacy"),
    };
    CHECK(map.build("index") == "/");
    CHECK(map.build("user", {{"id", "42"}}) == "/user/42");
    CHECK(map.build("fixed", {{"y", "7"}}) == "/fixed/0007");
    CHECK(map.build("signed", {{"n", "-5"}}) == "/s/-5");
    CHECK(map.build("float", {{"v", "1.5"}}) == "/f/1.5");
    CHECK(map.build("float", {{"v", "2"}}) == "/f/2.0");  // the matcher needs digits.digits
    CHECK(map.build("uuid", {{"id", "550E8400-E29B-41D4-A716-446655440000"}}) ==
          "/u/550e8400-e29b-41d4-a716-446655440000");
    CHECK(map.build("any", {{"k", "b c"}}) == "/k/b%20c");
    CHECK(map.build("mix", {{"n", "3"}}) == "/mix/page-3.html");
    CHECK(map.build("user", {{"id", "42"}, {"q", "a b"}, {"x", "&="}, {"q", "2"}}) ==
          "/user/42?q=a+b&x=%26%3D&q=2");
    CHECK(map.build("files", {{"p", "a b/c?d#e%"}}) == "/files/a%20b/c%3Fd%23e%25");
    CHECK(map.build("lang", {{"lang", "a/"}}) == "/page/a%2F");
    CHECK(map.build("len", {{"s", "\xc3\xa9\xc3\xa9"}}) == "/len/%C3%A9%C3%A9");
    CHECK(map.build("bar") == "/bar/");
    CHECK(extra.build("spaced", {{"name", "x"}}) == "/a%20b/x");
    // Rules with more arguments are tried first, as werkzeug does.
    CHECK(extra.build("pages") == "/p/");
    CHECK(extra.build("pages", {{"n", "2"}}) == "/p/2");
    CHECK(extra.build("pages", {{"m", "2"}}) == "/p/?m=2");
    CHECK(extra.build("legacy", {{"x", "1"}}) == "/legacy?x=1");
    // Every built URL matches back to its rule.
    auto m = map.match("GET", "/u/550e8400-e29b-41d4-a716-446655440000");
    CHECK(m.endpoint == "uuid");

    CHECK_THROWS_WITH(map.build("nope"), Catch::Contains("no rule has the endpoint 'nope'"));
    CHECK_THROWS_WITH(map.build("user"), Catch::Contains("needs 'id'"));
    CHECK_THROWS_WITH(map.build("user", {{"id", "abc"}}), Catch::Contains("not an integer"));
    CHECK_THROWS_WITH(map.build("user", {{"id", "-1"}}), Catch::Contains("out of range"));
    CHECK_THROWS_WITH(map.build("small", {{"x", "10"}}), Catch::Contains("out of range"));
    CHECK_THROWS_WITH(map.build("fixed", {{"y", "12345"}}), Catch::Contains("fixed_digits"));
    CHECK_THROWS_WITH(map.build("any", {{"k", "z"}}), Catch::Contains("not one of"));
    CHECK_THROWS_WITH(map.build("lang", {{"lang", "abc"}}), Catch::Contains("wrong length"));
    CHECK_THROWS_WITH(map.build("uuid", {{"id", "x"}}), Catch::Contains("not a UUID"));
    CHECK_THROWS_WITH(map.build("float", {{"v", "-1.5"}}), Catch::Contains("out of range"));
    CHECK_THROWS_WITH(map.build("files", {{"p", "/abs"}}), Catch::Contains("starts with '/'"));
    CHECK_THROWS_AS(map.build("user", {{"id", "x"}}), routing_error);
}

TEST_CASE("url_map: a reused match_result is reset between matches", "[unit][url_map]") {
    auto h = reporter();
    url_map map{
        rule("/a/<int:x>/<y>", "a", h, {.methods = {"GET"}}),
        rule("/b/<int:x>", "b", h),
        rule("/d/", "d", h),
        mount("/m", h, "m"),
    };
    match_result out;
    map.match("PUT", "/a/1/z", out);
    CHECK(out.status == 405);
    map.match("GET", "/a/1/z", out);
    CHECK(out.status == 200);
    CHECK(out.allow.empty());
    CHECK(out.args == args_t{{"x", std::int64_t{1}}, {"y", std::string("z")}});
    map.match("GET", "/m/q", out);
    CHECK(out.is_mount);
    CHECK(out.args.empty());
    map.match("GET", "/b/7", out);
    CHECK_FALSE(out.is_mount);
    CHECK(out.mount_prefix.empty());
    CHECK(out.args == args_t{{"x", std::int64_t{7}}});
    map.match("GET", "/d", out);
    CHECK(out.status == 308);
    CHECK(out.args.empty());
    map.match("GET", "/zz", out);
    CHECK(out.status == 404);
    CHECK(out.location.empty());
    CHECK(out.endpoint.empty());
}

TEST_CASE("url_map: a moved map keeps matching", "[unit][url_map]") {
    url_map a{rule("/x", "x", reporter())};
    url_map b = std::move(a);
    CHECK(b.match("GET", "/x").endpoint == "x");
    url_map c{rule("/y", "y", reporter())};
    c = std::move(b);
    CHECK(c.match("GET", "/x").endpoint == "x");
    CHECK(c.match("GET", "/y").status == 404);
}

// ---------------------------------------------------------------- dispatcher

namespace {

std::shared_ptr<const url_map> dispatch_map() {
    auto h = reporter();
    return std::make_shared<const url_map>(url_map{
        rule("/bar/", "bar", h),
        rule("/user/<int:id>", "user", h, {.methods = {"GET"}}),
        rule("/opt", "opt", h, {.methods = {"GET", "OPTIONS"}}),
        rule("/a b/", "spaced", h),
        mount("/legacy", h, "legacy"),
    });
}

}  // namespace

TEST_CASE("dispatcher: calls the handler with endpoint and typed args set", "[unit][url_map]") {
    auto dispatch = corgi::make_dispatcher(dispatch_map());
    auto req = corgi::test::make_request("GET", "/user/42");
    auto res = corgi::test::run(dispatch, req);
    CHECK(res.status == 200);
    CHECK(corgi::test::body_of(res) == "user||/user/42");
    CHECK(req.endpoint == "user");
    CHECK(req.arg<int>("id") == 42);
    // The same request object reused for another match: args are replaced, not appended.
    req.reset();
    req.method = "HEAD";
    req.path = req.path_info = "/user/7";
    corgi::test::run(dispatch, req);
    CHECK(req.args.size() == 1);
    CHECK(req.arg<long>("id") == 7);
}

TEST_CASE("dispatcher: mounts move their prefix to script_name", "[unit][url_map]") {
    auto dispatch = corgi::make_dispatcher(dispatch_map());
    auto req = corgi::test::make_request("POST", "/legacy/x/y");
    req.script_name = "/site";
    auto res = corgi::test::run(dispatch, req);
    CHECK(corgi::test::body_of(res) == "legacy|/site/legacy|/x/y");
    CHECK(req.path == "/legacy/x/y");
    auto bare = corgi::test::make_request("GET", "/legacy");
    CHECK(corgi::test::body_of(corgi::test::run(dispatch, bare)) == "legacy|/legacy|");
}

TEST_CASE("dispatcher: answers 404, 405 with Allow, OPTIONS and 308 itself", "[unit][url_map]") {
    auto dispatch = corgi::make_dispatcher(dispatch_map());
    auto missing = corgi::test::make_request("GET", "/nope");
    CHECK(corgi::test::run(dispatch, missing).status == 404);

    auto post = corgi::test::make_request("POST", "/user/1");
    auto r405 = corgi::test::run(dispatch, post);
    CHECK(r405.status == 405);
    CHECK(r405.headers.get("Allow") == "GET, HEAD, OPTIONS");

    auto options = corgi::test::make_request("OPTIONS", "/user/1");
    auto r204 = corgi::test::run(dispatch, options);
    CHECK(r204.status == 204);
    CHECK(r204.headers.get("Allow") == "GET, HEAD, OPTIONS");
    CHECK(options.endpoint.empty());  // no handler ran

    // A rule that lists OPTIONS gets it.
    auto own = corgi::test::make_request("OPTIONS", "/opt");
    CHECK(corgi::test::body_of(corgi::test::run(dispatch, own)) == "opt||/opt");

    auto slash = corgi::test::make_request("GET", "/bar", "x=1&y=%20");
    slash.script_name = "/app";
    auto r308 = corgi::test::run(dispatch, slash);
    CHECK(r308.status == 308);
    CHECK(r308.headers.get("Location") == "/app/bar/?x=1&y=%20");
    auto spaced = corgi::test::make_request("GET", "/a b");
    CHECK(corgi::test::run(dispatch, spaced).headers.get("Location") == "/a%20b/");
}
