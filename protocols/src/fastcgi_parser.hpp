// Internal to protocols: FastCGI record framing and the per-connection request state machine, over
// bytes only (no socket), so unit tests and the fuzzer drive exactly what the session runs.
// Responder role, one request at a time (nginx does not multiplex); records of any other request id
// are skipped or refused, never mixed in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace corgi::protocols::detail::fastcgi {

inline constexpr std::uint8_t version_1 = 1;
inline constexpr std::size_t header_size = 8;
inline constexpr std::size_t max_content = 65535;

enum record_type : std::uint8_t {
    begin_request = 1,
    abort_request = 2,
    end_request = 3,
    params = 4,
    stdin_record = 5,
    stdout_record = 6,
    stderr_record = 7,
    data = 8,
    get_values = 9,
    get_values_result = 10,
    unknown_type = 11,
};
enum role : std::uint16_t { responder = 1, authorizer = 2, filter = 3 };
inline constexpr std::uint8_t keep_conn_flag = 1;
enum protocol_status : std::uint8_t {
    request_complete = 0,
    cant_mpx_conn = 1,
    overloaded = 2,
    unknown_role = 3
};

// The 8-byte record header.
void write_header(char* out, std::uint8_t type, std::uint16_t request_id,
                  std::uint16_t content_length, std::uint8_t padding_length = 0) noexcept;
// A whole record (content up to 65535 bytes, padded to a multiple of 8 as the specification
// recommends).
void append_record(std::string& out, std::uint8_t type, std::uint16_t request_id,
                   std::string_view content);
void append_end_request(std::string& out, std::uint16_t request_id, std::uint32_t app_status,
                        std::uint8_t status);
// A name-value pair in FastCGI's encoding (1-byte lengths below 128, 4-byte big-endian lengths
// otherwise).
void append_pair(std::string& out, std::string_view name, std::string_view value);

// Calls on_pair(name, value) for each pair of a PARAMS or GET_VALUES stream; returns nullptr or
// what is malformed (a length past the end, an empty name).
template <class F>
const char* for_each_pair(std::string_view block, F&& on_pair) {
    std::size_t i = 0;
    auto read_length = [&](std::size_t& out) -> bool {
        if (i >= block.size()) return false;
        auto b0 = static_cast<unsigned char>(block[i]);
        if (b0 < 0x80) {
            out = b0;
            i += 1;
            return true;
        }
        if (block.size() - i < 4) return false;
        out = (std::size_t(b0 & 0x7f) << 24) |
              (std::size_t(static_cast<unsigned char>(block[i + 1])) << 16) |
              (std::size_t(static_cast<unsigned char>(block[i + 2])) << 8) |
              std::size_t(static_cast<unsigned char>(block[i + 3]));
        i += 4;
        return true;
    };
    while (i < block.size()) {
        std::size_t nlen = 0, vlen = 0;
        if (!read_length(nlen) || !read_length(vlen)) return "truncated name-value pair length";
        if (nlen == 0) return "empty parameter name";
        if (block.size() - i < nlen || block.size() - i - nlen < vlen)
            return "name-value pair past the end";
        on_pair(block.substr(i, nlen), block.substr(i + nlen, vlen));
        i += nlen + vlen;
    }
    return nullptr;
}

// What FCGI_GET_VALUES answers.
struct server_values {
    std::size_t max_conns = 1;
    std::size_t max_reqs = 1;
};

// Reads the records of one connection and tells the session what happened, one event at a time.
// Management records (GET_VALUES, unknown types) and refusals (another role, a second request id)
// are answered by appending to replies(), which the session writes out before it waits for more
// input.
class reader {
  public:
    enum class event_kind {
        need_more,        // read more bytes into writable()
        begin_request,    // a responder request started: request_id, keep_conn
        params_complete,  // data: the whole PARAMS stream of the request (valid until the next
                          // begin_request)
        stdin_data,       // data: a piece of the body (valid until the next call of
                          // next()/writable()/feed())
        stdin_end,        // the body is complete
        abort_request,    // the web server gave up on the request
        refused,  // a request was refused (unknown role) with END_REQUEST in replies(): keep_conn
                  // says whether the connection goes on
        error,    // malformed or out-of-order input: close the connection; error says why
    };
    struct event {
        event_kind kind = event_kind::need_more;
        std::string_view data;
        std::uint16_t request_id = 0;
        bool keep_conn = false;
        const char* error = nullptr;
    };

    explicit reader(std::size_t max_params_bytes = 64 * 1024, server_values values = {},
                    std::size_t buffer_bytes = 16 * 1024);

    // Input from a socket: read into writable(), then commit() what was read.
    std::span<char> writable();
    void commit(std::size_t n) noexcept { end_ += n; }
    // Input from memory (tests, fuzzer).
    void feed(std::string_view bytes);

    event next();

    std::string& replies() noexcept { return replies_; }
    // The session is done with the current request (response and END_REQUEST sent): records still
    // arriving for it (the unread rest of its body) are skipped.
    void finish_request() noexcept;
    bool in_request() const noexcept { return phase_ != phase::idle; }
    bool body_complete() const noexcept { return phase_ == phase::done; }
    std::uint16_t request_id() const noexcept { return request_id_; }
    bool keep_conn() const noexcept { return keep_conn_; }
    // Bytes received and not yet parsed.
    std::size_t buffered() const noexcept { return end_ - begin_; }

  private:
    enum class phase { idle, params, body, done };
    event fail(const char* why) noexcept;
    event on_header();
    event on_content_complete();

    std::size_t max_params_;
    server_values values_;
    std::vector<char> in_;
    std::size_t begin_ = 0, end_ = 0;

    // The record being read.
    enum class state { header, content, padding } state_ = state::header;
    std::uint8_t type_ = 0;
    std::uint16_t id_ = 0;
    std::size_t record_length_ = 0, content_left_ = 0, padding_left_ = 0;
    enum class sink { skip, small, params, body } sink_ = sink::skip;
    std::string small_;  // content of BEGIN_REQUEST, ABORT_REQUEST, GET_VALUES and unknown
                         // management records

    phase phase_ = phase::idle;
    std::uint16_t request_id_ = 0;
    bool keep_conn_ = false;
    std::string params_;
    std::string replies_;
    bool failed_ = false;
    const char* failure_ = nullptr;
};

}  // namespace corgi::protocols::detail::fastcgi
