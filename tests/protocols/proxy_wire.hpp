// Test helpers: encoders for the proxy protocols' requests (what nginx would send) and a decoder
// for FastCGI responses, written independently of the parsers under test so that a bug cannot
// cancel itself out.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace corgi::test {

using var_list = std::vector<std::pair<std::string, std::string>>;

inline void put_u16le(std::string& out, std::size_t n) {
    out.push_back(char(n & 0xff));
    out.push_back(char((n >> 8) & 0xff));
}

inline std::string uwsgi_vars(const var_list& vars) {
    std::string block;
    for (const auto& [k, v] : vars) {
        put_u16le(block, k.size());
        block += k;
        put_u16le(block, v.size());
        block += v;
    }
    return block;
}

inline std::string uwsgi_packet(const var_list& vars, std::string_view body = {},
                                std::uint8_t modifier1 = 0) {
    std::string block = uwsgi_vars(vars);
    std::string out;
    out.push_back(char(modifier1));
    put_u16le(out, block.size());
    out.push_back(0);
    out += block;
    out += body;
    return out;
}

inline std::string scgi_vars(const var_list& vars) {
    std::string block;
    for (const auto& [k, v] : vars) {
        block += k;
        block.push_back('\0');
        block += v;
        block.push_back('\0');
    }
    return block;
}

inline std::string scgi_packet(const var_list& vars, std::string_view body = {}) {
    std::string block = scgi_vars(vars);
    return std::to_string(block.size()) + ":" + block + "," + std::string(body);
}

namespace fcgi {

inline std::string record(std::uint8_t type, std::uint16_t id, std::string_view content,
                          std::uint8_t padding = 0, std::uint8_t version = 1) {
    std::string out;
    out.push_back(char(version));
    out.push_back(char(type));
    out.push_back(char(id >> 8));
    out.push_back(char(id & 0xff));
    out.push_back(char(content.size() >> 8));
    out.push_back(char(content.size() & 0xff));
    out.push_back(char(padding));
    out.push_back(0);
    out += content;
    out.append(padding, '\x55');
    return out;
}

inline std::string begin(std::uint16_t id, std::uint16_t role = 1, bool keep_conn = false) {
    std::string body{char(role >> 8), char(role & 0xff), char(keep_conn ? 1 : 0), 0, 0, 0, 0, 0};
    return record(1, id, body);
}

inline void put_length(std::string& out, std::size_t n) {
    if (n < 128) {
        out.push_back(char(n));
    } else {
        out.push_back(char(((n >> 24) & 0x7f) | 0x80));
        out.push_back(char((n >> 16) & 0xff));
        out.push_back(char((n >> 8) & 0xff));
        out.push_back(char(n & 0xff));
    }
}

inline std::string pairs(const var_list& vars) {
    std::string out;
    for (const auto& [k, v] : vars) {
        put_length(out, k.size());
        put_length(out, v.size());
        out += k;
        out += v;
    }
    return out;
}

// A stream (PARAMS or STDIN): the content cut into records of at most `chunk` bytes, then the empty
// record.
inline std::string stream(std::uint8_t type, std::uint16_t id, std::string_view content,
                          std::size_t chunk = 65535, std::uint8_t padding = 0) {
    std::string out;
    for (std::size_t i = 0; i < content.size(); i += chunk)
        out += record(type, id, content.substr(i, chunk), padding);
    out += record(type, id, {});
    return out;
}

inline std::string params(std::uint16_t id, const var_list& vars, std::size_t chunk = 65535) {
    return stream(4, id, pairs(vars), chunk);
}
inline std::string stdin_(std::uint16_t id, std::string_view body, std::size_t chunk = 65535) {
    return stream(5, id, body, chunk);
}

inline std::string request(std::uint16_t id, const var_list& vars, std::string_view body = {},
                           bool keep_conn = false, std::size_t chunk = 65535) {
    return begin(id, 1, keep_conn) + params(id, vars, chunk) + stdin_(id, body, chunk);
}

struct parsed_record {
    std::uint8_t type = 0;
    std::uint16_t id = 0;
    std::string content;
};

// Splits `bytes` into records; `complete` is false when the bytes end inside a record.
inline std::vector<parsed_record> parse(std::string_view bytes, bool* complete = nullptr) {
    std::vector<parsed_record> out;
    std::size_t i = 0;
    while (bytes.size() - i >= 8) {
        auto u = [&](std::size_t k) { return static_cast<unsigned char>(bytes[i + k]); };
        std::size_t len = (std::size_t(u(4)) << 8) | u(5);
        std::size_t pad = u(6);
        if (bytes.size() - i < 8 + len + pad) break;
        out.push_back({u(1), static_cast<std::uint16_t>((u(2) << 8) | u(3)),
                       std::string(bytes.substr(i + 8, len))});
        i += 8 + len + pad;
    }
    if (complete) *complete = i == bytes.size();
    return out;
}

// The STDOUT bytes of request `id`, joined.
inline std::string stdout_of(const std::vector<parsed_record>& records, std::uint16_t id) {
    std::string out;
    for (const auto& r : records)
        if (r.type == 6 && r.id == id) out += r.content;
    return out;
}

// protocolStatus of the END_REQUEST of `id`, or -1 when there is none.
inline int end_status_of(const std::vector<parsed_record>& records, std::uint16_t id) {
    for (const auto& r : records)
        if (r.type == 3 && r.id == id && r.content.size() == 8)
            return static_cast<unsigned char>(r.content[4]);
    return -1;
}

}  // namespace fcgi
}  // namespace corgi::test
