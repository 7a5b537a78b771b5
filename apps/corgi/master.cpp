// The master's loop: signals arrive through a self-pipe, workers report readiness through a pipe
// each and everything else through the scoreboard, SIGCHLD reaps them; one poll() waits for all
// of it and for the next timer (a respawn after backoff, a straggler's kill, the periodic checks).
#include "master.hpp"

#include "systemd.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <system_error>

extern char** environ;

namespace corgi::master {

namespace {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A crash-looping worker is respawned after 0.1 s, then 0.2 s, ... up to 10 s; a worker that
// stayed up this long before dying resets the delay.
constexpr auto backoff_initial = 100ms;
constexpr auto backoff_max = 10s;
constexpr auto healthy_lifetime = 10s;
// After graceful_timeout the worker closes its busy connections itself; this is its time to exit.
constexpr auto kill_margin = 1s;
// A hung worker gets SIGABRT (Python's faulthandler writes every thread's stack to stderr), then
// SIGKILL this long after if it is still there.
constexpr auto abort_to_kill = 5s;
// Memory and lifetime are checked this often; heartbeats and wishes at every wake-up (<= 1 s).
constexpr auto rss_check_interval = 1s;
// The copy of the binary that checks the configuration before a re-exec gets this long.
constexpr auto config_check_timeout = 30s;

constexpr const char* state_env = "CORGI_MASTER_STATE";
// Workers at most at once: the target (TTIN can raise it) plus the ones still draining.
constexpr std::size_t scoreboard_slots = 2048;

int signal_pipe[2] = {-1, -1};
// Workers write a byte here after they publish a wish in the scoreboard (inherited across the
// master's re-exec: the workers keep the write end).
int wake_pipe[2] = {-1, -1};

extern "C" void on_signal(int sig) {
    const int saved = errno;
    const unsigned char byte = static_cast<unsigned char>(sig);
    [[maybe_unused]] ssize_t n = ::write(signal_pipe[1], &byte, 1);
    errno = saved;
}

extern "C" void quit_now(int) { ::_exit(0); }

constexpr int handled_signals[] = {SIGTERM, SIGINT,  SIGQUIT, SIGHUP,
                                   SIGTTIN, SIGTTOU, SIGCHLD, SIGUSR1};

sigset_t handled_set() {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : handled_signals) sigaddset(&set, sig);
    return set;
}

// One line on stderr in one write, so lines of the master and of its workers do not interleave.
void say(const std::string& message) {
    const std::string line = "corgi: " + message + "\n";
    std::size_t off = 0;
    while (off < line.size()) {
        ssize_t n = ::write(STDERR_FILENO, line.data() + off, line.size() - off);
        if (n <= 0) return;
        off += static_cast<std::size_t>(n);
    }
}

std::string describe_status(int status) {
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        std::string s = "signal " + std::to_string(sig);
        if (const char* name = ::sigabbrev_np(sig)) s += std::string(" (SIG") + name + ")";
        if (sig == SIGKILL) s += ", perhaps by the OOM killer";
        return s;
    }
    return "exit status " + std::to_string(WEXITSTATUS(status));
}

std::string seconds_text(clock::duration d) {
    std::ostringstream out;
    out.precision(3);
    out << std::chrono::duration<double>(d).count() << " s";
    return out.str();
}

clock::time_point from_ns(std::uint64_t ns) {
    // steady_clock is CLOCK_MONOTONIC on Linux: the same clock in every process.
    return clock::time_point(
        std::chrono::duration_cast<clock::duration>(std::chrono::nanoseconds(ns)));
}
std::uint64_t to_ns(clock::time_point t) {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}

void set_cloexec(int fd, bool on) {
    int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0) return;
    ::fcntl(fd, F_SETFD, on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC);
}

