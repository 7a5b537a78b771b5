#include <corgi/core/supervision.hpp>

#include <vector>

namespace corgi::supervision {

namespace {
channel* current = nullptr;
std::vector<std::function<void()>>& worker_start_hooks() {
    static std::vector<std::function<void()>> hooks;
    return hooks;
}
}  // namespace

void at_worker_start(std::function<void()> hook) {
    worker_start_hooks().push_back(std::move(hook));
}
void run_worker_start_hooks() {
    for (auto& hook : worker_start_hooks()) hook();
}

void install(channel* c) noexcept { current = c; }
channel* installed() noexcept { return current; }

}  // namespace corgi::supervision
