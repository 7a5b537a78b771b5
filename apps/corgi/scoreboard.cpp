#include "scoreboard.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <system_error>

namespace corgi::master {

std::uint64_t monotonic_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

void worker_slot::reset(std::uint64_t request_limit) noexcept {
    for (auto& h : heartbeat_ns) h.store(0, std::memory_order_relaxed);
    io_threads.store(0, std::memory_order_relaxed);
    in_flight.store(0, std::memory_order_relaxed);
    served.store(0, std::memory_order_relaxed);
    max_requests.store(request_limit, std::memory_order_relaxed);
    replacement.store(0, std::memory_order_relaxed);
    detail[0] = '\0';
    pid.store(0, std::memory_order_relaxed);
    accepting.store(0, std::memory_order_relaxed);
    for (auto& t : io_tids) t.store(0, std::memory_order_relaxed);
    table.clear();
}

const char* restart_cause_name(restart_cause c) noexcept {
    switch (c) {
        case restart_cause::crash:
            return "crash";
        case restart_cause::hung:
            return "hung";
        case restart_cause::boot_timeout:
            return "boot_timeout";
        case restart_cause::max_requests:
            return "max_requests";
        case restart_cause::stuck_request:
            return "stuck_request";
        case restart_cause::max_rss:
            return "max_rss";
        case restart_cause::max_worker_lifetime:
            return "max_worker_lifetime";
        case restart_cause::reload:
            return "reload";
        case restart_cause::count:
            break;
    }
    return "unknown";
}

void scoreboard::retire_slot(std::size_t i) noexcept {
    worker_slot& slot = slots_[i];
    if (slot.pid.load(std::memory_order_relaxed) == 0) return;
    header_->fold_sequence.fetch_add(1, std::memory_order_acq_rel);  // odd: folding
    header_->retired.add(slot.table);
    header_->requests_lost.fetch_add(slot.in_flight.load(std::memory_order_relaxed),
                                     std::memory_order_relaxed);
    slot.pid.store(0, std::memory_order_release);
    header_->fold_sequence.fetch_add(1, std::memory_order_acq_rel);  // even: done
}

std::string worker_slot::replacement_detail() const {
    return std::string(detail, ::strnlen(detail, sizeof detail));
}

namespace {
// The header, then the slots (page-aligned, so that a slot's figures never share a page with the
// master's).
constexpr std::size_t header_bytes = (sizeof(board_header) + 4095) / 4096 * 4096;
std::size_t bytes_for(std::size_t slots) { return header_bytes + slots * sizeof(worker_slot); }
}  // namespace

scoreboard::scoreboard(std::size_t slots) : count_(slots) {
    fd_ = ::memfd_create("corgi-scoreboard", 0);  // no CLOEXEC: a re-executed master maps it again
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "memfd_create");
    if (::ftruncate(fd_, static_cast<off_t>(bytes_for(slots))) != 0) {
        int e = errno;
        ::close(fd_);
        throw std::system_error(e, std::generic_category(), "ftruncate of the scoreboard");
    }
    void* p = ::mmap(nullptr, bytes_for(slots), PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        ::close(fd_);
        throw std::system_error(e, std::generic_category(), "mmap of the scoreboard");
    }
    // Zero-filled: every atomic starts at 0.
    header_ = static_cast<board_header*>(p);
    slots_ = reinterpret_cast<worker_slot*>(static_cast<char*>(p) + header_bytes);
    header_->started.store(static_cast<std::int64_t>(::time(nullptr)), std::memory_order_relaxed);
}

scoreboard::scoreboard(int inherited_fd, std::size_t slots) : fd_(inherited_fd), count_(slots) {
    void* p = ::mmap(nullptr, bytes_for(slots), PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED)
        throw std::system_error(errno, std::generic_category(), "mmap of the inherited scoreboard");
    header_ = static_cast<board_header*>(p);
    slots_ = reinterpret_cast<worker_slot*>(static_cast<char*>(p) + header_bytes);
}

scoreboard::~scoreboard() {
    if (header_) ::munmap(header_, bytes_for(count_));
    if (fd_ >= 0) ::close(fd_);
}

void slot_channel::heartbeat(std::size_t index) noexcept {
    const std::size_t i = std::min(index, worker_slot::max_heartbeats - 1);
    slot_.heartbeat_ns[i].store(monotonic_ns(), std::memory_order_relaxed);
    thread_local const std::int32_t tid = static_cast<std::int32_t>(::gettid());
    slot_.io_tids[i].store(tid, std::memory_order_relaxed);
}

void slot_channel::request_started() noexcept {
    slot_.in_flight.fetch_add(1, std::memory_order_relaxed);
}

void slot_channel::request_finished() noexcept {
    slot_.in_flight.fetch_sub(1, std::memory_order_relaxed);
    const std::uint64_t served = slot_.served.fetch_add(1, std::memory_order_relaxed) + 1;
    const std::uint64_t limit = slot_.max_requests.load(std::memory_order_relaxed);
    if (limit != 0 && served == limit)
        request_replacement(supervision::replacement_reason::max_requests,
                            std::to_string(served) + " requests served (--max-requests)");
}

void slot_channel::request_replacement(supervision::replacement_reason why,
                                       std::string_view detail) noexcept {
    // Only the first wish counts; the detail is written before the flag is published.
    static std::atomic_flag claimed = ATOMIC_FLAG_INIT;
    if (slot_.replacement.load(std::memory_order_acquire) != 0 || claimed.test_and_set()) return;
    const std::size_t n = std::min(detail.size(), sizeof slot_.detail - 1);
    std::memcpy(slot_.detail, detail.data(), n);
    slot_.detail[n] = '\0';
    slot_.replacement.store(1 + static_cast<std::uint32_t>(why), std::memory_order_release);
    const char byte = 'w';
    [[maybe_unused]] ssize_t written =
        ::write(wake_fd_, &byte, 1);  // non-blocking: a full pipe wakes too
}

}  // namespace corgi::master
