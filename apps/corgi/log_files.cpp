#include "log_files.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace corgi::log_files {

namespace {

// Fixed buffers: the signal handler may not allocate.
char access_path[4096];
char error_path[4096];

bool reopen_onto(const char* path, int target) noexcept {
    if (!path[0]) return true;
    int fd = ::open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return false;
    ::dup2(fd, target);  // atomic: a concurrent write goes to the old file or the new one
    ::close(fd);
    return true;
}

void keep(char* buffer, const std::string& path) {
    if (path.size() >= sizeof access_path)
        throw std::system_error(std::make_error_code(std::errc::filename_too_long),
                                "log file path too long: " + path);
    std::memcpy(buffer, path.c_str(), path.size() + 1);
}

extern "C" void on_sigusr1(int) {
    const int saved = errno;
    reopen();
    errno = saved;
}

}  // namespace

void open(const std::string& access_log, const std::string& error_log) {
    keep(access_path, access_log);
    keep(error_path, error_log);
    if (!reopen_onto(access_path, STDOUT_FILENO))
        throw std::system_error(errno, std::generic_category(),
                                "cannot open the access log " + access_log);
    if (!reopen_onto(error_path, STDERR_FILENO))
        throw std::system_error(errno, std::generic_category(),
                                "cannot open the error log " + error_log);
}

void reopen() noexcept {
    reopen_onto(access_path, STDOUT_FILENO);
    reopen_onto(error_path, STDERR_FILENO);
}

void reopen_on_sigusr1() {
    struct sigaction sa {};
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGUSR1, &sa, nullptr);
}

}  // namespace corgi::log_files
