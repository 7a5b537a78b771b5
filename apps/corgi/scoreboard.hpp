// What the workers tell the master without a message: a table in shared memory with one slot per
// worker (its io threads' heartbeats, requests in flight and served, a wish to be replaced). The
// memory is a memfd, so that it survives the master re-executing itself on HUP (the descriptor is
// inherited and mapped again). Lock-free atomics only: a worker that dies mid-write leaves nothing
// locked.
#pragma once

#include <corgi/core/supervision.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace corgi::master {

struct worker_slot {
    // Io threads beyond this share the last entry: a stuck one among them can hide behind a live
    // one (64 io threads in one worker is far beyond what the model is for).
    static constexpr std::size_t max_heartbeats = 64;
    std::atomic<std::uint64_t> heartbeat_ns[max_heartbeats];  // CLOCK_MONOTONIC, 0: not yet
    std::atomic<std::uint32_t> io_threads;
    std::atomic<std::uint64_t> in_flight;
    std::atomic<std::uint64_t> served;
    std::atomic<std::uint64_t> max_requests;  // set by the master before the fork; 0: no limit
    std::atomic<std::uint32_t> replacement;   // 0, or 1 + supervision::replacement_reason
    char detail[480];                         // written before `replacement` (release)

    void reset(std::uint64_t request_limit) noexcept;
    // The detail of a replacement request, once `replacement` was read non-zero (acquire).
    std::string replacement_detail() const;
};

class scoreboard {
  public:
    // A fresh table of `slots` slots (throws std::system_error), or the one behind an inherited
    // descriptor.
    explicit scoreboard(std::size_t slots);
    scoreboard(int inherited_fd, std::size_t slots);
    ~scoreboard();
    scoreboard(const scoreboard&) = delete;
    scoreboard& operator=(const scoreboard&) = delete;

    worker_slot& at(std::size_t i) noexcept { return slots_[i]; }
    std::size_t size() const noexcept { return count_; }
    int fd() const noexcept { return fd_; }

  private:
    int fd_ = -1;
    std::size_t count_ = 0;
    worker_slot* slots_ = nullptr;
};

// The channel a worker installs (corgi::supervision): writes into its own slot.
class slot_channel final : public supervision::channel {
  public:
    // wake_fd: a pipe the master polls; one byte after a wish so that it acts at once.
    slot_channel(worker_slot& slot, int wake_fd) noexcept : slot_(slot), wake_fd_(wake_fd) {}
    void heartbeat(std::size_t index) noexcept override;
    void request_started() noexcept override;
    void request_finished() noexcept override;
    void request_replacement(supervision::replacement_reason why,
                             std::string_view detail) noexcept override;

  private:
    worker_slot& slot_;
    int wake_fd_;
};

std::uint64_t monotonic_ns() noexcept;

}  // namespace corgi::master
