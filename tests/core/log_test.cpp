// The error log's level and formats: lines below the level are dropped, the JSON format writes one
// parseable object per line whatever the message holds (quotes, newlines, control bytes, invalid
// UTF-8), a Python traceback and a request id get fields of their own, and bad names are refused.
// stderr is redirected to a temporary file for each test.
#include <corgi/core/log.hpp>
#include <corgi/core/request.hpp>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <regex>
#include <stdexcept>
#include <string>
#include <string_view>

#include <sys/types.h>
#include <unistd.h>

// corgi's log namespace, not ::log from <cmath> (a name before :: never finds a function).
using namespace corgi;
using nlohmann::json;

namespace {

// Points STDERR_FILENO at a temporary file until destroyed; resets the level and format to their
// defaults on both ends, so tests run in any order.
class captured_stderr {
  public:
    captured_stderr() : file_(std::tmpfile()) {
        REQUIRE(file_ != nullptr);
        std::fflush(stderr);
        saved_ = ::dup(STDERR_FILENO);
        REQUIRE(saved_ >= 0);
        REQUIRE(::dup2(::fileno(file_), STDERR_FILENO) == STDERR_FILENO);
        reset();
    }
    ~captured_stderr() {
        reset();
        ::dup2(saved_, STDERR_FILENO);
        ::close(saved_);
        std::fclose(file_);
    }
    captured_stderr(const captured_stderr&) = delete;
    captured_stderr& operator=(const captured_stderr&) = delete;

    // Everything written since the last take(), which empties the capture.
    std::string take() {
        const int fd = ::fileno(file_);
        std::string out;
        char buf[4096];
        ssize_t n;
        ::lseek(fd, 0, SEEK_SET);
        while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
        REQUIRE(::ftruncate(fd, 0) == 0);
        ::lseek(fd, 0, SEEK_SET);
        return out;
    }

