// PEP 3333 environ: CGI keys from the request, HTTP_* from headers, proxy variables, routing
// arguments.
#include "python.hpp"

#include "environ.hpp"

#include "call.hpp"
#include "wsgi_types.hpp"

#include <corgi/core/header_map.hpp>
#include <corgi/core/request.hpp>

#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>

namespace corgi::wsgi::detail {

namespace {

struct transparent_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
        return std::hash<std::string_view>{}(s);
    }
};
using key_cache = std::unordered_map<std::string, PyObject*, transparent_hash, std::equal_to<>>;
// Header names are chosen by clients: past this many distinct spellings, keys are built per request
// instead.
constexpr std::size_t max_cached_keys = 512;

struct environ_state {
    PyObject* template_dict = nullptr;
    PyObject* http_host = nullptr;  // interned keys of the template's placeholders
    PyObject* http_x_request_id = nullptr;
    PyObject* request_method = nullptr;
    PyObject* script_name = nullptr;
    PyObject* path_info = nullptr;
    PyObject* query_string = nullptr;
    PyObject* content_type = nullptr;
    PyObject* content_length = nullptr;
    PyObject* server_name = nullptr;
    PyObject* server_port = nullptr;
    PyObject* server_protocol = nullptr;
    PyObject* remote_addr = nullptr;
    PyObject* remote_port = nullptr;
    PyObject* request_uri = nullptr;
    PyObject* url_scheme = nullptr;
    PyObject* input = nullptr;
    PyObject* routing_args = nullptr;
    PyObject* http10 = nullptr;
    PyObject* http11 = nullptr;
    PyObject* scheme_http = nullptr;
    PyObject* scheme_https = nullptr;
    PyObject* empty_tuple = nullptr;
    PyObject* methods[9] = {};
    std::uint16_t cached_port = 0;
    PyObject* cached_port_str = nullptr;
    key_cache header_keys;
    key_cache var_keys;
};
environ_state* g = nullptr;

constexpr const char* method_names[] = {"GET",     "POST",  "HEAD",    "PUT",  "DELETE",
                                        "OPTIONS", "PATCH", "CONNECT", "TRACE"};

PyObject* intern(const char* s) { return PyUnicode_InternFromString(s); }

// New reference to the environ key of a header ("HTTP_ACCEPT_ENCODING" for "accept-encoding").
PyObject* header_key(std::string_view name) {
    if (auto it = g->header_keys.find(name); it != g->header_keys.end())
        return Py_NewRef(it->second);
    std::string key = "HTTP_";
    key.reserve(5 + name.size());
    for (char ch : name) {
        if (ch == '-')
            ch = '_';
        else if (ch >= 'a' && ch <= 'z')
            ch = static_cast<char>(ch - 'a' + 'A');
        key.push_back(ch);
    }
    PyObject* k = PyUnicode_DecodeLatin1(key.data(), static_cast<Py_ssize_t>(key.size()), nullptr);
    if (!k) return nullptr;
    PyUnicode_InternInPlace(&k);
    if (g->header_keys.size() < max_cached_keys)
        g->header_keys.emplace(std::string(name), Py_NewRef(k));
    return k;
}

PyObject* var_key(std::string_view name) {
    if (auto it = g->var_keys.find(name); it != g->var_keys.end()) return Py_NewRef(it->second);
    PyObject* k = latin1(name);
    if (!k) return nullptr;
    PyUnicode_InternInPlace(&k);
    if (g->var_keys.size() < max_cached_keys) g->var_keys.emplace(std::string(name), Py_NewRef(k));
    return k;
}

// Sets env[key] = value, stealing the value reference. False with an exception on failure.
bool set_steal(PyObject* env, PyObject* key, PyObject* value) {
    if (!value) return false;
    int rc = PyDict_SetItem(env, key, value);
    Py_DECREF(value);
    return rc == 0;
}

PyObject* method_object(std::string_view m) {
    for (std::size_t i = 0; i < std::size(method_names); ++i) {
        if (m == method_names[i]) return Py_NewRef(g->methods[i]);
    }
    return latin1(m);
}

PyObject* port_string(std::uint16_t port) { return PyUnicode_FromFormat("%u", unsigned{port}); }

PyObject* server_port_object(std::uint16_t port) {
    if (g->cached_port_str && g->cached_port == port) return Py_NewRef(g->cached_port_str);
    PyObject* s = port_string(port);
    if (!s) return nullptr;
    Py_XSETREF(g->cached_port_str, Py_NewRef(s));
    g->cached_port = port;
    return s;
}

