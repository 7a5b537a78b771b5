// --access-log FILE and --error-log FILE: the files are opened onto stdout and stderr (so every
// writer, the access log's flusher and Python's print alike, follows them), and reopened on
// SIGUSR1 after logrotate moved them.
#pragma once

#include <string>

namespace corgi::log_files {

// Opens the files ("" leaves stdout / stderr as they are); throws std::system_error naming a file
// that cannot be opened.
void open(const std::string& access_log, const std::string& error_log);
// Reopens them by path (async-signal-safe: open, dup2, close).
void reopen() noexcept;
// Installs a SIGUSR1 handler that calls reopen() (the master forwards USR1 to its workers).
void reopen_on_sigusr1();

}  // namespace corgi::log_files