std::uint64_t rss_bytes(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/statm");
    std::uint64_t size = 0, resident = 0;
    if (!(in >> size >> resident)) return 0;
    return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

struct worker {
    pid_t pid = 0;
    std::size_t slot = 0;
    int ready_fd = -1;  // read end of the readiness pipe, -1 once read or closed
    bool ready = false;
    bool retiring = false;  // told to stop: its exit is expected, not respawned
    bool queued = false;    // waiting in the replacement queue
    restart_cause queued_cause = restart_cause::reload;  // counted once it is retired for it
    bool boot_timed_out = false;
    clock::time_point started;
    clock::time_point ready_at;
    std::optional<clock::time_point> kill_at;   // retiring: SIGKILL then
    std::optional<clock::time_point> abort_at;  // hung: SIGABRT sent then
};

class supervisor {
  public:
    supervisor(const options& opts, const worker_body& body)
        : opts_(opts), body_(body), target_(std::max<std::size_t>(1, opts.workers)) {}

    int run() {
        if (::pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
            say(std::string("cannot create the signal pipe: ") + std::strerror(errno));
            return 1;
        }
        struct sigaction sa {};
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_NOCLDSTOP;
        for (int sig : handled_signals) ::sigaction(sig, &sa, nullptr);
        // A re-executed master starts with these blocked (see reexec): what arrived meanwhile is
        // delivered now, into the new pipe.
        const sigset_t set = handled_set();
        ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
        try {
            write_pidfile(opts_.pidfile);
        } catch (const std::system_error& e) {
            say(e.what());
            pidfile_written_ = false;
            cleanup();
            return 1;
        }
        try {
            if (opts_.inherited) {
                board_.emplace(opts_.inherited->scoreboard_fd, opts_.inherited->scoreboard_slots);
                wake_pipe[0] = opts_.inherited->wake_read_fd;
                wake_pipe[1] = opts_.inherited->wake_write_fd;
            } else {
                board_.emplace(scoreboard_slots);
                if (::pipe2(wake_pipe, O_NONBLOCK) != 0)
                    throw std::system_error(errno, std::generic_category(), "pipe");
            }
            set_cloexec(board_->fd(), true);
            set_cloexec(wake_pipe[0], true);
            set_cloexec(wake_pipe[1], true);
        } catch (const std::system_error& e) {
            say(e.what());
            cleanup();
            return 1;
        }
        if (opts_.stats_fd >= 0) {
            set_cloexec(opts_.stats_fd, true);
            stats_sources sources;
            sources.board = &*board_;
            sources.io_threads = opts_.io_threads;
            sources.server_pid = ::getpid();
            for (const auto& l : opts_.listeners)
                sources.sockets.push_back({l.fd, l.address, l.protocol});
            stats_.emplace(opts_.stats_fd, opts_.stats_http, std::move(sources));
        }
        next_spawn_at_ = clock::now();
        if (opts_.inherited) {
            adopt_workers(*opts_.inherited);
        } else {
            say("master " + std::to_string(::getpid()) + ", " + std::to_string(target_) +
                " workers");
        }
        loop();
        cleanup();
        return exit_code_;
    }

  private:
    void adopt_workers(const inherited_state& st) {
        booted_ = st.booted;
        for (const auto& iw : st.workers) {
            worker w;
            w.pid = iw.pid;
            w.slot = iw.slot;
            w.ready = iw.ready;
            w.retiring = iw.retiring;
            w.ready_fd = iw.ready_fd;
            if (w.ready_fd >= 0) set_cloexec(w.ready_fd, true);
            w.started = from_ns(iw.started_ns);
            w.ready_at = clock::now();
            if (iw.kill_at_ns) w.kill_at = from_ns(iw.kill_at_ns);
            workers_.push_back(w);
        }
        announced_ready_ = true;  // the first generation was announced by the previous image
        if (!opts_.cannot_spawn.empty()) {
            say("master " + std::to_string(::getpid()) + " re-executed; the " +
                std::to_string(live_count()) + " running workers keep serving");
            systemd::notify_ready(
                "reload failed (the apps do not import), the old workers keep "
                "serving; " +
                worker_counts());
            return;
        }
        say("master " + std::to_string(::getpid()) + " re-executed with the new configuration " +
            "and code, " + std::to_string(target_) + " workers; replacing the " +
            std::to_string(live_count()) + " running ones one at a time");
        for (auto& w : workers_)
            if (!w.retiring) queue_replacement(w, "reload", restart_cause::reload);
        replacing_for_reload_ = true;
        reload_step();
    }

    void loop() {
        for (;;) {
            reap();
            if (stopping_ && workers_.empty()) return;
            const auto now = clock::now();
            if (!stopping_) {
                manage(now);
                check_workers(now);
                if (reexec_pending_ && !reload_new_ && replace_queue_.empty()) reexec();
            }
            kill_stragglers(now);
            systemd::watchdog_tick(now);

            std::vector<pollfd> fds;
            fds.push_back({signal_pipe[0], POLLIN, 0});
            fds.push_back({wake_pipe[0], POLLIN, 0});
            for (const auto& w : workers_)
                if (w.ready_fd >= 0) fds.push_back({w.ready_fd, POLLIN, 0});
            const std::size_t ready_end = fds.size();
            int timeout = poll_timeout_ms(clock::now());
            if (stats_) {
                stats_->add_poll_fds(fds);
                if (const int t = stats_->timeout_ms(); t >= 0) timeout = std::min(timeout, t);
            }
            int r = ::poll(fds.data(), fds.size(), timeout);
            if (r < 0 && errno != EINTR) {
                say(std::string("poll failed: ") + std::strerror(errno));
                begin_quick_stop();
                continue;
            }
            if (r < 0) continue;  // EINTR; on a timeout (0) the stats server still sweeps
            if (fds[0].revents & POLLIN) read_signals();
            if (fds[1].revents & POLLIN) drain(wake_pipe[0]);  // the next pass checks the wishes
            for (std::size_t i = 2; i < ready_end; ++i)
                if (fds[i].revents) read_ready(fds[i].fd);
            if (stats_) stats_->handle(fds, ready_end);
        }
    }

    int poll_timeout_ms(clock::time_point now) const {
        auto wake = now + 1s;
        if (!stopping_ && live_count() < wanted()) wake = std::min(wake, next_spawn_at_);
        for (const auto& w : workers_) {
            if (w.kill_at) wake = std::min(wake, *w.kill_at);
            if (w.abort_at) wake = std::min(wake, *w.abort_at + abort_to_kill);
        }
        wake = std::min(wake, systemd::watchdog_due());
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count();
        return static_cast<int>(std::clamp<long long>(ms + 1, 0, 1000));
    }

    std::size_t live_count() const {
        return static_cast<std::size_t>(std::count_if(workers_.begin(), workers_.end(),
                                                      [](const worker& w) { return !w.retiring; }));
    }
    // During a replacement the new worker is one more than the target until it is ready.
    std::size_t wanted() const { return target_ + (reload_new_ ? 1 : 0); }

    worker* find(pid_t pid) {
        auto it = std::find_if(workers_.begin(), workers_.end(),
                               [pid](const worker& w) { return w.pid == pid; });
        return it == workers_.end() ? nullptr : &*it;
    }

    void manage(clock::time_point now) {
        while (live_count() < wanted() && now >= next_spawn_at_) {
            if (!spawn()) {
                next_spawn_at_ = now + backoff_;
                backoff_ = std::min<clock::duration>(backoff_ * 2, backoff_max);
                break;
            }
        }
        while (live_count() > wanted()) {
            // TTOU: the oldest goes, as in Gunicorn.
            worker* oldest = nullptr;
            for (auto& w : workers_)
                if (!w.retiring && w.pid != reload_new_ && (!oldest || w.started < oldest->started))
                    oldest = &w;
            if (!oldest) break;
            retire(*oldest, now);
        }
    }

    // Boot timeouts, hung workers, and the reasons to recycle one: its own wish (max requests, a
    // stuck request), its memory, its age.
    void check_workers(clock::time_point now) {
        const bool check_rss = opts_.max_rss_mb && now >= next_rss_check_;
        if (check_rss) next_rss_check_ = now + rss_check_interval;
        for (auto& w : workers_) {
            if (!w.ready) {
                if (!w.boot_timed_out && now - w.started > opts_.boot_timeout) {
                    say("worker " + std::to_string(w.pid) + " not ready after " +
                        seconds_text(now - w.started) + " (--boot-timeout); killing it");
                    w.boot_timed_out = true;
                    ::kill(w.pid, SIGKILL);
                }
                continue;
            }
            if (w.retiring) continue;
            check_liveness(w, now);
            worker_slot& slot = board_->at(w.slot);
            if (const auto wish = slot.replacement.load(std::memory_order_acquire);
                wish && !w.queued) {
                const bool stuck = wish - 1 == static_cast<std::uint32_t>(
                                                   supervision::replacement_reason::stuck_request);
                queue_replacement(
                    w,
                    stuck ? "stuck request: " + slot.replacement_detail()
                          : slot.replacement_detail(),
                    stuck ? restart_cause::stuck_request : restart_cause::max_requests);
            }
            if (!w.queued && opts_.max_worker_lifetime.count() &&
                now - w.started >= opts_.max_worker_lifetime)
                queue_replacement(
                    w, "up for " + seconds_text(now - w.started) + " (--max-worker-lifetime)",
                    restart_cause::max_worker_lifetime);
            if (check_rss && !w.queued) {
                const std::uint64_t rss = rss_bytes(w.pid);
                if (rss > opts_.max_rss_mb * 1024 * 1024)
                    queue_replacement(w,
                                      std::to_string(rss / (1024 * 1024)) +
                                          " MB resident (--max-rss " +
                                          std::to_string(opts_.max_rss_mb) + ")",
                                      restart_cause::max_rss);
            }
        }
        if (!reload_new_ && !replace_queue_.empty() && now >= retry_replacement_at_) reload_step();
    }

    void check_liveness(worker& w, clock::time_point now) {
        if (opts_.worker_timeout.count() == 0) return;
        if (w.abort_at) {
            if (now >= *w.abort_at + abort_to_kill) {
                say("worker " + std::to_string(w.pid) + " still there after SIGABRT; killing it");
                ::kill(w.pid, SIGKILL);
                w.abort_at = now + 1h;  // once
            }
            return;
        }
        const worker_slot& slot = board_->at(w.slot);
        const std::size_t threads = std::min<std::size_t>(
            slot.io_threads.load(std::memory_order_relaxed), worker_slot::max_heartbeats);
        for (std::size_t i = 0; i < threads; ++i) {
            const clock::time_point beat =
                std::max(from_ns(slot.heartbeat_ns[i].load(std::memory_order_relaxed)), w.ready_at);
            if (now - beat > opts_.worker_timeout) {
                say("worker " + std::to_string(w.pid) + ": io thread " + std::to_string(i) +
                    " has not checked in for " + seconds_text(now - beat) +
                    " (--worker-timeout), with " +
                    std::to_string(slot.in_flight.load(std::memory_order_relaxed)) +
                    " requests in flight; SIGABRT (stacks follow), then SIGKILL");
                ::kill(w.pid, SIGABRT);
                w.abort_at = now;
                return;
            }
        }
    }

    void queue_replacement(worker& w, const std::string& why, restart_cause cause) {
        if (w.queued || w.retiring) return;
        w.queued = true;
        w.queued_cause = cause;
        replace_queue_.push_back(w.pid);
        if (why != "reload") say("worker " + std::to_string(w.pid) + " to be replaced: " + why);
    }

    void count_restart(restart_cause cause) {
        board_->header().restarts[static_cast<std::size_t>(cause)].fetch_add(
            1, std::memory_order_relaxed);
    }

    std::size_t free_slot() const {
        std::vector<bool> used(board_->size(), false);
        for (const auto& w : workers_) used[w.slot] = true;
        for (std::size_t i = 0; i < used.size(); ++i)
            if (!used[i]) return i;
        return used.size();
    }

    bool spawn() {
        if (!opts_.cannot_spawn.empty()) {
            say("cannot start a worker: " + opts_.cannot_spawn);
            return false;
        }
        const std::size_t slot = free_slot();
        if (slot >= board_->size()) {
            say("cannot start a worker: every scoreboard slot is taken");
            return false;
        }
        std::uint64_t limit = opts_.max_requests;
        if (limit && opts_.max_requests_jitter)
            limit +=
                std::uniform_int_distribution<std::uint64_t>(0, opts_.max_requests_jitter)(rng_);
        board_->at(slot).reset(limit);
        board_->at(slot).io_threads.store(static_cast<std::uint32_t>(opts_.io_threads),
                                          std::memory_order_relaxed);
        int ready_pipe[2];
        if (::pipe2(ready_pipe, O_CLOEXEC) != 0) {
            say(std::string("cannot create a pipe for a worker: ") + std::strerror(errno));
            return false;
        }
        const pid_t master_pid = ::getpid();
        if (opts_.before_fork) opts_.before_fork();
        const pid_t pid = ::fork();
        if (pid != 0 && opts_.after_fork_in_parent) opts_.after_fork_in_parent();
        if (pid < 0) {
            say(std::string("cannot fork a worker: ") + std::strerror(errno));
            ::close(ready_pipe[0]);
            ::close(ready_pipe[1]);
            return false;
        }
        if (pid == 0) worker_process(master_pid, slot, ready_pipe[0], ready_pipe[1]);
        ::close(ready_pipe[1]);
        worker_slot& ws = board_->at(slot);
        ws.pid.store(pid, std::memory_order_release);
        ws.respawn_count.fetch_add(1, std::memory_order_relaxed);
        ws.last_spawn.store(static_cast<std::int64_t>(::time(nullptr)), std::memory_order_relaxed);
        auto& used = board_->header().slots_used;
        if (used.load(std::memory_order_relaxed) < slot + 1)
            used.store(slot + 1, std::memory_order_release);
        worker w;
        w.pid = pid;
        w.slot = slot;
        w.ready_fd = ready_pipe[0];
        w.started = clock::now();
        workers_.push_back(w);
        return true;
    }

    [[noreturn]] void worker_process(pid_t master_pid, std::size_t slot, int read_end,
                                     int write_end) {
        // Dies with the master, even when the master is SIGKILLed; getppid() closes the race with a
        // master that died before prctl.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != master_pid) ::_exit(1);
        if (opts_.after_fork_in_child) opts_.after_fork_in_child();
        ::close(read_end);
        ::close(signal_pipe[0]);
        ::close(signal_pipe[1]);
        for (const auto& w : workers_)
            if (w.ready_fd >= 0) ::close(w.ready_fd);
        // The master's handlers are inherited by fork: a worker stops on SIGTERM (its server
        // installs that), quits at once on SIGQUIT, reopens its logs on SIGUSR1 (main.cpp), and
        // leaves SIGINT (a terminal's Ctrl-C reaches the whole group; the master forwards it as
        // SIGTERM), SIGHUP, SIGTTIN and SIGTTOU to the master.
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        for (int sig : handled_signals) ::sigaction(sig, &dfl, nullptr);
        struct sigaction ign = dfl;
        ign.sa_handler = SIG_IGN;
        for (int sig : {SIGINT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1}) ::sigaction(sig, &ign, nullptr);
        struct sigaction quit = dfl;
        quit.sa_handler = quit_now;
        ::sigaction(SIGQUIT, &quit, nullptr);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);

        ::close(wake_pipe[0]);
        if (stats_) stats_->close_in_child();
        static slot_channel channel(board_->at(slot), wake_pipe[1]);
        supervision::install(&channel);
        // What this worker serves is counted in its slot; its {"metrics": true} routes render
        // the whole server from the scoreboard, as the master's stats listener does.
        stats::use_table(&board_->at(slot).table);
        static stats_sources exposition_sources;
        exposition_sources.board = &*board_;
        exposition_sources.io_threads = opts_.io_threads;
        exposition_sources.server_pid = master_pid;
        for (const auto& l : opts_.listeners)
            exposition_sources.sockets.push_back({l.fd, l.address, l.protocol});
        install_exposition(&exposition_sources);
        int code = 1;
        try {
            code = body_([write_end] {
                const char byte = 'r';
                [[maybe_unused]] ssize_t n = ::write(write_end, &byte, 1);
                ::close(write_end);
            });
        } catch (const std::exception& e) {
            std::cerr << "corgi: worker " << ::getpid() << ": " << e.what() << "\n";
        } catch (...) {
            std::cerr << "corgi: worker " << ::getpid() << " failed\n";
        }
        std::cout.flush();
        std::cerr.flush();
        std::fflush(nullptr);
        ::_exit(code);
    }

    void read_ready(int fd) {
        auto it = std::find_if(workers_.begin(), workers_.end(),
                               [fd](const worker& w) { return w.ready_fd == fd; });
        if (it == workers_.end()) return;
        char byte = 0;
        ssize_t n = ::read(fd, &byte, 1);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
        ::close(fd);
        it->ready_fd = -1;
        if (n != 1) return;  // it closed the pipe without being ready: SIGCHLD follows
        it->ready = true;
        it->ready_at = clock::now();
        board_->at(it->slot).accepting.store(1, std::memory_order_relaxed);
        booted_ = true;
        say("worker " + std::to_string(it->pid) + " ready");
        if (it->pid != reload_new_) notify_worker_counts();  // a replacement reports its end
        if (it->pid == reload_new_) {
            reload_new_ = 0;
            backoff_replacement_ = backoff_initial;
            if (!replace_queue_.empty()) {
                pid_t old = replace_queue_.front();
                replace_queue_.erase(replace_queue_.begin());
                if (worker* w = find(old); w && !w->retiring) retire(*w, clock::now());
            }
            reload_step();
        }
    }

    static void drain(int fd) {
        char buf[256];
        while (::read(fd, buf, sizeof buf) > 0) {
        }
    }

    void read_signals() {
        unsigned char buf[64];
        for (;;) {
            ssize_t n = ::read(signal_pipe[0], buf, sizeof buf);
            if (n <= 0) return;
            for (ssize_t i = 0; i < n; ++i) on_signal_byte(buf[i]);
        }
    }

    void on_signal_byte(int sig) {
        const auto now = clock::now();
        switch (sig) {
            case SIGCHLD:
                break;  // the loop reaps
            case SIGTERM:
            case SIGINT:
                if (stopping_) break;
                say(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                    ", stopping the workers gracefully");
                begin_graceful_stop(now);
                break;
            case SIGQUIT:
                say("received SIGQUIT, stopping now");
                begin_quick_stop();
                break;
            case SIGTTIN:
                if (stopping_) break;
                ++target_;
                say("received SIGTTIN, " + std::to_string(target_) + " workers");
                notify_worker_counts();
                break;
            case SIGTTOU:
                if (stopping_) break;
                if (target_ > 1) --target_;
                say("received SIGTTOU, " + std::to_string(target_) + " workers");
                notify_worker_counts();
                break;
            case SIGUSR1:
                say("received SIGUSR1, reopening the log files");
                if (opts_.reopen_logs) opts_.reopen_logs();
                for (const auto& w : workers_) ::kill(w.pid, SIGUSR1);
                break;
            case SIGHUP:
                if (stopping_) break;
                if (reexec_pending_ || replacing_for_reload_) {
                    say("received SIGHUP, a reload is already in progress");
                    break;
                }
                if (!opts_.argv.empty()) {
                    say("received SIGHUP, reloading the configuration and the code");
                    reexec_pending_ = true;  // once no replacement is under way (loop)
                    break;
                }
                say("received SIGHUP, replacing the workers one at a time");
                systemd::notify_reloading("replacing " + std::to_string(live_count()) +
                                          " workers one at a time");
                for (auto& w : workers_)
                    if (!w.retiring) queue_replacement(w, "reload", restart_cause::reload);
                replacing_for_reload_ = true;
                reload_step();
                break;
            default:
                break;
        }
    }

    // The next old worker to replace: start its successor; the old one is told to stop once the
    // new one is ready.
    void reload_step() {
        while (!replace_queue_.empty()) {
            worker* w = find(replace_queue_.front());
            if (w && !w->retiring) break;
            replace_queue_.erase(replace_queue_.begin());  // died meanwhile: already respawned
        }
        if (replace_queue_.empty()) {
            if (replacing_for_reload_) {
                say("every worker replaced");
                systemd::notify_ready("every worker replaced; " + worker_counts());
            }
            replacing_for_reload_ = false;
            return;
        }
        if (clock::now() < retry_replacement_at_) return;
        if (!spawn()) {
            say("replacement postponed: cannot start a new worker");
            if (replacing_for_reload_)
                systemd::notify_ready(
                    "reload abandoned (cannot start a new worker), the old "
                    "workers keep serving; " +
                    worker_counts());
            postpone_replacements();
            return;
        }
        reload_new_ = workers_.back().pid;
    }

    // A successor failed to boot: the old workers keep serving; their replacement (a recycle) is
    // tried again after a backoff, a reload is abandoned.
    void postpone_replacements() {
        if (replacing_for_reload_) {
            for (auto& w : workers_) w.queued = false;
            replace_queue_.clear();
            replacing_for_reload_ = false;
            return;
        }
        retry_replacement_at_ = clock::now() + backoff_replacement_;
        backoff_replacement_ = std::min<clock::duration>(backoff_replacement_ * 2, backoff_max);
    }

    // HUP with a command line to run again: check the new configuration with a copy of the
    // binary, then execve this process (same pid: the service manager's MAINPID and the workers'
    // parent stay) with the sockets, the scoreboard and the workers described in the environment.
    void reexec() {
        reexec_pending_ = false;
        if (!configuration_checks_out()) {
            say("reload refused: the new configuration has errors (above); the workers keep " +
                std::string("serving"));
            return;
        }
        const sigset_t set = handled_set();
        sigset_t old;
        ::sigprocmask(SIG_BLOCK, &set, &old);
        // What arrived before the block is in the pipe: a stop wins over the reload.
        read_signals();
        if (stopping_) {
            ::sigprocmask(SIG_SETMASK, &old, nullptr);
            return;
        }
        std::ostringstream state;
        for (const auto& l : opts_.listeners)
            state << "listener " << l.fd << " " << l.protocol << " " << l.address << ";";
        for (const auto& path : opts_.unix_paths) state << "unlink " << path << ";";
        state << "board " << board_->fd() << " " << board_->size() << ";";
        state << "wake " << wake_pipe[0] << " " << wake_pipe[1] << ";";
        for (const auto& w : workers_)
            state << "worker " << w.pid << " " << w.slot << " " << to_ns(w.started) << " "
                  << w.ready << " " << w.retiring << " " << (w.kill_at ? to_ns(*w.kill_at) : 0)
                  << " " << w.ready_fd << ";";
        state << "booted " << booted_ << ";";
        if (opts_.stats_fd >= 0) state << "stats " << opts_.stats_fd << ";";
        std::vector<int> kept;
        for (const auto& l : opts_.listeners) kept.push_back(l.fd);
        kept.push_back(board_->fd());
        kept.push_back(wake_pipe[0]);
        kept.push_back(wake_pipe[1]);
        if (opts_.stats_fd >= 0) kept.push_back(opts_.stats_fd);
        for (const auto& w : workers_)
            if (w.ready_fd >= 0) kept.push_back(w.ready_fd);
        for (int fd : kept) set_cloexec(fd, false);
        ::setenv(state_env, state.str().c_str(), 1);
        systemd::notify_reloading("reloading: re-executing the master, then replacing " +
                                  std::to_string(live_count()) + " workers one at a time");
        systemd::export_notify_environment();  // the new image speaks to systemd too
        std::vector<char*> argv;
        for (const auto& a : opts_.argv) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        say("re-executing the master (pid " + std::to_string(::getpid()) + " stays)");
        std::cout.flush();
        std::cerr.flush();
        std::fflush(nullptr);
        ::execve("/proc/self/exe", argv.data(), environ);
        const int e = errno;
        ::unsetenv(state_env);
        systemd::unexport_notify_environment();
        for (int fd : kept) set_cloexec(fd, true);
        ::sigprocmask(SIG_SETMASK, &old, nullptr);
        say(std::string("cannot re-execute the master: ") + std::strerror(e) +
            "; replacing the workers without reloading the master");
        for (auto& w : workers_)
            if (!w.retiring) queue_replacement(w, "reload", restart_cause::reload);
        replacing_for_reload_ = true;
        reload_step();
    }

    bool configuration_checks_out() {
        const pid_t pid = ::fork();
        if (pid < 0) {
            say(std::string("cannot fork to check the configuration: ") + std::strerror(errno));
            return false;
        }
        if (pid == 0) {
            ::setenv(check_config_env, "1", 1);
            std::vector<char*> argv;
            for (const auto& a : opts_.argv) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            ::execve("/proc/self/exe", argv.data(), environ);
            ::_exit(127);
        }
        const auto deadline = clock::now() + config_check_timeout;
        for (;;) {
            int status = 0;
            pid_t r = ::waitpid(pid, &status, WNOHANG);
            if (r == pid) return WIFEXITED(status) && WEXITSTATUS(status) == 0;
            if (r < 0 && errno != EINTR) return false;
            if (clock::now() > deadline) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, &status, 0);
                say("the configuration check did not finish in time");
                return false;
            }
            ::usleep(10000);
        }
    }

    void retire(worker& w, clock::time_point now) {
        // A recycle or reload counts when it happens: not when it was queued (a reload may be
        // abandoned), nor twice for a queued worker that crashes first (counted as a crash).
        if (w.queued && !stopping_) count_restart(w.queued_cause);
        w.retiring = true;
        w.kill_at = now + opts_.graceful_timeout + kill_margin;
        ::kill(w.pid, SIGTERM);
    }

    void begin_graceful_stop(clock::time_point now) {
        systemd::notify_stopping("stopping " + std::to_string(live_count()) +
                                 " workers gracefully");
        stopping_ = true;
        replace_queue_.clear();
        reload_new_ = 0;
        reexec_pending_ = false;
        for (auto& w : workers_)
            if (!w.retiring) retire(w, now);
    }

    void begin_quick_stop() {
        systemd::notify_stopping("stopping now");
        stopping_ = true;
        replace_queue_.clear();
        reload_new_ = 0;
        reexec_pending_ = false;
        for (auto& w : workers_) {
            w.retiring = true;
            w.kill_at.reset();
            ::kill(w.pid, SIGKILL);
        }
    }

    void kill_stragglers(clock::time_point now) {
        for (auto& w : workers_)
            if (w.kill_at && now >= *w.kill_at) {
                say("worker " + std::to_string(w.pid) + " still running after the graceful " +
                    "timeout; killing it");
                ::kill(w.pid, SIGKILL);
                w.kill_at.reset();
            }
    }

    void reap() {
        for (;;) {
            int status = 0;
            pid_t pid = ::waitpid(-1, &status, WNOHANG);
            if (pid <= 0) return;
            auto it = std::find_if(workers_.begin(), workers_.end(),
                                   [pid](const worker& w) { return w.pid == pid; });
            if (it == workers_.end()) continue;
            worker w = *it;
            workers_.erase(it);
            if (w.ready_fd >= 0) ::close(w.ready_fd);
            auto q = std::find(replace_queue_.begin(), replace_queue_.end(), w.pid);
            if (q != replace_queue_.end()) replace_queue_.erase(q);
            on_exit(w, status);
            board_->retire_slot(w.slot);
        }
    }

    void on_exit(const worker& w, int status) {
        const std::string who = "worker " + std::to_string(w.pid);
        const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        const std::uint64_t in_flight =
            board_->at(w.slot).in_flight.load(std::memory_order_relaxed);
        const std::string lost =
            in_flight ? ", " + std::to_string(in_flight) + " requests in flight lost" : "";
        if (w.retiring) {
            say(who + (clean ? " stopped" : " stopped (" + describe_status(status) + lost + ")"));
            return;
        }
        if (stopping_) {
            say(who + " exited (" + describe_status(status) + lost + ")");
            return;
        }
        const std::string boot =
            w.boot_timed_out ? "did not become ready in time" : "failed to boot";
        if (!w.ready && !booted_) {
            // The first workers cannot import their apps: respawning would only repeat it.
            say(who + " " + boot + " (" + describe_status(status) + "); stopping");
            exit_code_ = 1;
            begin_graceful_stop(clock::now());
            return;
        }
        if (!w.ready && w.pid == reload_new_) {
            reload_new_ = 0;
            say(who + " " + boot + " (" + describe_status(status) + "); " +
                (replacing_for_reload_ ? "reload abandoned, the old workers keep serving"
                                       : "the worker it replaces keeps serving for now"));
            if (replacing_for_reload_)
                systemd::notify_ready(
                    "reload abandoned (a new worker failed to boot: " + describe_status(status) +
                    "), the old workers keep serving; " + worker_counts());
            postpone_replacements();
            return;
        }
        count_restart(w.abort_at         ? restart_cause::hung
                      : w.boot_timed_out ? restart_cause::boot_timeout
                                         : restart_cause::crash);
        const auto now = clock::now();
        if (now - w.started >= healthy_lifetime) backoff_ = backoff_initial;
        next_spawn_at_ = now + backoff_;
        notify_worker_counts();
        say(who + " exited (" + describe_status(status) + lost + "); respawning" +
            (backoff_ > backoff_initial
                 ? " in " +
                       std::to_string(
                           std::chrono::duration_cast<std::chrono::milliseconds>(backoff_)
                               .count()) +
                       " ms"
                 : std::string()));
        backoff_ = std::min<clock::duration>(backoff_ * 2, backoff_max);
    }

    // systemd (Type=notify): READY=1 once the first generation is ready, then the worker counts
    // as STATUS= after each change.
    std::size_t ready_count() const {
        return static_cast<std::size_t>(
            std::count_if(workers_.begin(), workers_.end(),
                          [](const worker& w) { return w.ready && !w.retiring; }));
    }
    std::string worker_counts() const {
        return std::to_string(ready_count()) + " workers ready, " + std::to_string(target_) +
               " wanted";
    }
    void notify_worker_counts() {
        if (!systemd::notify_enabled() || stopping_) return;
        const std::string status = worker_counts();
        if (!announced_ready_ && ready_count() >= target_) {
            announced_ready_ = true;
            systemd::notify_ready(status);
        } else {
            systemd::notify_status(status);
        }
    }

    void cleanup() {
        stats_.reset();
        for (const auto& l : opts_.listeners) ::close(l.fd);
        for (const auto& path : opts_.unix_paths) ::unlink(path.c_str());
        if (pidfile_written_ && !opts_.pidfile.empty()) ::unlink(opts_.pidfile.c_str());
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        for (int sig : handled_signals) ::sigaction(sig, &dfl, nullptr);
        ::close(signal_pipe[0]);
        ::close(signal_pipe[1]);
        signal_pipe[0] = signal_pipe[1] = -1;
        if (wake_pipe[0] >= 0) ::close(wake_pipe[0]);
        if (wake_pipe[1] >= 0) ::close(wake_pipe[1]);
        wake_pipe[0] = wake_pipe[1] = -1;
        say("stopped");
    }

    const options& opts_;
    // A pidfile we could not write may be another server's: it is not ours to remove.
    bool pidfile_written_ = true;
    const worker_body& body_;
    std::size_t target_;
    std::optional<scoreboard> board_;
    std::optional<stats_server> stats_;
    std::vector<worker> workers_;
    clock::time_point next_spawn_at_;
    clock::duration backoff_ = backoff_initial;
    clock::time_point next_rss_check_;
    clock::time_point retry_replacement_at_;
    clock::duration backoff_replacement_ = backoff_initial;
    std::mt19937_64 rng_{std::random_device{}()};
    bool booted_ = false;  // some worker has been ready: startup is over
    bool stopping_ = false;
    bool reexec_pending_ = false;
    bool replacing_for_reload_ = false;
    bool announced_ready_ = false;  // READY=1 sent for the first generation
    int exit_code_ = 0;
    std::vector<pid_t> replace_queue_;  // old workers still to replace, in order
    pid_t reload_new_ = 0;              // the replacement booting now
};