PyObject* route_value_object(const route_value& v) {
    if (auto* i = std::get_if<std::int64_t>(&v)) return PyLong_FromLongLong(*i);
    if (auto* d = std::get_if<double>(&v)) return PyFloat_FromDouble(*d);
    const std::string& s = std::get<std::string>(v);
    // Converted arguments are text: UTF-8 as werkzeug decodes them, latin-1 for bytes that are not
    // UTF-8.
    PyObject* u = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), nullptr);
    if (u) return u;
    PyErr_Clear();
    return latin1(s);
}

bool add_headers(PyObject* env, const request& req) {
    for (const auto& [name, value] : req.headers) {
        // A '_' in a name would collide with its '-' twin after the CGI mangling: a client could
        // spoof headers that a front proxy sets (nginx drops them too).
        if (name.find('_') != std::string::npos) continue;
        if (iequals(name, "content-type")) {
            if (PyDict_GetItemWithError(env, g->content_type)) continue;  // the first one wins
            if (PyErr_Occurred() || !set_steal(env, g->content_type, latin1(value))) return false;
            continue;
        }
        if (iequals(name, "content-length")) continue;  // from req.content_length, only when known
        py_ref key(header_key(name));
        if (!key) return false;
        PyObject* existing = PyDict_GetItemWithError(env, key.get());
        if (!existing || existing == Py_None) {  // None: the template's placeholder
            if (PyErr_Occurred() || !set_steal(env, key.get(), latin1(value))) return false;
            continue;
        }
        // Repeated field: one value joined by ", " (RFC 9110 5.3). Cookie is the exception, joined
        // by "; " as RFC 9113 8.2.3 does, because cookie parsers split on ';' only.
        Py_ssize_t n = 0;
        const char* old = nullptr;
        std::string joined;
        if (PyUnicode_KIND(existing) == PyUnicode_1BYTE_KIND) {
            old = reinterpret_cast<const char*>(PyUnicode_1BYTE_DATA(existing));
            n = PyUnicode_GET_LENGTH(existing);
        }
        joined.assign(old ? old : "", static_cast<std::size_t>(n));
        joined += iequals(name, "cookie") ? "; " : ", ";
        joined += value;
        if (!set_steal(env, key.get(), latin1(joined))) return false;
    }
    return true;
}

}  // namespace

bool init_environ(bool multithread, bool multiprocess) {
    g = new environ_state;  // lives as long as the interpreter
    g->request_method = intern("REQUEST_METHOD");
    g->script_name = intern("SCRIPT_NAME");
    g->path_info = intern("PATH_INFO");
    g->query_string = intern("QUERY_STRING");
    g->content_type = intern("CONTENT_TYPE");
    g->content_length = intern("CONTENT_LENGTH");
    g->server_name = intern("SERVER_NAME");
    g->server_port = intern("SERVER_PORT");
    g->server_protocol = intern("SERVER_PROTOCOL");
    g->remote_addr = intern("REMOTE_ADDR");
    g->remote_port = intern("REMOTE_PORT");
    g->request_uri = intern("REQUEST_URI");
    g->url_scheme = intern("wsgi.url_scheme");
    g->input = intern("wsgi.input");
    g->routing_args = intern("wsgiorg.routing_args");
    g->http10 = intern("HTTP/1.0");
    g->http11 = intern("HTTP/1.1");
    g->scheme_http = intern("http");
    g->scheme_https = intern("https");
    g->empty_tuple = PyTuple_New(0);
    for (std::size_t i = 0; i < std::size(method_names); ++i)
        g->methods[i] = intern(method_names[i]);
    if (PyErr_Occurred()) return false;

    py_ref t(PyDict_New());
    if (!t) return false;
    auto put = [&](const char* key, PyObject* value) {
        if (!value) return false;
        int rc = PyDict_SetItemString(t.get(), key, value);
        Py_DECREF(value);
        return rc == 0;
    };
    // Keys set for every request come first with placeholders: the per-request copy already has
    // room for them and keeps the conventional order.
    bool ok =
        put("REQUEST_METHOD", PyUnicode_FromString("")) &&
        put("SCRIPT_NAME", PyUnicode_FromString("")) &&
        put("PATH_INFO", PyUnicode_FromString("")) &&
        put("QUERY_STRING", PyUnicode_FromString("")) &&
        put("SERVER_NAME", PyUnicode_FromString("")) &&
        put("SERVER_PORT", PyUnicode_FromString("")) &&
        put("SERVER_PROTOCOL", PyUnicode_FromString("")) &&
        put("REMOTE_ADDR", PyUnicode_FromString("")) &&
        put("REMOTE_PORT", PyUnicode_FromString("")) &&
        put("REQUEST_URI", PyUnicode_FromString("")) &&
        put("SERVER_SOFTWARE", PyUnicode_FromString("corgi")) &&
        put("wsgi.version", Py_BuildValue("(ii)", 1, 0)) &&
        put("wsgi.url_scheme", PyUnicode_FromString("")) && put("wsgi.input", Py_NewRef(Py_None)) &&
        put("wsgi.errors", Py_NewRef(errors_stream())) &&
        put("wsgi.multithread", PyBool_FromLong(multithread)) &&
        put("wsgi.multiprocess", PyBool_FromLong(multiprocess)) &&
        put("wsgi.run_once", Py_NewRef(Py_False)) &&
        put("wsgi.input_terminated", Py_NewRef(Py_True)) &&
        put("wsgi.file_wrapper", Py_NewRef(reinterpret_cast<PyObject*>(file_wrapper_type()))) &&
        // Keys nearly every request has, as None placeholders that build_environ replaces
        // or removes. They also take the template past 21 keys, so its copy has room for
        // 20 more (a 64-slot table): headers are added without the dict growing.
        put("HTTP_HOST", Py_NewRef(Py_None)) && put("HTTP_X_REQUEST_ID", Py_NewRef(Py_None));
    if (!ok) return false;
    g->http_host = PyUnicode_InternFromString("HTTP_HOST");
    g->http_x_request_id = PyUnicode_InternFromString("HTTP_X_REQUEST_ID");
    if (!g->http_host || !g->http_x_request_id) return false;
    g->template_dict = t.release();
    return true;
}

