// Request statistics fed by the completion point (request_done) and nothing else: per (route,
// method, status) counts and latency histograms, the process's totals and per-io-thread figures,
// and the gauges the WSGI layer keeps (lanes, fibers, GIL wait). Everything is a fixed-size table
// of atomics with no pointers, so that it can live in shared memory: the corgi binary places each
// worker's table in the master's scoreboard, where the master (or any worker) reads the whole
// server; a program embedding corgi::server gets a table of its own process.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace corgi {

class request;
struct request_outcome;

namespace stats {

// Upper bounds (seconds) of the latency histogram's buckets; a last bucket, +Inf, follows.
inline constexpr std::array<double, 14> duration_bounds = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
inline constexpr std::size_t bucket_count = duration_bounds.size() + 1;

// The route of a request that matched none (404, 405, a refusal before routing).
inline constexpr std::string_view unmatched_route = "(none)";

// One (route, method, status) series.
struct series {
    static constexpr std::size_t route_capacity = 63, method_capacity = 15;
    // 0: empty, 1: being claimed by a writer, 2: its key is set (readers skip anything else).
    std::atomic<std::uint32_t> state;
    std::uint32_t hash;
    std::uint16_t status;
    std::uint8_t route_size, method_size;  // of the names below (no strlen on the hot path)
    char route[route_capacity + 1];
    char method[method_capacity + 1];
    std::atomic<std::uint64_t> duration_ns;  // sum
    // Per bucket, not cumulative; their sum is the count (one atomic add less per request).
    std::atomic<std::uint64_t> buckets[bucket_count];

    std::string_view route_name() const noexcept;
    std::string_view method_name() const noexcept;
    std::uint64_t requests() const noexcept;
};

// What one process served. Zero-filled memory is an empty table.
struct process_table {
    // Series beyond this many go to one overflow series (route "(other)", method "", status 0);
    // a URL map with more endpoints than this still counts every request. Methods other than
    // RFC 9110's and PATCH are counted as "OTHER", so clients cannot fill the table.
    static constexpr std::size_t capacity = 96;
    static constexpr std::size_t max_io_threads = 64;
    series entries[capacity];
    // Totals folded in by add(); a live table's own are the per-thread figures below (each io
    // thread writes only its own, with plain stores): total_requests() and friends sum both.
    std::atomic<std::uint64_t> requests;
    std::atomic<std::uint64_t> bytes_out;                      // uWSGI's tx
    std::atomic<std::uint64_t> duration_ns;                    // uWSGI's running_time (in ns here)
    std::atomic<std::uint64_t> server_errors;                  // status >= 500 (uWSGI's exceptions)
    std::atomic<std::uint64_t> timeouts;                       // 504 (uWSGI's harakiri_count)
    std::atomic<std::uint64_t> aborted;                        // responses cut short (write errors)
    std::atomic<std::uint64_t> core_requests[max_io_threads];  // per io thread
    std::atomic<std::int64_t> core_in_flight[max_io_threads];  // per io thread
    std::atomic<std::uint64_t> core_aborted[max_io_threads];   // per io thread
    std::atomic<std::uint64_t> core_bytes_out[max_io_threads];
    std::atomic<std::uint64_t> core_duration_ns[max_io_threads];
    // Kept by the WSGI layer.
    std::atomic<std::uint64_t> lanes;
    std::atomic<std::uint64_t> fiber_capacity;  // lanes x fibers per lane
    std::atomic<std::int64_t> fibers_busy;
    std::atomic<std::uint64_t> gil_wait_ns;

    // Called by request_done on io thread `io_thread` (io_thread_index()); lock-free, no
    // allocation.
    void record(std::size_t io_thread, std::string_view route, std::string_view method, int status,
                std::uint64_t duration_ns, std::uint64_t bytes_out_count) noexcept;
    std::uint64_t total_requests() const noexcept;
    std::uint64_t total_bytes_out() const noexcept;
    std::uint64_t total_duration_ns() const noexcept;
    // Adds `other`'s counters into this table (single writer: the master folding a worker that
    // exited). Gauges are not added.
    void add(const process_table& other) noexcept;
    void clear() noexcept;
};

// The table this process records into: its own by default; the corgi binary points each worker
// at its scoreboard slot before the server runs.
process_table& current() noexcept;
void use_table(process_table* table) noexcept;

// In-flight tracking of the current io thread (called around every dispatched request).
void request_started() noexcept;
void request_finished() noexcept;
// The index of the calling io thread in process_table's per-thread arrays.
std::size_t io_thread_index() noexcept;

// Records a finished request into current() (request_done calls it).
void record(const request& req, const request_outcome& outcome,
            std::chrono::nanoseconds duration) noexcept;

// --- The whole server, as the stats listener and /metrics show it ---
struct route_figures {
    std::uint64_t requests = 0, duration_ns = 0;
    std::array<std::uint64_t, bucket_count> buckets{};  // not cumulative
    std::map<int, std::uint64_t> statuses;
    std::map<std::string, std::uint64_t> methods;
    std::map<std::pair<std::string, int>, std::uint64_t> by_method_status;
};

struct worker_view {
    int id = 0;  // 1-based, stable across respawns of the same slot
    long pid = 0;
    bool ready = true;
    std::uint64_t in_flight = 0;
    std::uint64_t delta_requests = 0;  // since the previous document of this stats listener
    std::size_t io_threads = 1;
    std::uint64_t rss = 0, vsz = 0;  // bytes
    std::uint64_t respawn_count = 0;
    double last_spawn = 0;  // seconds since the epoch
    const process_table* table = nullptr;
    std::vector<double> io_thread_cpu_seconds;
};

struct socket_view {
    std::string name, proto;
    std::uint64_t queue = 0, max_queue = 0;
};

struct server_view {
    std::string version;
    long pid = 0;
    double uptime_seconds = 0;
    std::vector<worker_view> workers;
    std::vector<socket_view> sockets;
    // Folded in from workers that exited (counters survive restarts); null: none.
    const process_table* retired = nullptr;
    std::map<std::string, std::uint64_t> worker_restarts;  // by cause
    std::uint64_t requests_lost = 0;                       // in flight in a worker that died
};

// Aggregates the view's tables by route.
std::map<std::string, route_figures> routes_of(const server_view& view);
// uWSGI's stats document (its field names where the concept is the same) plus a "corgi" object.
nlohmann::json to_json(const server_view& view);
// Prometheus text exposition format 0.0.4.
std::string to_prometheus(const server_view& view);

// What the built-in {"metrics": true} target answers with: the corgi binary installs a function
// that renders the whole server; otherwise this process's own table.
using exposition_source = std::string (*)();
void set_exposition_source(exposition_source source) noexcept;
std::string exposition();

}  // namespace stats
}  // namespace corgi
