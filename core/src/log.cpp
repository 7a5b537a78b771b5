// Access log (buffered, flushed in the background) and error log (stderr, immediate).
#include <corgi/core/log.hpp>
#include <corgi/core/request.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>
#include <thread>

#include <pthread.h>
#include <unistd.h>

namespace corgi::log {

namespace {

std::atomic<bool> access_enabled{true};

// The access log buffer: appended under a mutex (cheap: no syscall), written by a background thread
// every 100 ms or when it grows past 64 KiB, so the request path never waits on stdout.
class access_buffer {
  public:
    access_buffer()
        : writer_([this] {
              ::pthread_setname_np(::pthread_self(), "corgi-log");
              run();
          }) {}
    ~access_buffer() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        cv_.notify_one();
        writer_.join();
    }
    void append(const char* data, std::size_t n) {
        bool wake = false;
        {
            std::lock_guard lock(mutex_);
            pending_.append(data, n);
            wake = pending_.size() > 64 * 1024;
        }
        if (wake) cv_.notify_one();
    }
    void flush() {
        std::string out;
        {
            std::lock_guard lock(mutex_);
            out.swap(pending_);
        }
        write_all(out);
    }

  private:
    static void write_all(const std::string& s) {
        std::size_t off = 0;
        while (off < s.size()) {
            ssize_t n = ::write(STDOUT_FILENO, s.data() + off, s.size() - off);
            if (n <= 0) return;  // stdout closed: the log is lost, the server is not
            off += static_cast<std::size_t>(n);
        }
    }
    void run() {
        std::unique_lock lock(mutex_);
        while (!stop_) {
            cv_.wait_for(lock, std::chrono::milliseconds(100));
            std::string out;
            out.swap(pending_);
            lock.unlock();
            write_all(out);
            lock.lock();
        }
        write_all(pending_);
        pending_.clear();
    }
    std::mutex mutex_;
    std::condition_variable cv_;
    std::string pending_;
    bool stop_ = false;
    std::thread writer_;
};

access_buffer& buffer() {
    static access_buffer b;
    return b;
}

// "[10/Oct/2000:13:55:36 +0000]", recomputed once a second per thread.
const char* clf_time() {
    thread_local std::time_t cached_second = 0;
    thread_local char text[40];
    std::time_t now = std::time(nullptr);
    if (now != cached_second) {
        cached_second = now;
        std::tm tm{};
        ::gmtime_r(&now, &tm);
        std::strftime(text, sizeof text, "[%d/%b/%Y:%H:%M:%S +0000]", &tm);
    }
    return text;
}

void write_stderr(std::string_view level, std::string_view message) {
    std::string line;
    line.reserve(message.size() + 24);
    line += "[corgi] ";
    line += level;
    line += ": ";
    line += message;
    if (line.back() != '\n') line += '\n';
    std::size_t off = 0;
    while (off < line.size()) {
        ssize_t n = ::write(STDERR_FILENO, line.data() + off, line.size() - off);
        if (n <= 0) return;
        off += static_cast<std::size_t>(n);
    }
}

}  // namespace

void set_access_log_enabled(bool enabled) noexcept { access_enabled.store(enabled); }
bool access_log_enabled() noexcept { return access_enabled.load(std::memory_order_relaxed); }

void access(const request& req, int status, std::uint64_t body_bytes) noexcept {
    if (!access_log_enabled()) return;
    try {
        thread_local std::string line;
        line.clear();
        line += req.remote_addr.empty() ? std::string_view("-") : std::string_view(req.remote_addr);
        line += " - - ";
        line += clf_time();
        line += " \"";
        line += req.method;
        line += ' ';
        line += req.target;
        line += req.version == 10 ? " HTTP/1.0\" " : " HTTP/1.1\" ";
        line += std::to_string(status);
        line += ' ';
        line += body_bytes ? std::to_string(body_bytes) : std::string("-");
        line += '\n';
        buffer().append(line.data(), line.size());
    } catch (...) {
        // Logging must never fail a request.
    }
}

void flush() noexcept {
    try {
        buffer().flush();
    } catch (...) {
    }
}

void error(std::string_view message) noexcept {
    try {
        write_stderr("error", message);
    } catch (...) {
    }
}
void warning(std::string_view message) noexcept {
    try {
        write_stderr("warning", message);
    } catch (...) {
    }
}
void info(std::string_view message) noexcept {
    try {
        write_stderr("info", message);
    } catch (...) {
    }
}

}  // namespace corgi::log
