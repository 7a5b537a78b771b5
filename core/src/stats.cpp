// The statistics tables (lock-free, shared-memory safe) and their two renderings: uWSGI's stats
// JSON and the Prometheus text format.
#include <corgi/core/completion.hpp>
#include <corgi/core/stats.hpp>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <thread>

namespace corgi::stats {

namespace {

constexpr std::uint32_t empty = 0, claiming = 1, ready = 2;
// The last entry takes what no longer fits: route "(other)".
constexpr std::size_t overflow_index = process_table::capacity - 1;
constexpr std::size_t probe_slots = process_table::capacity - 1;
constexpr std::string_view overflow_route = "(other)";

// Only picks the probe start: same_key compares the whole key. Sizes, the first and last 8 bytes
// of the route and the method's first 8 (a request's cost must not grow with its route's name).
std::uint32_t hash_of(std::string_view route, std::string_view method, int status) noexcept {
    auto word = [](std::string_view s, std::size_t at) {
        std::uint64_t w = 0;
        std::memcpy(&w, s.data() + at, std::min<std::size_t>(8, s.size() - at));
        return w;
    };
    std::uint64_t h =
        (route.size() << 24) ^ (method.size() << 16) ^ static_cast<std::uint64_t>(status);
    h = (h ^ word(route, 0)) * 0x9e3779b97f4a7c15ull;
    h = (h ^ word(route, route.size() > 8 ? route.size() - 8 : 0)) * 0x9e3779b97f4a7c15ull;
    h = (h ^ word(method, 0)) * 0x9e3779b97f4a7c15ull;
    return static_cast<std::uint32_t>(h >> 32);
}

void copy_name(char* dst, std::size_t capacity, std::string_view src) noexcept {
    const std::size_t n = std::min(src.size(), capacity);
    std::memcpy(dst, src.data(), n);
    dst[n] = '\0';
}

std::string_view truncated(std::string_view s, std::size_t capacity) noexcept {
    return s.substr(0, std::min(s.size(), capacity));
}

bool same_key(const series& s, std::uint32_t hash, std::string_view route, std::string_view method,
              int status) noexcept {
    return s.hash == hash && s.status == status && s.route_name() == route &&
           s.method_name() == method;
}

// The series of (route, method, status), claimed if new; the overflow series when the table is
// full.
series& find_or_claim(process_table& t, std::string_view route, std::string_view method,
                      int status) noexcept {
    route = truncated(route, series::route_capacity);
    method = truncated(method, series::method_capacity);
    const std::uint32_t hash = hash_of(route, method, status);
    std::size_t i = hash % probe_slots;
    for (std::size_t probes = 0; probes < probe_slots;) {
        series& s = t.entries[i];
        std::uint32_t state = s.state.load(std::memory_order_acquire);
        if (state == ready) {
            if (same_key(s, hash, route, method, status)) return s;
        } else if (state == empty) {
            if (s.state.compare_exchange_strong(state, claiming, std::memory_order_acquire)) {
                s.hash = hash;
                s.status = static_cast<std::uint16_t>(status);
                copy_name(s.route, series::route_capacity, route);
                copy_name(s.method, series::method_capacity, method);
                s.route_size = static_cast<std::uint8_t>(route.size());
                s.method_size = static_cast<std::uint8_t>(method.size());
                s.state.store(ready, std::memory_order_release);
                return s;
            }
            continue;  // another thread claimed it: look at it again
        } else {
            // Another io thread is writing this key (a few stores): wait for it.
            std::this_thread::yield();
            continue;
        }
        i = (i + 1) % probe_slots;
        ++probes;
    }
    series& o = t.entries[overflow_index];
    std::uint32_t state = o.state.load(std::memory_order_acquire);
    if (state == empty && o.state.compare_exchange_strong(state, claiming)) {
        copy_name(o.route, series::route_capacity, overflow_route);
        o.route_size = static_cast<std::uint8_t>(overflow_route.size());
        o.method[0] = '\0';
        o.method_size = 0;
        o.status = 0;
        o.state.store(ready, std::memory_order_release);
    }
    return o;
}

// The bounds in nanoseconds, so that a request's bucket costs integer compares only.
constexpr auto duration_bounds_ns = [] {
    std::array<std::uint64_t, duration_bounds.size()> ns{};
    for (std::size_t b = 0; b < ns.size(); ++b)
        ns[b] = static_cast<std::uint64_t>(duration_bounds[b] * 1e9 + 0.5);
    return ns;
}();

std::size_t bucket_of(std::uint64_t duration_ns) noexcept {
    for (std::size_t b = 0; b < duration_bounds_ns.size(); ++b)
        if (duration_ns <= duration_bounds_ns[b]) return b;
    return duration_bounds_ns.size();
}

process_table own_table{};
std::atomic<process_table*> installed{&own_table};
std::atomic<std::size_t> next_io_thread{0};
std::atomic<exposition_source> source{nullptr};

template <class T>
std::uint64_t load(const std::atomic<T>& a) noexcept {
    const T v = a.load(std::memory_order_relaxed);
    return v < 0 ? 0 : static_cast<std::uint64_t>(v);
}

}  // namespace

std::string_view series::route_name() const noexcept { return {route, route_size}; }
std::string_view series::method_name() const noexcept { return {method, method_size}; }
std::uint64_t series::requests() const noexcept {
    std::uint64_t n = 0;
    for (const auto& b : buckets) n += b.load(std::memory_order_relaxed);
    return n;
}

namespace {
// A counter of one io thread: only that thread writes it, so a plain load and store (no locked
// instruction) is an increment; readers load it whole. The last index is shared by any threads
// beyond max_io_threads: there, a real atomic add.
void bump(std::atomic<std::uint64_t>& c, std::uint64_t n, std::size_t io_thread) noexcept {
    if (io_thread + 1 < process_table::max_io_threads)
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    else
        c.fetch_add(n, std::memory_order_relaxed);
}
template <class Array>
std::uint64_t sum(const Array& a) noexcept {
    std::uint64_t n = 0;
    for (const auto& c : a) n += c.load(std::memory_order_relaxed);
    return n;
}
}  // namespace

std::uint64_t process_table::total_requests() const noexcept {
    return requests.load(std::memory_order_relaxed) + sum(core_requests);
}
std::uint64_t process_table::total_bytes_out() const noexcept {
    return bytes_out.load(std::memory_order_relaxed) + sum(core_bytes_out);
}
std::uint64_t process_table::total_duration_ns() const noexcept {
    return duration_ns.load(std::memory_order_relaxed) + sum(core_duration_ns);
}

void process_table::record(std::size_t io_thread, std::string_view route, std::string_view method,
                           int status, std::uint64_t duration, std::uint64_t out) noexcept {
    constexpr auto r = std::memory_order_relaxed;
    if (route.empty()) route = unmatched_route;
    route = truncated(route, series::route_capacity);
    // The series of this thread's previous request, when the key is the same (a busy route): no
    // hash, no probe.
    thread_local struct {
        const process_table* table = nullptr;
        series* s = nullptr;
    } last;
    series* s = last.s;
    if (!(last.table == this && s->status == status && s->route_name() == route &&
          s->method_name() == method)) {
        s = &find_or_claim(*this, route, method, status);
        last.table = this;
        last.s = s;
    }
    s->duration_ns.fetch_add(duration, r);
    s->buckets[bucket_of(duration)].fetch_add(1, r);
    bump(core_requests[io_thread], 1, io_thread);
    bump(core_bytes_out[io_thread], out, io_thread);
    bump(core_duration_ns[io_thread], duration, io_thread);
    if (status >= 500) server_errors.fetch_add(1, r);
    if (status == 504) timeouts.fetch_add(1, r);
}

void process_table::add(const process_table& o) noexcept {
    constexpr auto r = std::memory_order_relaxed;
    for (const series& from : o.entries) {
        if (from.state.load(std::memory_order_acquire) != ready) continue;
        series& to = find_or_claim(*this, from.route_name(), from.method_name(), from.status);
        to.duration_ns.fetch_add(from.duration_ns.load(r), r);
        for (std::size_t b = 0; b < bucket_count; ++b)
            to.buckets[b].fetch_add(from.buckets[b].load(r), r);
    }
    requests.fetch_add(o.total_requests(), r);
    bytes_out.fetch_add(o.total_bytes_out(), r);
    duration_ns.fetch_add(o.total_duration_ns(), r);
    server_errors.fetch_add(o.server_errors.load(r), r);
    timeouts.fetch_add(o.timeouts.load(r), r);
    aborted.fetch_add(o.aborted.load(r), r);
    gil_wait_ns.fetch_add(o.gil_wait_ns.load(r), r);
}

void process_table::clear() noexcept {
    // Only for memory no thread writes to (a slot between two workers): plain zeroing.
    std::memset(static_cast<void*>(this), 0, sizeof *this);
}

process_table& current() noexcept { return *installed.load(std::memory_order_relaxed); }
void use_table(process_table* table) noexcept {
    installed.store(table ? table : &own_table, std::memory_order_relaxed);
}

std::size_t io_thread_index() noexcept {
    thread_local const std::size_t index = std::min(
        next_io_thread.fetch_add(1, std::memory_order_relaxed), process_table::max_io_threads - 1);
    return index;
}

void request_started() noexcept {
    // Started and finished on the same io thread (a connection lives on one io_context).
    auto& c = current().core_in_flight[io_thread_index()];
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}
void request_finished() noexcept {
    auto& c = current().core_in_flight[io_thread_index()];
    c.store(c.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
}

namespace {
// A label value a client cannot multiply: the methods of RFC 9110 and PATCH as themselves, any
// other (FOO, BAR ... each would claim a series of the fixed table) as "OTHER".
std::string_view method_label(std::string_view method) noexcept {
    static constexpr std::string_view known[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                                 "OPTIONS", "CONNECT", "TRACE", "PATCH"};
    for (auto k : known)
        if (method == k) return k;
    return "OTHER";
}
}  // namespace

void record(const request& req, const request_outcome& outcome,
            std::chrono::nanoseconds duration) noexcept {
    process_table& t = current();
    const std::uint64_t ns =
        duration.count() > 0 ? static_cast<std::uint64_t>(duration.count()) : 0;
    const std::size_t thread = io_thread_index();
    t.record(thread, req.endpoint, method_label(req.method), outcome.status, ns, outcome.bytes_out);
    if (outcome.aborted) {
        t.aborted.fetch_add(1, std::memory_order_relaxed);
        t.core_aborted[thread].fetch_add(1, std::memory_order_relaxed);
    }
}

// --- rendering ---

std::map<std::string, route_figures> routes_of(const server_view& view) {
    std::map<std::string, route_figures> routes;
    auto add = [&routes](const process_table& t) {
        constexpr auto r = std::memory_order_relaxed;
        for (const series& s : t.entries) {
            if (s.state.load(std::memory_order_acquire) != ready) continue;
            route_figures& f = routes[std::string(s.route_name())];
            const std::uint64_t n = s.requests();
            f.requests += n;
            f.duration_ns += s.duration_ns.load(r);
            for (std::size_t b = 0; b < bucket_count; ++b) f.buckets[b] += s.buckets[b].load(r);
            f.statuses[s.status] += n;
            f.methods[std::string(s.method_name())] += n;
            f.by_method_status[{std::string(s.method_name()), s.status}] += n;
        }
    };
    for (const auto& w : view.workers)
        if (w.table) add(*w.table);
    if (view.retired) add(*view.retired);
    return routes;
}

namespace {

struct totals {
    std::uint64_t requests = 0, in_flight = 0, lanes = 0, fiber_capacity = 0, fibers_busy = 0,
                  gil_wait_ns = 0;
};

totals totals_of(const server_view& view) {
    totals t;
    constexpr auto r = std::memory_order_relaxed;
    for (const auto& w : view.workers) {
        t.in_flight += w.in_flight;
        if (!w.table) continue;
        t.requests += w.table->total_requests();
        t.lanes += w.table->lanes.load(r);
        t.fiber_capacity += w.table->fiber_capacity.load(r);
        t.fibers_busy += load(w.table->fibers_busy);
        t.gil_wait_ns += w.table->gil_wait_ns.load(r);
    }
    if (view.retired) {
        t.requests += view.retired->total_requests();
        t.gil_wait_ns += view.retired->gil_wait_ns.load(r);
    }
    return t;
}

double seconds_of(std::uint64_t ns) { return static_cast<double>(ns) / 1e9; }

}  // namespace

nlohmann::json to_json(const server_view& view) {
    using nlohmann::json;
    constexpr auto r = std::memory_order_relaxed;
    json doc;
    doc["version"] = view.version;
    std::uint64_t queue = 0;
    json sockets = json::array();
    for (const auto& s : view.sockets) {
        queue += s.queue;
        sockets.push_back({{"name", s.name},
                           {"proto", s.proto},
                           {"queue", s.queue},
                           {"max_queue", s.max_queue},
                           {"shared", 0},
                           {"can_offload", 0}});
    }
    const totals t = totals_of(view);
    doc["listen_queue"] = queue;
    doc["listen_queue_errors"] = 0;
    doc["signal_queue"] = 0;
    doc["load"] = t.in_flight;
    doc["pid"] = view.pid;
    doc["uid"] = ::getuid();
    doc["gid"] = ::getgid();
    std::error_code ec;
    doc["cwd"] = std::filesystem::current_path(ec).string();
    doc["sockets"] = std::move(sockets);
    json workers = json::array();
    for (const auto& w : view.workers) {
        json cores = json::array();
        json io_threads = json::array();
        std::uint64_t requests = 0, duration = 0, tx = 0, errors = 0, timeouts = 0;
        std::uint64_t lanes = 0, capacity = 0, busy = 0, gil = 0;
        if (const process_table* pt = w.table) {
            requests = pt->total_requests();
            duration = pt->total_duration_ns();
            tx = pt->total_bytes_out();
            errors = pt->server_errors.load(r);
            timeouts = pt->timeouts.load(r);
            lanes = pt->lanes.load(r);
            capacity = pt->fiber_capacity.load(r);
            busy = load(pt->fibers_busy);
            gil = pt->gil_wait_ns.load(r);
            const std::size_t n =
                std::clamp<std::size_t>(w.io_threads, 1, process_table::max_io_threads);
            for (std::size_t c = 0; c < n; ++c) {
                cores.push_back({{"id", c},
                                 {"requests", pt->core_requests[c].load(r)},
                                 {"static_requests", 0},
                                 {"routed_requests", 0},
                                 {"offloaded_requests", 0},
                                 {"write_errors", pt->core_aborted[c].load(r)},
                                 {"read_errors", 0},
                                 {"in_request", load(pt->core_in_flight[c]) > 0 ? 1 : 0},
                                 {"vars", json::array()},
                                 {"req_info", json::object()}});
            }
        }
        for (std::size_t c = 0; c < w.io_thread_cpu_seconds.size(); ++c)
            io_threads.push_back({{"id", c}, {"cpu_seconds", w.io_thread_cpu_seconds[c]}});
        workers.push_back({
            {"id", w.id},
            {"pid", w.pid},
            {"accepting", w.ready ? 1 : 0},
            {"requests", requests},
            {"delta_requests", w.delta_requests},
            {"exceptions", errors},
            {"harakiri_count", timeouts},
            {"signals", 0},
            {"signal_queue", 0},
            {"status", w.in_flight ? "busy" : "idle"},
            {"rss", w.rss},
            {"vsz", w.vsz},
            {"running_time", duration / 1000},
            {"last_spawn", static_cast<std::int64_t>(w.last_spawn)},
            {"respawn_count", w.respawn_count},
            {"tx", tx},
            {"avg_rt", requests ? duration / 1000 / requests : 0},
            {"apps", json::array()},
            {"cores", std::move(cores)},
            {"corgi",
             {{"in_flight", w.in_flight},
              {"lanes", lanes},
              {"fibers_busy", busy},
              {"fibers_free", capacity > busy ? capacity - busy : 0},
              {"gil_wait_seconds", seconds_of(gil)},
              {"io_threads", std::move(io_threads)}}},
        });
    }
    doc["workers"] = std::move(workers);
    json routes = json::array();
    for (const auto& [name, f] : routes_of(view)) {
        json le = json::array(), counts = json::array();
        std::uint64_t cumulative = 0;
        for (std::size_t b = 0; b < bucket_count; ++b) {
            cumulative += f.buckets[b];
            if (b < duration_bounds.size())
                le.push_back(duration_bounds[b]);
            else
                le.push_back("+Inf");
            counts.push_back(cumulative);
        }
        json statuses = json::object(), methods = json::object();
        for (const auto& [status, n] : f.statuses) statuses[std::to_string(status)] = n;
        for (const auto& [method, n] : f.methods) methods[method] = n;
        routes.push_back({{"route", name},
                          {"requests", f.requests},
                          {"statuses", std::move(statuses)},
                          {"methods", std::move(methods)},
                          {"duration_seconds",
                           {{"le", std::move(le)},
                            {"counts", std::move(counts)},
                            {"sum", seconds_of(f.duration_ns)},
                            {"count", f.requests}}}});
    }
    json restarts = json::object();
    for (const auto& [cause, n] : view.worker_restarts) restarts[cause] = n;
    doc["corgi"] = {
        {"uptime_seconds", view.uptime_seconds},
        {"requests_total", t.requests},
        {"requests_lost", view.requests_lost},
        {"in_flight", t.in_flight},
        {"worker_restarts", std::move(restarts)},
        {"routes", std::move(routes)},
        {"lanes", t.lanes},
        {"fibers_busy", t.fibers_busy},
        {"fibers_free", t.fiber_capacity > t.fibers_busy ? t.fiber_capacity - t.fibers_busy : 0},
        {"gil_wait_seconds", seconds_of(t.gil_wait_ns)}};
    return doc;
}

namespace {

// A label value: backslash, double quote and line feed escaped (the format's three).
void label(std::string& out, std::string_view name, std::string_view value) {
    out += name;
    out += "=\"";
    for (char c : value) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    out += '"';
}

void number(std::string& out, double v) {
    char buf[32];
    const int n = std::snprintf(buf, sizeof buf, "%.9g", v);
    out.append(buf, static_cast<std::size_t>(n));
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

}  // namespace

std::string to_prometheus(const server_view& view) {
    std::string out;
    out.reserve(8192);
    const auto routes = routes_of(view);
    const totals t = totals_of(view);

    header(out, "corgi_requests_total", "counter",
           "Requests completed, by route endpoint, method and status.");
    for (const auto& [name, f] : routes)
        for (const auto& [key, n] : f.by_method_status) {
            out += "corgi_requests_total{";
            label(out, "route", name);
            out += ',';
            label(out, "method", key.first);
            out += ',';
            label(out, "status", std::to_string(key.second));
            out += "} ";
            out += std::to_string(n);
            out += '\n';
        }

    header(out, "corgi_request_duration_seconds", "histogram",
           "Time from the request head to the end of its response, by route endpoint.");
    for (const auto& [name, f] : routes) {
        std::uint64_t cumulative = 0;
        for (std::size_t b = 0; b < bucket_count; ++b) {
            cumulative += f.buckets[b];
            out += "corgi_request_duration_seconds_bucket{";
            label(out, "route", name);
            out += ",le=\"";
            if (b < duration_bounds.size())
                number(out, duration_bounds[b]);
            else
                out += "+Inf";
            out += "\"} ";
            out += std::to_string(cumulative);
            out += '\n';
        }
        out += "corgi_request_duration_seconds_sum{";
        label(out, "route", name);
        out += "} ";
        number(out, seconds_of(f.duration_ns));
        out += "\ncorgi_request_duration_seconds_count{";
        label(out, "route", name);
        out += "} ";
        out += std::to_string(f.requests);
        out += '\n';
    }

    header(out, "corgi_requests_in_flight", "gauge", "Requests being served now.");
    out += "corgi_requests_in_flight " + std::to_string(t.in_flight) + "\n";
    header(out, "corgi_requests_lost_total", "counter",
           "Requests in flight in a worker that died.");
    out += "corgi_requests_lost_total " + std::to_string(view.requests_lost) + "\n";

    header(out, "corgi_workers", "gauge", "Worker processes running (ready or booting).");
    out += "corgi_workers " + std::to_string(view.workers.size()) + "\n";
    header(out, "corgi_worker_restarts_total", "counter", "Workers replaced, by cause.");
    for (const auto& [cause, n] : view.worker_restarts) {
        out += "corgi_worker_restarts_total{";
        label(out, "cause", cause);
        out += "} " + std::to_string(n) + "\n";
    }
    header(out, "corgi_worker_rss_bytes", "gauge", "Resident memory of each worker.");
    for (const auto& w : view.workers) {
        out += "corgi_worker_rss_bytes{";
        label(out, "worker", std::to_string(w.id));
        out += ',';
        label(out, "pid", std::to_string(w.pid));
        out += "} " + std::to_string(w.rss) + "\n";
    }
    header(out, "corgi_worker_requests_total", "counter",
           "Requests completed by each worker since it started.");
    for (const auto& w : view.workers) {
        out += "corgi_worker_requests_total{";
        label(out, "worker", std::to_string(w.id));
        out += ',';
        label(out, "pid", std::to_string(w.pid));
        out += "} " + std::to_string(w.table ? w.table->total_requests() : 0) + "\n";
    }
    header(out, "corgi_listen_queue", "gauge",
           "Connections waiting in a listening socket's accept queue.");
    for (const auto& s : view.sockets) {
        out += "corgi_listen_queue{";
        label(out, "socket", s.name);
        out += ',';
        label(out, "proto", s.proto);
        out += "} " + std::to_string(s.queue) + "\n";
    }
    header(out, "corgi_python_lanes", "gauge", "Python lanes (threads running WSGI apps).");
    out += "corgi_python_lanes " + std::to_string(t.lanes) + "\n";
    header(out, "corgi_python_fibers_busy", "gauge", "Fibers serving a WSGI request now.");
    out += "corgi_python_fibers_busy " + std::to_string(t.fibers_busy) + "\n";
    header(out, "corgi_gil_wait_seconds_total", "counter",
           "Time lanes waited to take the GIL back.");
    out += "corgi_gil_wait_seconds_total ";
    number(out, seconds_of(t.gil_wait_ns));
    out += '\n';
    header(out, "corgi_uptime_seconds", "gauge", "Seconds since the server started.");
    out += "corgi_uptime_seconds ";
    number(out, view.uptime_seconds);
    out += '\n';
    return out;
}

void set_exposition_source(exposition_source s) noexcept {
    source.store(s, std::memory_order_release);
}

std::string exposition() {
    if (exposition_source s = source.load(std::memory_order_acquire)) return s();
    // This process alone.
    static const auto started = std::chrono::steady_clock::now();
    server_view view;
    view.pid = ::getpid();
    view.uptime_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    worker_view self;
    self.id = 1;
    self.pid = view.pid;
    self.table = &current();
    std::int64_t in_flight = 0;
    for (const auto& c : current().core_in_flight) in_flight += c.load(std::memory_order_relaxed);
    self.in_flight = in_flight > 0 ? static_cast<std::uint64_t>(in_flight) : 0;
    view.workers.push_back(self);
    return to_prometheus(view);
}

}  // namespace corgi::stats
