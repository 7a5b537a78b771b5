// Case-insensitive header list.
#include <corgi/core/header_map.hpp>

#include <algorithm>

namespace corgi {

namespace {
inline char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? char(c + 32) : c; }
}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

const std::string* header_map::find(std::string_view name) const noexcept {
    for (const auto& f : *this)
        if (iequals(f.first, name)) return &f.second;
    return nullptr;
}

std::string_view header_map::get(std::string_view name) const noexcept {
    const std::string* v = find(name);
    return v ? std::string_view(*v) : std::string_view();
}

std::string header_map::get_joined(std::string_view name) const {
    std::string out;
    bool first = true;
    for (const auto& f : *this) {
        if (!iequals(f.first, name)) continue;
        if (!first) out += ", ";
        out += f.second;
        first = false;
    }
    return out;
}

void header_map::add(std::string_view name, std::string_view value) {
    if (size_ < fields_.size()) {
        fields_[size_].first.assign(name);
        fields_[size_].second.assign(value);
    } else {
        fields_.emplace_back(std::string(name), std::string(value));
    }
    ++size_;
}

void header_map::set(std::string_view name, std::string_view value) {
    erase(name);
    add(name, value);
}

void header_map::erase(std::string_view name) {
    // Stable removal within [0, size_); removed fields rotate behind it, keeping their capacity.
    std::size_t out = 0;
    for (std::size_t i = 0; i < size_; ++i) {
        if (iequals(fields_[i].first, name)) continue;
        if (out != i) std::swap(fields_[out], fields_[i]);
        ++out;
    }
    size_ = out;
}

}  // namespace corgi
