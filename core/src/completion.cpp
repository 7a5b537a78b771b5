#include <corgi/core/completion.hpp>
#include <corgi/core/log.hpp>
#include <corgi/core/stats.hpp>

#include <array>
#include <cctype>
#include <cstring>
#include <random>
#include <vector>

namespace corgi {

namespace {

std::vector<completion_observer>& observers() {
    static std::vector<completion_observer> list;
    return list;
}

// What a proxy may hand us as an id: short, and nothing that could forge a log field.
bool plausible_id(std::string_view v) {
    if (v.empty() || v.size() > 128) return false;
    for (unsigned char c : v)
        if (!(std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == ':')) return false;
    return true;
}

}  // namespace

void generate_request_id(std::string& out) {
    // splitmix64 (Steele, Lea, Flood 2014) from a random seed per thread: ids need to be unique
    // and unguessable enough to correlate logs, not to be secrets; a draw is a few instructions
    // where mt19937_64 spends hundreds.
    struct generator {
        std::uint64_t state;
        std::uint64_t next() noexcept {
            std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            return z ^ (z >> 31);
        }
    };
    thread_local generator rng{[] {
        std::random_device rd;
        return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    }()};
    static constexpr auto hex_pairs = [] {
        std::array<char, 512> t{};
        constexpr char digits[] = "0123456789abcdef";
        for (int b = 0; b < 256; ++b) {
            t[2 * b] = digits[b >> 4];
            t[2 * b + 1] = digits[b & 0xf];
        }
        return t;
    }();
    out.resize(32);
    char* p = out.data();
    for (int half = 0; half < 2; ++half) {
        std::uint64_t bits = rng.next();
        for (int i = 0; i < 8; ++i, bits >>= 8, p += 2)
            std::memcpy(p, &hex_pairs[2 * (bits & 0xff)], 2);
    }
}

void begin_request(request& req, bool trusted_peer) {
    if (req.started() != std::chrono::steady_clock::time_point{}) return;
    req.set_started(std::chrono::steady_clock::now());
    if (trusted_peer) {
        if (std::string_view given = req.headers.get("X-Request-Id"); plausible_id(given)) {
            req.set_id(given);
            return;
        }
    }
    generate_request_id(req.id_storage());
}

void request_done(const request& req, const request_outcome& outcome) noexcept {
    const auto started = req.started();
    const auto duration = started == std::chrono::steady_clock::time_point{}
                              ? std::chrono::nanoseconds(0)
                              : std::chrono::steady_clock::now() - started;
    log::access(req, outcome, duration);
    stats::record(req, outcome, duration);
    for (const auto& observer : observers()) observer(req, outcome, duration);
}

void add_completion_observer(completion_observer observer) {
    observers().push_back(std::move(observer));
}

}  // namespace corgi
