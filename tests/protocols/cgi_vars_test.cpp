// Unit tests of the CGI-variable request builder, with the variable sets nginx's stock
// uwsgi_params, fastcgi_params and scgi_params produce (see /etc/nginx/*_params), and the mount and
// error cases around them.
#include "cgi_vars.hpp"
#include "proxy_wire.hpp"

#include <catch2/catch.hpp>

using corgi::request;
using corgi::protocols::detail::cgi_request_builder;
using corgi::test::var_list;

namespace {

// Builds `req` from `vars`; returns finish()'s verdict (nullptr: usable).
const char* build(request& req, const var_list& vars, std::string_view protocol = "uwsgi") {
    static thread_local cgi_request_builder b;
    b.begin(req, protocol);
    for (const auto& [k, v] : vars) b.add(k, v);
    return b.finish();
}

std::string proxy_var(const request& req, std::string_view name) {
    for (const auto& [k, v] : req.proxy_vars)
        if (k == name) return v;
    return "<absent>";
}

// What nginx sends for `GET /a%20b/c?x=1&y=2` with `include uwsgi_params;`.
var_list nginx_uwsgi_params() {
    return {{"QUERY_STRING", "x=1&y=2"},
            {"REQUEST_METHOD", "GET"},
            {"CONTENT_TYPE", ""},
            {"CONTENT_LENGTH", ""},
            {"REQUEST_URI", "/a%20b/c?x=1&y=2"},
            {"PATH_INFO", "/a b/c"},
            {"DOCUMENT_ROOT", "/usr/share/nginx/html"},
            {"SERVER_PROTOCOL", "HTTP/1.1"},
            {"REQUEST_SCHEME", "http"},
            {"REMOTE_ADDR", "127.0.0.1"},
            {"REMOTE_PORT", "51234"},
            {"SERVER_PORT", "8080"},
            {"SERVER_NAME", "localhost"},
            {"HTTP_HOST", "localhost"},
            {"HTTP_USER_AGENT", "curl/7.88.1"},
            {"HTTP_ACCEPT", "*/*"}};
}

}  // namespace

TEST_CASE("cgi_vars: nginx's stock uwsgi_params give path, query, target and peer", "[cgi_vars]") {
    request req;
    REQUIRE(build(req, nginx_uwsgi_params()) == nullptr);
    CHECK(req.protocol_name == "uwsgi");
    CHECK(req.method == "GET");
    CHECK(req.path == "/a b/c");
    CHECK(req.path_info == "/a b/c");
    CHECK(req.script_name.empty());
    CHECK(req.target == "/a%20b/c?x=1&y=2");
    CHECK(req.query_string == "x=1&y=2");
    CHECK(req.query_param("y") == "2");
    CHECK(req.remote_addr == "127.0.0.1");
    CHECK(req.remote_port == 51234);
    CHECK(req.server_name == "localhost");
    CHECK(req.server_port == 8080);
    CHECK(req.version == 11);
    CHECK(req.scheme == "http");
    CHECK_FALSE(req.content_length.has_value());
    CHECK_FALSE(req.headers.contains("Content-Type"));
    CHECK_FALSE(req.headers.contains("Content-Length"));
    CHECK(req.headers.get("Host") == "localhost");
    CHECK(req.headers.get("User-Agent") == "curl/7.88.1");
    CHECK(proxy_var(req, "DOCUMENT_ROOT") == "/usr/share/nginx/html");
    CHECK(proxy_var(req, "REQUEST_URI") == "<absent>");  // it has a field of its own: target
    CHECK(proxy_var(req, "PATH_INFO") == "<absent>");
}

