// corgi's HTTP/1.x request parser: bytes in, a corgi::request (and body pieces) or a refusal with
// its status out; no socket. Beast's basic_parser does the grammar; on top of it go the limits
// (Gunicorn's request line, field count and field size) and the refusals request smuggling needs.
#pragma once

#include <corgi/core/request.hpp>
#include <corgi/core/server.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace corgi::protocols::detail {

class http_parser final : public boost::beast::http::basic_parser<true> {
  public:
    using error_code = boost::beast::error_code;

    // Parses into `req` (which should be reset) under `limits`; eager: body bytes are parsed as
    // soon as they are offered.
    http_parser(request& req, const server_limits& limits);

    // Parses what it can of `bytes` and returns how many were used (the caller drops them).
    // ec: need_more when the header is incomplete or the body wants more; any other error ends
    // the request, and status() tells how to answer it. Hides basic_parser::put, which must not
    // be called directly (the field checks need to know where the input lies).
    std::size_t put(boost::asio::const_buffer bytes, error_code& ec);

    // The answer to a refused request (after put() failed): 400, 413, 414, 431 or 501.
    int status(const error_code& ec) const noexcept;
    // Why, for the error response and the log.
    std::string reason(const error_code& ec) const;

    bool expects_continue() const noexcept { return expect_continue_; }
    // Body bytes parsed since the caller last cleared it.
    std::string& body_piece() noexcept { return body_; }

  private:
    void on_request_impl(boost::beast::http::verb, boost::beast::string_view method,
                         boost::beast::string_view target, int version, error_code& ec) override;
    void on_response_impl(int, boost::beast::string_view, int, error_code&) override {}
    void on_field_impl(boost::beast::http::field f, boost::beast::string_view name,
                       boost::beast::string_view value, error_code& ec) override;
    void on_header_impl(error_code& ec) override;
    void on_body_init_impl(boost::optional<std::uint64_t> const& length, error_code&) override;
    std::size_t on_body_impl(boost::beast::string_view body, error_code&) override;
    void on_chunk_header_impl(std::uint64_t, boost::beast::string_view, error_code&) override {}
    std::size_t on_chunk_body_impl(std::uint64_t, boost::beast::string_view body,
                                   error_code&) override;
    void on_finish_impl(error_code&) override {}

    void refuse(int status, const char* why, error_code& ec) noexcept;

    request& req_;
    const server_limits& limits_;
    std::string body_;
    // The bytes given to the current put(): a field value outside them was rebuilt by Beast
    // from folded lines.
    const char* in_begin_ = nullptr;
    const char* in_end_ = nullptr;
    const char* why_ = nullptr;
    int status_ = 0;
    std::size_t fields_ = 0;
    std::size_t header_used_ = 0;  // header bytes consumed by earlier put() calls
    unsigned seen_ = 0;            // singleton fields met so far (bits)
    bool expect_continue_ = false;
    bool line_checked_ = false;  // the request line's end was found within its limit
};

}  // namespace corgi::protocols::detail
