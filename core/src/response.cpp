// Response constructors and helpers.
#include <corgi/core/http_error.hpp>
#include <corgi/core/response.hpp>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace corgi {

file_descriptor& file_descriptor::operator=(file_descriptor&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
}

file_descriptor::~file_descriptor() {
    if (fd_ >= 0) ::close(fd_);
}

response::response(int status_code, std::string body_text, std::string_view content_type)
    : status(status_code), body(std::move(body_text)) {
    headers.add("Content-Type", content_type);
}

response response::text(std::string body, int status) {
    return response(status, std::move(body), "text/plain; charset=utf-8");
}

response response::html(std::string body, int status) {
    return response(status, std::move(body), "text/html; charset=utf-8");
}

response response::json(const nlohmann::json& value, int status) {
    return response(status, value.dump(), "application/json");
}

response response::redirect(std::string_view location, int status) {
    response r(status);
    r.headers.add("Location", location);
    return r;
}

response response::error(int status, std::string_view detail) {
    std::string text = std::to_string(status) + " ";
    text += detail.empty() ? std::string_view(reason_phrase(status)) : detail;
    text += '\n';
    return response(status, std::move(text), "text/plain; charset=utf-8");
}

response response::stream(body_producer producer, std::string_view content_type, int status) {
    response r(status);
    r.headers.add("Content-Type", content_type);
    r.body = std::move(producer);
    return r;
}

response response::file(const std::string& path, std::string_view content_type) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw not_found();
    file_descriptor owned(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) throw not_found();
    response r(200);
    r.headers.add("Content-Type", content_type);
    r.body = file_range{std::move(owned), 0, static_cast<std::uint64_t>(st.st_size)};
    return r;
}

std::optional<std::uint64_t> response::known_length() const noexcept {
    if (auto* s = std::get_if<std::string>(&body)) return s->size();
    if (auto* f = std::get_if<file_range>(&body)) return f->length;
    return std::nullopt;
}

}  // namespace corgi