TEST_CASE("cgi_vars: fastcgi_params' whole-path SCRIPT_NAME is not taken as a mount prefix",
          "[cgi_vars]") {
    request req;
    var_list vars = {{"QUERY_STRING", "q=1"},
                     {"REQUEST_METHOD", "POST"},
                     {"CONTENT_TYPE", "text/plain"},
                     {"CONTENT_LENGTH", "5"},
                     {"SCRIPT_NAME", "/api/v1/items"},
                     {"REQUEST_URI", "/api/v1/items?q=1"},
                     {"DOCUMENT_URI", "/api/v1/items"},
                     {"GATEWAY_INTERFACE", "CGI/1.1"},
                     {"SERVER_SOFTWARE", "nginx/1.22.1"},
                     {"REMOTE_USER", ""},
                     {"REDIRECT_STATUS", "200"},
                     {"HTTP_HOST", "example.org"}};
    REQUIRE(build(req, vars, "fastcgi") == nullptr);
    CHECK(req.path == "/api/v1/items");
    CHECK(req.path_info == "/api/v1/items");
    CHECK(req.script_name.empty());
    CHECK(req.content_length == 5u);
    CHECK(req.headers.get("Content-Length") == "5");
    CHECK(req.headers.get("Content-Type") == "text/plain");
    CHECK(proxy_var(req, "GATEWAY_INTERFACE") == "CGI/1.1");
    CHECK(proxy_var(req, "REDIRECT_STATUS") == "200");
}

TEST_CASE("cgi_vars: fastcgi_params' SCRIPT_NAME equal to the normalised path is ignored too",
          "[cgi_vars]") {
    // nginx normalises $uri (SCRIPT_NAME) but REQUEST_URI is raw: they may differ while naming one
    // path.
    request req;
    REQUIRE(build(req, {{"REQUEST_METHOD", "GET"},
                        {"SCRIPT_NAME", "/a/b"},
                        {"DOCUMENT_URI", "/a/b"},
                        {"REQUEST_URI", "/a//b"}}) == nullptr);
    CHECK(req.script_name.empty());
    CHECK(req.path == "/a//b");
}

TEST_CASE("cgi_vars: scgi_params (no PATH_INFO, no SCRIPT_NAME) take the path from REQUEST_URI",
          "[cgi_vars]") {
    request req;
    var_list vars = {{"CONTENT_LENGTH", "0"},
                     {"REQUEST_METHOD", "DELETE"},
                     {"REQUEST_URI", "/x/%7Euser/%2F?a=%20"},
                     {"QUERY_STRING", "a=%20"},
                     {"CONTENT_TYPE", ""},
                     {"DOCUMENT_URI", "/x/~user//"},
                     {"SCGI", "1"},
                     {"SERVER_PROTOCOL", "HTTP/1.0"},
                     {"HTTPS", "on"},
                     {"REQUEST_SCHEME", "https"}};
    REQUIRE(build(req, vars, "scgi") == nullptr);
    CHECK(req.method == "DELETE");
    CHECK(req.path == "/x/~user//");  // decoded, %2F included: the raw form stays in target
    CHECK(req.target == "/x/%7Euser/%2F?a=%20");
    CHECK(req.query_string == "a=%20");
    CHECK(req.query_param("a") == " ");
    CHECK(req.content_length == 0u);
    CHECK(req.version == 10);
    CHECK(req.scheme == "https");
    CHECK(proxy_var(req, "HTTPS") == "on");
    CHECK(proxy_var(req, "SCGI") == "1");
}

TEST_CASE("cgi_vars: PATH_INFO below SCRIPT_NAME is the path, SCRIPT_NAME the prefix",
          "[cgi_vars]") {
    request req;
    REQUIRE(build(req, {{"REQUEST_METHOD", "GET"},
                        {"SCRIPT_NAME", "/app"},
                        {"PATH_INFO", "/users/7"},
                        {"REQUEST_URI", "/app/users/7"}}) == nullptr);
    CHECK(req.script_name == "/app");
    CHECK(req.path == "/users/7");
    CHECK(req.path_info == "/users/7");
}