std::vector<std::string> split(const std::string& text, char sep) {
    std::vector<std::string> out;
    std::string item;
    std::istringstream in(text);
    while (std::getline(in, item, sep))
        if (!item.empty()) out.push_back(item);
    return out;
}

}  // namespace

std::optional<inherited_state> take_inherited_state() {
    const char* text = std::getenv(state_env);
    if (!text) return std::nullopt;
    const std::string copy = text;
    ::unsetenv(state_env);  // not for the workers, nor for a master started by them
    inherited_state st;
    for (const auto& record : split(copy, ';')) {
        std::istringstream in(record);
        std::string kind;
        in >> kind;
        if (kind == "listener") {
            inherited_state::listener l;
            in >> l.fd >> l.protocol;
            std::getline(in >> std::ws, l.address);
            st.listeners.push_back(l);
        } else if (kind == "unlink") {
            std::string path;
            std::getline(in >> std::ws, path);
            st.unix_paths.push_back(path);
        } else if (kind == "board") {
            in >> st.scoreboard_fd >> st.scoreboard_slots;
        } else if (kind == "worker") {
            inherited_state::worker w;
            in >> w.pid >> w.slot >> w.started_ns >> w.ready >> w.retiring >> w.kill_at_ns >>
                w.ready_fd;
            st.workers.push_back(w);
        } else if (kind == "wake") {
            in >> st.wake_read_fd >> st.wake_write_fd;
        } else if (kind == "booted") {
            in >> st.booted;
        } else if (kind == "stats") {
            in >> st.stats_fd;
        }
        if (in.fail())
            throw std::runtime_error(std::string("malformed ") + state_env + ": " + record);
    }
    if (st.scoreboard_fd < 0 || st.wake_read_fd < 0 || st.listeners.empty())
        throw std::runtime_error(std::string("malformed ") + state_env);
    return st;
}

void write_pidfile(const std::string& path) {
    if (path.empty()) return;
    std::ofstream out(path, std::ios::trunc);
    out << ::getpid() << "\n";
    out.flush();
    if (!out)
        throw std::system_error(errno ? errno : EIO, std::generic_category(),
                                "cannot write the pidfile " + path);
}

int run(const options& opts, const worker_body& body) { return supervisor(opts, body).run(); }

}  // namespace corgi::master
