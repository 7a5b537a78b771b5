// Internals of the URL map shared with the JSON route compiler and the built-in targets (private to
// core): pattern parsing for early, pointer-precise config errors, and the percent-encoding used
// when building URLs.
#pragma once

#include <corgi/core/url_map.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace corgi::detail {

// Parses `pattern` as a rule would (converters, arguments) and returns a key that is equal for two
// patterns matching the same URLs (variable names ignored). Throws routing_error on a bad pattern.
std::string rule_key(std::string_view pattern);
// The argument names of a pattern, in order. Throws routing_error on a bad pattern.
std::vector<std::string> rule_arguments(std::string_view pattern);

// Upper-cased, HEAD added when GET is there, sorted, unique. Throws routing_error on an empty
// method name.
std::vector<std::string> normalize_methods(const std::vector<std::string>& methods);
// Whether two normalized method sets share a method (an empty set is every method).
bool methods_overlap(const std::vector<std::string>& a, const std::vector<std::string>& b);

// Joins a submount prefix and a pattern the way werkzeug's Submount does (the prefix loses trailing
// slashes).
std::string join_prefix(std::string_view prefix, std::string_view pattern);

// Appends `in` percent-encoded for a URL path: unreserved characters, sub-delims, ':' and '@' stay
// as they are;
// '/' stays only when `keep_slash`.
void append_path_quoted(std::string& out, std::string_view in, bool keep_slash);
// Appends `in` encoded for a query string (application/x-www-form-urlencoded: space as '+').
void append_query_quoted(std::string& out, std::string_view in);

}  // namespace corgi::detail