PyObject* build_environ(const call& c, PyObject* input) {
    const request& req = *c.req;
    py_ref env(PyDict_Copy(g->template_dict));
    if (!env) return nullptr;
    PyObject* e = env.get();
    bool ok =
        set_steal(e, g->request_method, method_object(req.method)) &&
        set_steal(e, g->script_name, latin1(req.script_name)) &&
        set_steal(e, g->path_info, latin1(req.path_info)) &&
        set_steal(e, g->query_string, latin1(req.query_string)) &&
        set_steal(e, g->server_name, latin1(req.server_name)) &&
        set_steal(e, g->server_port, server_port_object(req.server_port)) &&
        set_steal(e, g->server_protocol, Py_NewRef(req.version == 10 ? g->http10 : g->http11)) &&
        set_steal(e, g->remote_addr, latin1(req.remote_addr)) &&
        set_steal(e, g->remote_port, port_string(req.remote_port)) &&
        set_steal(e, g->request_uri, latin1(req.target)) &&
        set_steal(e, g->url_scheme,
                  req.scheme == "https"  ? Py_NewRef(g->scheme_https)
                  : req.scheme == "http" ? Py_NewRef(g->scheme_http)
                                         : latin1(req.scheme)) &&
        PyDict_SetItem(e, g->input, input) == 0;
    if (!ok) return nullptr;
    if (req.content_length) {
        if (!set_steal(
                e, g->content_length,
                PyUnicode_FromFormat("%llu", static_cast<unsigned long long>(*req.content_length))))
            return nullptr;
    }
    if (!add_headers(e, req)) return nullptr;
    // The request's id replaces a client's X-Request-Id (taken only from a trusted proxy).
    if (!req.id().empty()) {
        if (!set_steal(e, g->http_x_request_id, latin1(req.id()))) return nullptr;
    } else if (PyDict_DelItem(e, g->http_x_request_id) != 0) {
        return nullptr;
    }
    // No Host header (HTTP/1.0): the placeholder goes.
    if (PyDict_GetItemWithError(e, g->http_host) == Py_None && PyDict_DelItem(e, g->http_host) != 0)
        return nullptr;
    // Variables a proxy sent (uwsgi_param, fastcgi_param...) go in as uWSGI does, but never replace
    // a key the server computed.
    for (const auto& [name, value] : req.proxy_vars) {
        py_ref key(var_key(name));
        py_ref v(latin1(value));
        if (!key || !v) return nullptr;
        if (!PyDict_SetDefault(e, key.get(), v.get())) return nullptr;
    }
    if (!req.args.empty()) {
        py_ref kwargs(PyDict_New());
        if (!kwargs) return nullptr;
        for (const auto& [name, value] : req.args) {
            py_ref v(route_value_object(value));
            if (!v || PyDict_SetItemString(kwargs.get(), name.c_str(), v.get()) != 0)
                return nullptr;
        }
        if (!set_steal(e, g->routing_args, PyTuple_Pack(2, g->empty_tuple, kwargs.get())))
            return nullptr;
    }
    return env.release();
}

}  // namespace corgi::wsgi::detail
