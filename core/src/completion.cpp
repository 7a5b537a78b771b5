#include <corgi/core/completion.hpp>
#include <corgi/core/log.hpp>
#include <corgi/core/stats.hpp>

#include <cctype>
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
    thread_local std::mt19937_64 rng{[] {
        std::random_device rd;
        return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    }()};
    static constexpr char hex[] = "0123456789abcdef";
    out.resize(32);
    for (int half = 0; half < 2; ++half) {
        std::uint64_t bits = rng();
        for (int i = 0; i < 16; ++i, bits >>= 4) out[half * 16 + i] = hex[bits & 0xf];
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
