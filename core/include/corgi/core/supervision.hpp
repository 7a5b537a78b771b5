// What a serving process tells whoever supervises it (the master of pre-forked workers), without
// knowing how: the corgi binary installs a channel in each worker; a single process and a program
// embedding corgi::server leave it unset, and every call is then a cheap no-op.
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

namespace corgi::supervision {

// Why a worker asks to be replaced (gracefully: a successor boots first, then it drains).
enum class replacement_reason {
    max_requests,  // --max-requests (+ jitter) reached
    stuck_request  // a request ran past its deadline + --harakiri-grace in code that cannot be
                   // interrupted (C code holding the GIL, a blocking C++ call)
};

struct channel {
    virtual ~channel() = default;
    // io thread `index` is alive; each io thread calls it a few times a second.
    virtual void heartbeat(std::size_t index) noexcept = 0;
    // A request began / ended (any protocol, any handler).
    virtual void request_started() noexcept = 0;
    virtual void request_finished() noexcept = 0;
    // Asks for a graceful replacement; `detail` (the request, for a stuck one) goes to the
    // master's log. Called again for the same worker it is ignored.
    virtual void request_replacement(replacement_reason why, std::string_view detail) noexcept = 0;
};

// Installs the channel (nullptr: none). Not thread-safe: call before the server runs.
void install(channel* c) noexcept;
channel* installed() noexcept;

inline void heartbeat(std::size_t index) noexcept {
    if (channel* c = installed()) c->heartbeat(index);
}
inline void request_started() noexcept {
    if (channel* c = installed()) c->request_started();
}
inline void request_finished() noexcept {
    if (channel* c = installed()) c->request_finished();
}
// Returns false when nothing supervises this process (the caller logs that it cannot recycle).
inline bool request_replacement(replacement_reason why, std::string_view detail) noexcept {
    channel* c = installed();
    if (!c) return false;
    c->request_replacement(why, detail);
    return true;
}

// Post-fork hooks for C++: what must not be shared with the master or the other workers (a
// database connection, a random seed, a thread) is set up here. Register before the server
// starts (e.g. where the handlers are built); each serving process runs them once, a pre-forked
// worker after its fork, before it accepts.
void at_worker_start(std::function<void()> hook);
void run_worker_start_hooks();

}  // namespace corgi::supervision
