// HTTP header fields: an ordered list with case-insensitive lookup. Order and duplicates are kept
// because proxies and WSGI (HTTP_* joined by ", ") need them; lookups are linear, which beats
// hashing at header counts.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace corgi {

bool iequals(std::string_view a, std::string_view b) noexcept;

class header_map {
  public:
    using field = std::pair<std::string, std::string>;
    using const_iterator = std::vector<field>::const_iterator;

    // First value of the field, or an empty view when absent.
    std::string_view get(std::string_view name) const noexcept;
    const std::string* find(std::string_view name) const noexcept;
    bool contains(std::string_view name) const noexcept { return find(name) != nullptr; }
    // All values of the field joined by ", " (RFC 9110 5.3), empty when absent.
    std::string get_joined(std::string_view name) const;

    void add(std::string_view name, std::string_view value);
    // Replaces every field of that name with one.
    void set(std::string_view name, std::string_view value);
    void erase(std::string_view name);
    // Keeps the storage for reuse: the fields' strings keep their capacity, so a connection parsing
    // its next request's headers allocates nothing once it has seen headers as long.
    void clear() noexcept { size_ = 0; }

    bool empty() const noexcept { return size_ == 0; }
    std::size_t size() const noexcept { return size_; }
    const_iterator begin() const noexcept { return fields_.begin(); }
    const_iterator end() const noexcept {
        return fields_.begin() + static_cast<std::ptrdiff_t>(size_);
    }

  private:
    std::vector<field>
        fields_;  // [0, size_) in use; the rest are spare strings kept for their capacity
    std::size_t size_ = 0;
};

}  // namespace corgi