TEST_CASE("cgi_vars: a SCRIPT_NAME added to uwsgi_params is stripped from the whole-path PATH_INFO",
          "[cgi_vars]") {
    // `uwsgi_param SCRIPT_NAME /app;` after `include uwsgi_params;`: PATH_INFO is still
    // $document_uri.
    request req;
    REQUIRE(build(req, {{"REQUEST_METHOD", "GET"},
                        {"PATH_INFO", "/app/users/7"},
                        {"REQUEST_URI", "/app/users/7?x"},
                        {"SCRIPT_NAME", "/app/"}}) == nullptr);
    CHECK(req.script_name == "/app");
    CHECK(req.path == "/users/7");
    CHECK(req.query_string == "x");

    SECTION("unless REQUEST_URI shows SCRIPT_NAME + PATH_INFO was already the split") {
        REQUIRE(build(req, {{"REQUEST_METHOD", "GET"},
                            {"SCRIPT_NAME", "/app"},
                            {"PATH_INFO", "/app/x"},
                            {"REQUEST_URI", "/app/app/x"}}) == nullptr);
        CHECK(req.script_name == "/app");
        CHECK(req.path == "/app/x");
    }
    SECTION("and a prefix that ends inside a segment is not a prefix") {
        REQUIRE(build(req, {{"REQUEST_METHOD", "GET"},
                            {"SCRIPT_NAME", "/ap"},
                            {"PATH_INFO", "/app/x"},
                            {"REQUEST_URI", "/app/x"}}) == nullptr);
        CHECK(req.path == "/app/x");
    }
}

TEST_CASE("cgi_vars: without PATH_INFO a SCRIPT_NAME that is a proper prefix mounts the app",
          "[cgi_vars]") {
    request req;
    REQUIRE(build(req, {{"REQUEST_METHOD", "GET"},
                        {"SCRIPT_NAME", "/app"},
                        {"REQUEST_URI", "/app/x/y?z=1"}}) == nullptr);
    CHECK(req.script_name == "/app");
    CHECK(req.path == "/x/y");
    CHECK(req.query_string == "z=1");

    REQUIRE(build(req,
                  {{"REQUEST_METHOD", "GET"}, {"SCRIPT_NAME", "/ap"}, {"REQUEST_URI", "/app/x"}}) ==
            nullptr);
    CHECK(req.script_name.empty());
    CHECK(req.path == "/app/x");
}

TEST_CASE("cgi_vars: without REQUEST_URI the target is rebuilt, percent-encoded", "[cgi_vars]") {
    request req;
    REQUIRE(build(req, {{"REQUEST_METHOD", "GET"},
                        {"SCRIPT_NAME", "/app"},
                        {"PATH_INFO", "/a b"},
                        {"QUERY_STRING", "x=1"}}) == nullptr);
    CHECK(req.target == "/app/a%20b?x=1");
    CHECK(req.path == "/a b");
}

TEST_CASE(
    "cgi_vars: HTTP_ variables become headers, duplicates kept, body framing vars authoritative",
    "[cgi_vars]") {
    request req;
    REQUIRE(build(req, {{"REQUEST_METHOD", "POST"},
                        {"REQUEST_URI", "/"},
                        {"CONTENT_LENGTH", "11"},
                        {"CONTENT_TYPE", "application/json"},
                        {"HTTP_X_FORWARDED_FOR", "10.0.0.1"},
                        {"HTTP_ACCEPT_ENCODING", "gzip"},
                        {"HTTP_X_MULTI", "a"},
                        {"HTTP_X_MULTI", "b"},
                        {"HTTP_CONTENT_LENGTH", "11"},
                        {"HTTP_CONTENT_TYPE", "application/json"},
                        {"HTTP_TRANSFER_ENCODING", "chunked"}}) == nullptr);
    CHECK(req.headers.get("X-Forwarded-For") == "10.0.0.1");
    CHECK(req.headers.get("accept-encoding") == "gzip");
    CHECK(req.headers.get_joined("X-Multi") == "a, b");
    CHECK(req.content_length == 11u);
    CHECK_FALSE(
        req.headers.contains("Transfer-Encoding"));  // the proxy de-chunked the body it forwards
    std::size_t lengths = 0, types = 0;
    for (const auto& [k, v] : req.headers) {
        lengths += corgi::iequals(k, "Content-Length");
        types += corgi::iequals(k, "Content-Type");
    }
    CHECK(lengths == 1);
    CHECK(types == 1);
    CHECK_FALSE(req.chunked);
}

TEST_CASE("cgi_vars: HTTP_CONTENT_LENGTH stands in when the proxy sends no CONTENT_LENGTH",
          "[cgi_vars]") {
    request req;
    REQUIRE(build(req, {{"REQUEST_METHOD", "PUT"},
                        {"REQUEST_URI", "/"},
                        {"HTTP_CONTENT_LENGTH", "3"},
                        {"HTTP_CONTENT_TYPE", "text/plain"}}) == nullptr);
    CHECK(req.content_length == 3u);
    CHECK(req.headers.get("Content-Type") == "text/plain");
}