  private:
    static void reset() {
        log::set_level("info");
        log::set_error_format("text");
    }
    std::FILE* file_;
    int saved_ = -1;
};

// The one JSON object of `out`, which must be exactly one line.
json one_json_line(const std::string& out) {
    REQUIRE(!out.empty());
    REQUIRE(out.back() == '\n');
    REQUIRE(out.find('\n') == out.size() - 1);
    REQUIRE(std::none_of(out.begin(), out.end() - 1,
                         [](char c) { return static_cast<unsigned char>(c) < 0x20; }));
    return json::parse(out);
}

std::string exception_text(void (*f)(std::string_view), std::string_view value) {
    try {
        f(value);
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "(did not throw)";
}

}  // namespace

TEST_CASE("log: lines below the level are dropped", "[log]") {
    captured_stderr err;

    SECTION("at the default (info), debug is dropped and info kept") {
        log::debug("quiet");
        CHECK(err.take().empty());
        log::info("hello");
        CHECK(err.take() == "[corgi] info: hello\n");
        CHECK_FALSE(log::enabled(log::level::debug));
        CHECK(log::enabled(log::level::info));
    }
    SECTION("at critical, error is dropped and critical kept") {
        log::set_level("critical");
        log::error("not this");
        log::warning("nor this");
        log::error(log::for_request(std::string_view("4f09")), "nor this", "Traceback ...");
        CHECK(err.take().empty());
        log::critical("this");
        CHECK(err.take() == "[corgi] critical: this\n");
        CHECK_FALSE(log::enabled(log::level::error));
    }
    SECTION("at debug, everything is kept") {
        log::set_level("debug");
        log::debug("details");
        CHECK(err.take() == "[corgi] debug: details\n");
    }
    SECTION("names are taken in any case, as Gunicorn lowercases them") {
        log::set_level("WARNING");
        log::info("dropped");
        log::warning("kept");
        CHECK(err.take() == "[corgi] warning: kept\n");
    }
}

TEST_CASE("log: a bad level or format throws naming it and the valid ones", "[log]") {
    captured_stderr err;

    const std::string level_error = exception_text(log::set_level, "verbose");
    CHECK_THAT(level_error, Catch::Contains("'verbose'") && Catch::Contains("debug") &&
                                Catch::Contains("critical"));
    CHECK(exception_text(log::validate_level, "warn") != "(did not throw)");
    CHECK(exception_text(log::set_level, "") != "(did not throw)");
    const std::string format_error = exception_text(log::set_error_format, "xml");
    CHECK_THAT(format_error,
               Catch::Contains("'xml'") && Catch::Contains("text") && Catch::Contains("json"));
    CHECK_THAT(exception_text(log::validate_error_format, "JSONL"), Catch::Contains("'JSONL'"));

    // Neither a refused name nor a validation changes what is installed.
    log::validate_level("critical");
    log::validate_error_format("json");
    CHECK(log::enabled(log::level::info));
    CHECK_FALSE(log::enabled(log::level::debug));
    log::info("still text");
    CHECK(err.take() == "[corgi] info: still text\n");
}

TEST_CASE("log: json lines carry time, level, pid and message", "[log]") {
    captured_stderr err;
    log::set_error_format("json");
    log::set_level("debug");

    log::warning("disk almost full");
    const json line = one_json_line(err.take());
    CHECK(line.size() == 4);
    CHECK(line.at("level") == "warning");
    CHECK(line.at("message") == "disk almost full");
    CHECK(line.at("pid") == static_cast<int>(::getpid()));
    const std::string time = line.at("time");
    CHECK(std::regex_match(time, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));

    log::debug("d");
    CHECK(one_json_line(err.take()).at("level") == "debug");
    log::critical("c");
    CHECK(one_json_line(err.take()).at("level") == "critical");
}

TEST_CASE("log: a hostile message stays one json line and round-trips", "[log]") {
    captured_stderr err;
    log::set_error_format("json");

    SECTION("quotes, backslashes, newlines and control bytes come back as they were") {
        const std::string message =
            "say \"hi\" \\ back\nsecond line\r\n\t\x01\x1f\x7f"
            "\"}\n{\"level\":\"critical\",\"message\":\"forged\"} caf\xc3\xa9 \xe2\x82\xac "
            "\xf0\x9f\x90\x95";
        log::error(message);
        const json line = one_json_line(err.take());
        CHECK(line.at("message") == message);
        CHECK(line.at("level") == "error");
    }
    SECTION("invalid UTF-8 becomes valid JSON, each bad byte the code point of its value") {
        // 0xff (never UTF-8), 0xff 0x80 0x80 (not a 3-byte sequence, whatever its tail), an
        // overlong '/', a lone continuation byte, a truncated euro sign, an encoded surrogate.
        const std::string message =
            "a\xff"
            "b\xff\x80\x80"
            "c\xc0\xaf"
            "d\x80"
            "e\xe2\x82"
            "f\xed\xa0\x80"
            "g";
        log::error(message);
        const std::string out = err.take();
        const json line = one_json_line(out);  // json::parse refuses ill-formed UTF-8
        CHECK(line.at("message") ==
              "a\xc3\xbf"
              "b\xc3\xbf\xc2\x80\xc2\x80"
              "c\xc3\x80\xc2\xaf"
              "d\xc2\x80"
              "e\xc3\xa2\xc2\x82"
              "f\xc3\xad\xc2\xa0\xc2\x80"
              "g");
        CHECK(out.find("a\\u00ffb\\u00ff\\u0080\\u0080c") != std::string::npos);
    }
}

TEST_CASE("log: a traceback is one json field, and follows the message in text", "[log]") {
    captured_stderr err;
    const std::string traceback =
        "Traceback (most recent call last):\n"
        "  File \"/srv/app.py\", line 3, in application\n"
        "    raise ValueError(\"bad \\\"input\\\"\")\n"
        "ValueError: bad \"input\"";

    log::error("wsgi: app:application (request 4f09): the application raised", traceback);
    CHECK(err.take() ==
          "[corgi] error: wsgi: app:application (request 4f09): the application "
          "raised:\n" +
              traceback + "\n");
    log::error("wsgi: nothing pending", "");
    CHECK(err.take() == "[corgi] error: wsgi: nothing pending\n");

    log::set_error_format("json");
    log::error("wsgi: app:application: the application raised", traceback + "\n");
    json line = one_json_line(err.take());
    CHECK(line.at("message") == "wsgi: app:application: the application raised");
    CHECK(line.at("traceback") == traceback);
    log::warning("wsgi: no traceback", "");
    line = one_json_line(err.take());
    CHECK_FALSE(line.contains("traceback"));
    CHECK(line.at("level") == "warning");
}

TEST_CASE("log: a line about a request has its id as a json field", "[log]") {
    captured_stderr err;
    corgi::request req;
    req.method = "GET";
    req.target = "/fail";
    req.set_id("4f09c0ffee");

    log::error(req, "unhandled exception in handler (" + log::request_context(req) + "): boom");
    CHECK(err.take() ==
          "[corgi] error: unhandled exception in handler (GET /fail, request 4f09c0ffee): boom\n");

    log::set_error_format("json");
    log::error(req, "unhandled exception in handler: boom");
    json line = one_json_line(err.take());
    CHECK(line.at("request_id") == "4f09c0ffee");
    CHECK(line.at("message") == "unhandled exception in handler: boom");

    log::warning(log::for_request(std::string_view("\"forged\n")), "from an id alone", "Trace");
    line = one_json_line(err.take());
    CHECK(line.at("request_id") == "\"forged\n");
    CHECK(line.at("traceback") == "Trace");

    log::info(log::for_request(std::string_view()), "no id, no field");
    CHECK_FALSE(one_json_line(err.take()).contains("request_id"));
}
