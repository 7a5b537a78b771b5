// The smallest corgi program: a coroutine handler, a URL map with two rules, a server.
#include <corgi/core/server.hpp>
#include <corgi/core/url_map.hpp>
#include <corgi/protocols/protocols.hpp>

#include <cstdlib>
#include <iostream>
#include <memory>

corgi::task<corgi::response> hello(corgi::request& req) {
    co_return corgi::response::text("Hello, " + req.arg<std::string>("name") + "!\n");
}

int main(int argc, char** argv) {
    auto map = std::make_shared<corgi::url_map>(corgi::url_map{
        corgi::rule("/", "index",
                    [](corgi::request&) -> corgi::task<corgi::response> {
                        co_return corgi::response::text("Hello, World!");
                    }),
        corgi::rule("/hello/<name>", "hello", hello),
    });
    corgi::server server({.io_threads = 1});
    server.set_handler(corgi::make_dispatcher(map));
    auto bound = server.listen(corgi::listen_address::parse(argc > 1 ? argv[1] : "127.0.0.1:8080"),
                               corgi::protocols::http());
    std::cerr << "hello_world: serving on " << bound.to_string() << "\n";
    server.run();
    return EXIT_SUCCESS;
}
