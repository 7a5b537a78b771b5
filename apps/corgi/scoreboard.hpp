// What the workers tell the master without a message: a table in shared memory with one slot per
// worker (its io threads' heartbeats, requests in flight and served, a wish to be replaced). The
// memory is a memfd, so that it survives the master re-executing itself on HUP (the descriptor is
// inherited and mapped again). Lock-free atomics only: a worker that dies mid-write leaves nothing
// locked.
#pragma once

#include <corgi/core/stats.hpp>
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
    // Written by the master: the worker's pid while it runs (0: a free slot, not shown in the
    // stats), spawns of this slot so far (uWSGI's respawn_count, kept by reset) and when the last
    // one happened (seconds since the epoch).
    std::atomic<std::int64_t> pid;
    std::atomic<std::uint32_t> accepting;  // ready: apps imported, listeners accepting
    std::atomic<std::uint64_t> respawn_count;
    std::atomic<std::int64_t> last_spawn;
    // Written by each io thread with its heartbeat: its thread id, for its CPU time in /proc.
    std::atomic<std::int32_t> io_tids[max_heartbeats];
    // What the worker served (stats::use_table points the worker here).
    stats::process_table table;

    void reset(std::uint64_t request_limit) noexcept;
    // The detail of a replacement request, once `replacement` was read non-zero (acquire).
    std::string replacement_detail() const;
};

// Why the master replaced a worker (corgi_worker_restarts_total{cause}).
enum class restart_cause : std::size_t {
    crash,                // exited or was killed, unasked
    hung,                 // io threads silent past --worker-timeout
    boot_timeout,         // not ready in --boot-timeout
    max_requests,         // --max-requests
    stuck_request,        // a request past its deadline + --harakiri-grace
    max_rss,              // --max-rss
    max_worker_lifetime,  // --max-worker-lifetime
    reload,               // HUP
    count
};
const char* restart_cause_name(restart_cause c) noexcept;

// The master's part of the shared memory: what survives its workers (and its own re-exec).
struct board_header {
    // A seqlock around folding an exited worker's table into `retired`: odd while the master
    // folds; readers retry when it changed under them, so no request is counted twice or lost.
    std::atomic<std::uint64_t> fold_sequence;
    std::atomic<std::int64_t> started;  // the first master's start, seconds since the epoch
    std::atomic<std::uint64_t> restarts[static_cast<std::size_t>(restart_cause::count)];
    std::atomic<std::uint64_t> requests_lost;
    std::atomic<std::uint64_t> slots_used;  // 1 + the highest slot ever spawned: readers stop there
    stats::process_table retired;
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
    const worker_slot& at(std::size_t i) const noexcept { return slots_[i]; }
    board_header& header() noexcept { return *header_; }
    const board_header& header() const noexcept { return *header_; }
    // The master, after reaping the worker of slot `i`: its figures join the retired ones and the
    // slot leaves the stats.
    void retire_slot(std::size_t i) noexcept;
    std::size_t size() const noexcept { return count_; }
    int fd() const noexcept { return fd_; }

  private:
    int fd_ = -1;
    std::size_t count_ = 0;
    board_header* header_ = nullptr;
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
