// FastCGI record encoding and the record reader: pure, no I/O (see fastcgi_parser.hpp).
#include "fastcgi_parser.hpp"

#include <algorithm>
#include <cstring>

namespace corgi::protocols::detail::fastcgi {

void write_header(char* out, std::uint8_t type, std::uint16_t request_id,
                  std::uint16_t content_length, std::uint8_t padding_length) noexcept {
    out[0] = char(version_1);
    out[1] = char(type);
    out[2] = char(request_id >> 8);
    out[3] = char(request_id & 0xff);
    out[4] = char(content_length >> 8);
    out[5] = char(content_length & 0xff);
    out[6] = char(padding_length);
    out[7] = 0;
}

void append_record(std::string& out, std::uint8_t type, std::uint16_t request_id,
                   std::string_view content) {
    auto length = static_cast<std::uint16_t>(std::min(content.size(), max_content));
    auto padding = static_cast<std::uint8_t>((8 - length % 8) % 8);
    char h[header_size];
    write_header(h, type, request_id, length, padding);
    out.append(h, header_size);
    out.append(content.substr(0, length));
    out.append(padding, '\0');
}

void append_end_request(std::string& out, std::uint16_t request_id, std::uint32_t app_status,
                        std::uint8_t status) {
    char body[8] = {char(app_status >> 24),
                    char((app_status >> 16) & 0xff),
                    char((app_status >> 8) & 0xff),
                    char(app_status & 0xff),
                    char(status),
                    0,
                    0,
                    0};
    append_record(out, end_request, request_id, std::string_view(body, sizeof body));
}

void append_pair(std::string& out, std::string_view name, std::string_view value) {
    auto put_length = [&](std::size_t n) {
        if (n < 0x80) {
            out.push_back(char(n));
        } else {
            out.push_back(char(((n >> 24) & 0x7f) | 0x80));
            out.push_back(char((n >> 16) & 0xff));
            out.push_back(char((n >> 8) & 0xff));
            out.push_back(char(n & 0xff));
        }
    };
    put_length(name.size());
    put_length(value.size());
    out.append(name);
    out.append(value);
}

reader::reader(std::size_t max_params_bytes, server_values values, std::size_t buffer_bytes)
    : max_params_(max_params_bytes),
      values_(values),
      in_(std::max<std::size_t>(buffer_bytes, 64)) {}

std::span<char> reader::writable() {
    if (begin_ == end_) {
        begin_ = end_ = 0;
    } else if (begin_ > 0 && in_.size() - end_ < in_.size() / 2) {
        std::memmove(in_.data(), in_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
    }
    return {in_.data() + end_, in_.size() - end_};
}

void reader::feed(std::string_view bytes) {
    while (!bytes.empty()) {
        auto space = writable();
        if (space.empty()) {
            in_.resize(in_.size() * 2);
            continue;
        }
        std::size_t n = std::min(space.size(), bytes.size());
        std::memcpy(space.data(), bytes.data(), n);
        commit(n);
        bytes.remove_prefix(n);
    }
}

void reader::finish_request() noexcept {
    phase_ = phase::idle;
    params_.clear();
}

reader::event reader::fail(const char* why) noexcept {
    failed_ = true;
    failure_ = why;
    event e;
    e.kind = event_kind::error;
    e.error = why;
    return e;
}

// Decides where the record's content goes; refuses what can never be valid.
reader::event reader::on_header() {
    const bool ours = phase_ != phase::idle && id_ == request_id_;
    sink_ = sink::skip;
    switch (type_) {
        case begin_request:
            if (content_left_ != 8) return fail("BEGIN_REQUEST record of the wrong size");
            sink_ = sink::small;
            break;
        case abort_request:
            break;
        case params:
            if (ours) {
                if (phase_ != phase::params) return fail("PARAMS record after the end of PARAMS");
                sink_ = sink::params;
            }
            break;
        case stdin_record:
            if (ours) {
                if (phase_ == phase::params) return fail("STDIN record before the end of PARAMS");
                if (phase_ == phase::done) return fail("STDIN record after the end of STDIN");
                sink_ = sink::body;
            }
            break;
        case get_values:
            if (id_ == 0) sink_ = sink::small;
            break;
        default:
            break;  // DATA (filter role), records a web server never sends, unknown types: content
                    // skipped
    }
    small_.clear();
    return {};
}

// The content of a record is complete (its padding may still follow).
reader::event reader::on_content_complete() {
    event e;
    switch (type_) {
        case begin_request: {
            if (id_ == 0) return fail("BEGIN_REQUEST with request id 0");
            auto role = static_cast<std::uint16_t>((static_cast<unsigned char>(small_[0]) << 8) |
                                                   static_cast<unsigned char>(small_[1]));
            bool keep = (static_cast<unsigned char>(small_[2]) & keep_conn_flag) != 0;
            if (phase_ != phase::idle) {
                if (id_ == request_id_) return fail("BEGIN_REQUEST for the request in progress");
                append_end_request(replies_, id_, 0,
                                   cant_mpx_conn);  // records of that id are then skipped
                return e;
            }
            if (role != responder) {
                append_end_request(replies_, id_, 0, unknown_role);
                e.kind = event_kind::refused;
                e.request_id = id_;
                e.keep_conn = keep;
                return e;
            }
            phase_ = phase::params;
            request_id_ = id_;
            keep_conn_ = keep;
            params_.clear();
            e.kind = event_kind::begin_request;
            e.request_id = id_;
            e.keep_conn = keep;
            return e;
        }
        case abort_request:
            if (phase_ != phase::idle && id_ == request_id_) {
                e.kind = event_kind::abort_request;
                e.request_id = id_;
            }
            return e;
        case params:
            if (sink_ == sink::params && record_length_ == 0) {
                phase_ = phase::body;
                e.kind = event_kind::params_complete;
                e.request_id = id_;
                e.data = params_;
            }
            return e;
        case stdin_record:
            if (sink_ == sink::body && record_length_ == 0) {
                phase_ = phase::done;
                e.kind = event_kind::stdin_end;
                e.request_id = id_;
            }
            return e;
        case get_values:
            if (id_ == 0) {
                std::string content;
                const char* bad =
                    for_each_pair(small_, [&](std::string_view name, std::string_view) {
                        if (name == "FCGI_MAX_CONNS")
                            append_pair(content, name, std::to_string(values_.max_conns));
                        else if (name == "FCGI_MAX_REQS")
                            append_pair(content, name, std::to_string(values_.max_reqs));
                        else if (name == "FCGI_MPXS_CONNS")
                            append_pair(content, name, "0");
                    });
                if (bad) return fail(bad);
                append_record(replies_, get_values_result, 0, content);
            }
            return e;
        default:
            // A management record of a type we do not know (the web servers' extension point) is
            // answered with UNKNOWN_TYPE; the types a web server sends are all handled above.
            if (id_ == 0 && type_ > unknown_type) {
                char body[8] = {char(type_), 0, 0, 0, 0, 0, 0, 0};
                append_record(replies_, unknown_type, 0, std::string_view(body, sizeof body));
            }
            return e;
    }
}

reader::event reader::next() {
    if (failed_) return fail(failure_);
    for (;;) {
        std::size_t avail = end_ - begin_;
        switch (state_) {
            case state::header: {
                if (avail < header_size) return {};
                const auto* h = reinterpret_cast<const unsigned char*>(in_.data() + begin_);
                begin_ += header_size;
                if (h[0] != version_1) return fail("unsupported FastCGI version");
                type_ = h[1];
                id_ = static_cast<std::uint16_t>((h[2] << 8) | h[3]);
                record_length_ = static_cast<std::size_t>((h[4] << 8) | h[5]);
                content_left_ = record_length_;
                padding_left_ = h[6];
                event e = on_header();
                if (e.kind != event_kind::need_more) return e;
                state_ = state::content;
                break;
            }
            case state::content: {
                if (content_left_ > 0) {
                    if (avail == 0) return {};
                    std::size_t n = std::min(avail, content_left_);
                    std::string_view piece(in_.data() + begin_, n);
                    begin_ += n;
                    content_left_ -= n;
                    switch (sink_) {
                        case sink::skip:
                            break;
                        case sink::small:
                            small_.append(piece);
                            break;
                        case sink::params:
                            if (params_.size() + n > max_params_)
                                return fail("FastCGI PARAMS larger than the header limit");
                            params_.append(piece);
                            break;
                        case sink::body: {
                            event e;
                            e.kind = event_kind::stdin_data;
                            e.request_id = id_;
                            e.data = piece;
                            return e;
                        }
                    }
                    break;
                }
                state_ = state::padding;
                event e = on_content_complete();
                if (e.kind != event_kind::need_more) return e;
                break;
            }
            case state::padding: {
                std::size_t n = std::min(avail, padding_left_);
                begin_ += n;
                padding_left_ -= n;
                if (padding_left_ > 0) return {};
                state_ = state::header;
                break;
            }
        }
    }
}

}  // namespace corgi::protocols::detail::fastcgi
