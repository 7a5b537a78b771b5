#include <corgi/core/supervision.hpp>

namespace corgi::supervision {

namespace {
channel* current = nullptr;
}

void install(channel* c) noexcept { current = c; }
channel* installed() noexcept { return current; }

}  // namespace corgi::supervision