TEST_CASE("cgi_vars: malformed variables make the request unusable", "[cgi_vars]") {
    request req;
    auto with = [](var_list extra) {
        var_list v = {{"REQUEST_METHOD", "GET"}, {"REQUEST_URI", "/"}};
        for (auto& e : extra) v.push_back(std::move(e));
        return v;
    };
    CHECK(build(req, with({{"CONTENT_LENGTH", "12a"}})) != nullptr);
    CHECK(build(req, with({{"CONTENT_LENGTH", "-1"}})) != nullptr);
    CHECK(build(req, with({{"CONTENT_LENGTH", "99999999999999999999"}})) != nullptr);
    CHECK(build(req, with({{"HTTP_X_BAD:NAME", "v"}})) != nullptr);
    CHECK(build(req, with({{"HTTP_X_EVIL", std::string("a\r\nSet-Cookie: x", 16)}})) != nullptr);
    // Values that end up verbatim in the access log line.
    CHECK(build(req, {{"REQUEST_METHOD", "GET"}, {"REQUEST_URI", "/a\n1.2.3.4 - - forged"}}) !=
          nullptr);
    CHECK(build(req, with({{"REQUEST_URI", std::string("/a\0b", 4)}})) != nullptr);
    CHECK(build(req, with({{"REMOTE_ADDR", "1.2.3.4\r\n"}})) != nullptr);
    CHECK(build(req, {{"REQUEST_URI", "/"}}) != nullptr);  // no method
    CHECK(build(req, {{"REQUEST_METHOD", "GE T"}, {"REQUEST_URI", "/"}}) !=
          nullptr);                                             // not a token
    CHECK(build(req, {{"REQUEST_METHOD", "GET"}}) != nullptr);  // no path at all
    CHECK(build(req, {{"REQUEST_METHOD", "GET"}, {"REQUEST_URI", "relative"}}) != nullptr);
    CHECK(build(req, with({})) == nullptr);
}

TEST_CASE("cgi_vars: query from REQUEST_URI when QUERY_STRING is absent; absolute-form targets",
          "[cgi_vars]") {
    request req;
    REQUIRE(build(req, {{"REQUEST_METHOD", "GET"}, {"REQUEST_URI", "http://h.example/p/q?k=v"}}) ==
            nullptr);
    CHECK(req.path == "/p/q");
    CHECK(req.query_string == "k=v");
}

TEST_CASE("cgi_vars: a builder reused for the next request forgets the previous one",
          "[cgi_vars]") {
    cgi_request_builder b;
    request req;
    b.begin(req, "fastcgi");
    b.add("REQUEST_METHOD", "POST");
    b.add("REQUEST_URI", "/one?a=1");
    b.add("SCRIPT_NAME", "/mnt");
    b.add("CONTENT_LENGTH", "4");
    b.add("HTTP_X_ONE", "1");
    b.add("CUSTOM", "c");
    b.add("HTTPS", "on");
    REQUIRE(b.finish() == nullptr);
    CHECK(req.scheme == "https");

    b.begin(req, "fastcgi");
    b.add("REQUEST_METHOD", "GET");
    b.add("REQUEST_URI", "/two");
    REQUIRE(b.finish() == nullptr);
    CHECK(req.path == "/two");
    CHECK(req.script_name.empty());
    CHECK(req.query_string.empty());
    CHECK_FALSE(req.content_length);
    CHECK(req.headers.empty());
    CHECK(req.proxy_vars.empty());
    CHECK(req.scheme == "http");
}

TEST_CASE("cgi_vars: parse_decimal accepts plain digits only", "[cgi_vars]") {
    using corgi::protocols::detail::parse_decimal;
    CHECK(parse_decimal("0") == 0u);
    CHECK(parse_decimal("18446744073709551") == 18446744073709551u);
    CHECK_FALSE(parse_decimal(""));
    CHECK_FALSE(parse_decimal("+1"));
    CHECK_FALSE(parse_decimal(" 1"));
    CHECK_FALSE(parse_decimal("12345678901234567890"));
}
