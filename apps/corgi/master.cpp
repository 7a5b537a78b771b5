// The master's loop: signals arrive through a self-pipe, workers report readiness through a pipe
// each, SIGCHLD reaps them; one poll() waits for all of it and for the next timer (a respawn
// after backoff, a straggler's kill).
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
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <system_error>

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

int signal_pipe[2] = {-1, -1};

extern "C" void on_signal(int sig) {
    const int saved = errno;
    const unsigned char byte = static_cast<unsigned char>(sig);
    [[maybe_unused]] ssize_t n = ::write(signal_pipe[1], &byte, 1);
    errno = saved;
}

extern "C" void quit_now(int) { ::_exit(0); }

constexpr int handled_signals[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGCHLD};

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
    if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
    return "exit status " + std::to_string(WEXITSTATUS(status));
}

struct worker {
    pid_t pid = 0;
    int ready_fd = -1;  // read end of the readiness pipe, -1 once read or closed
    bool ready = false;
    bool retiring = false;  // told to stop: its exit is expected, not respawned
    clock::time_point started;
    std::optional<clock::time_point> kill_at;  // retiring: SIGKILL then
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
        try {
            write_pidfile(opts_.pidfile);
        } catch (const std::system_error& e) {
            say(e.what());
            pidfile_written_ = false;
            cleanup();
            return 1;
        }
        say("master " + std::to_string(::getpid()) + ", " + std::to_string(target_) + " workers");
        next_spawn_at_ = clock::now();
        loop();
        cleanup();
        return exit_code_;
    }

  private:
    void loop() {
        for (;;) {
            reap();
            if (stopping_ && workers_.empty()) return;
            const auto now = clock::now();
            if (!stopping_) manage(now);
            kill_stragglers(now);
            systemd::watchdog_tick(now);

            std::vector<pollfd> fds;
            fds.push_back({signal_pipe[0], POLLIN, 0});
            for (const auto& w : workers_)
                if (w.ready_fd >= 0) fds.push_back({w.ready_fd, POLLIN, 0});
            int r = ::poll(fds.data(), fds.size(), poll_timeout_ms(clock::now()));
            if (r < 0 && errno != EINTR) {
                say(std::string("poll failed: ") + std::strerror(errno));
                begin_quick_stop();
                continue;
            }
            if (r <= 0) continue;
            if (fds[0].revents & POLLIN) read_signals();
            for (std::size_t i = 1; i < fds.size(); ++i)
                if (fds[i].revents) read_ready(fds[i].fd);
        }
    }

    int poll_timeout_ms(clock::time_point now) const {
        auto wake = now + 1s;
        if (!stopping_ && live_count() < wanted()) wake = std::min(wake, next_spawn_at_);
        for (const auto& w : workers_)
            if (w.kill_at) wake = std::min(wake, *w.kill_at);
        wake = std::min(wake, systemd::watchdog_due());
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count();
        return static_cast<int>(std::clamp<long long>(ms + 1, 0, 1000));
    }

    std::size_t live_count() const {
        return static_cast<std::size_t>(std::count_if(workers_.begin(), workers_.end(),
                                                      [](const worker& w) { return !w.retiring; }));
    }
    // During a rolling replacement the new worker is one more than the target until it is ready.
    std::size_t wanted() const { return target_ + (reload_new_ ? 1 : 0); }

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

    bool spawn() {
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
        if (pid == 0) worker_process(master_pid, ready_pipe[0], ready_pipe[1]);
        ::close(ready_pipe[1]);
        worker w;
        w.pid = pid;
        w.ready_fd = ready_pipe[0];
        w.started = clock::now();
        workers_.push_back(w);
        return true;
    }

    [[noreturn]] void worker_process(pid_t master_pid, int read_end, int write_end) {
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
        // installs that), quits at once on SIGQUIT, and leaves SIGINT (a terminal's Ctrl-C reaches
        // the whole group; the master forwards it as SIGTERM), SIGHUP, SIGTTIN and SIGTTOU to the
        // master.
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        for (int sig : handled_signals) ::sigaction(sig, &dfl, nullptr);
        struct sigaction ign = dfl;
        ign.sa_handler = SIG_IGN;
        for (int sig : {SIGINT, SIGHUP, SIGTTIN, SIGTTOU}) ::sigaction(sig, &ign, nullptr);
        struct sigaction quit = dfl;
        quit.sa_handler = quit_now;
        ::sigaction(SIGQUIT, &quit, nullptr);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);

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
        booted_ = true;
        say("worker " + std::to_string(it->pid) + " ready");
        if (it->pid != reload_new_) notify_worker_counts();  // a replacement reports its end
        if (it->pid == reload_new_) {
            reload_new_ = 0;
            if (!reload_queue_.empty()) {
                pid_t old = reload_queue_.front();
                reload_queue_.erase(reload_queue_.begin());
                for (auto& w : workers_)
                    if (w.pid == old && !w.retiring) retire(w, clock::now());
            }
            reload_step();
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
            case SIGHUP:
                if (stopping_) break;
                if (reload_new_ || !reload_queue_.empty()) {
                    say("received SIGHUP, a replacement is already in progress");
                    break;
                }
                say("received SIGHUP, replacing the workers one at a time");
                systemd::notify_reloading("replacing " + std::to_string(live_count()) +
                                          " workers one at a time");
                for (const auto& w : workers_)
                    if (!w.retiring) reload_queue_.push_back(w.pid);
                reload_step();
                break;
            default:
                break;
        }
    }

    // The next old worker of a rolling replacement: start its successor; the old one is told to
    // stop once the new one is ready.
    void reload_step() {
        while (!reload_queue_.empty()) {
            pid_t old = reload_queue_.front();
            bool alive = std::any_of(workers_.begin(), workers_.end(), [old](const worker& w) {
                return w.pid == old && !w.retiring;
            });
            if (alive) break;
            reload_queue_.erase(reload_queue_.begin());  // died meanwhile: already respawned
        }
        if (reload_queue_.empty()) {
            say("every worker replaced");
            systemd::notify_ready("every worker replaced; " + worker_counts());
            return;
        }
        if (!spawn()) {
            say("replacement aborted: cannot start a new worker");
            systemd::notify_ready(
                "replacement aborted (cannot start a new worker), the old "
                "workers keep serving; " +
                worker_counts());
            reload_queue_.clear();
            return;
        }
        reload_new_ = workers_.back().pid;
    }

    void retire(worker& w, clock::time_point now) {
        w.retiring = true;
        w.kill_at = now + opts_.graceful_timeout + kill_margin;
        ::kill(w.pid, SIGTERM);
    }

    void begin_graceful_stop(clock::time_point now) {
        systemd::notify_stopping("stopping " + std::to_string(live_count()) +
                                 " workers gracefully");
        stopping_ = true;
        reload_queue_.clear();
        reload_new_ = 0;
        for (auto& w : workers_)
            if (!w.retiring) retire(w, now);
    }

    void begin_quick_stop() {
        systemd::notify_stopping("stopping now");
        stopping_ = true;
        reload_queue_.clear();
        reload_new_ = 0;
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
            on_exit(w, status);
        }
    }

    void on_exit(const worker& w, int status) {
        const std::string who = "worker " + std::to_string(w.pid);
        const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (w.retiring) {
            say(who + (clean ? " stopped" : " stopped (" + describe_status(status) + ")"));
            return;
        }
        if (stopping_) {
            say(who + " exited (" + describe_status(status) + ")");
            return;
        }
        if (!w.ready && !booted_) {
            // The first workers cannot import their apps: respawning would only repeat it.
            say(who + " failed to boot (" + describe_status(status) + "); stopping");
            exit_code_ = 1;
            begin_graceful_stop(clock::now());
            return;
        }
        if (!w.ready && w.pid == reload_new_) {
            say(who + " failed to boot (" + describe_status(status) +
                "); replacement aborted, the old workers keep serving");
            reload_new_ = 0;
            reload_queue_.clear();
            systemd::notify_ready(
                "replacement abandoned (a new worker failed to boot: " + describe_status(status) +
                "), the old workers keep serving; " + worker_counts());
            return;
        }
        const auto now = clock::now();
        if (now - w.started >= healthy_lifetime) backoff_ = backoff_initial;
        next_spawn_at_ = now + backoff_;
        notify_worker_counts();
        say(who + " exited (" + describe_status(status) + "); respawning" +
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
        for (int fd : opts_.listener_fds) ::close(fd);
        for (const auto& path : opts_.unix_paths) ::unlink(path.c_str());
        if (pidfile_written_ && !opts_.pidfile.empty()) ::unlink(opts_.pidfile.c_str());
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        for (int sig : handled_signals) ::sigaction(sig, &dfl, nullptr);
        ::close(signal_pipe[0]);
        ::close(signal_pipe[1]);
        signal_pipe[0] = signal_pipe[1] = -1;
        say("stopped");
    }

    const options& opts_;
    // A pidfile we could not write may be another server's: it is not ours to remove.
    bool pidfile_written_ = true;
    const worker_body& body_;
    std::size_t target_;
    std::vector<worker> workers_;
    clock::time_point next_spawn_at_;
    clock::duration backoff_ = backoff_initial;
    bool booted_ = false;  // some worker has been ready: startup is over
    bool stopping_ = false;
    bool announced_ready_ = false;  // READY=1 sent for the first generation
    int exit_code_ = 0;
    std::vector<pid_t> reload_queue_;  // old workers still to replace
    pid_t reload_new_ = 0;             // the replacement booting now
};

}  // namespace

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
