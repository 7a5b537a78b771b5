// Catch2 main for Python test binaries: one embedded interpreter for the whole binary (started
// before the tests, finalized after), with tests/wsgi/apps on sys.path.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <corgi/wsgi/wsgi.hpp>

#include <cstdlib>
#include <string>

int main(int argc, char* argv[]) {
    corgi::wsgi::python_settings settings;
    const char* source = std::getenv("CORGI_SOURCE_DIR");
    settings.pythonpath.push_back(std::string(source ? source : CORGI_TEST_SOURCE_DIR) +
                                  "/tests/wsgi/apps");
    settings.pythonpath.push_back(std::string(source ? source : CORGI_TEST_SOURCE_DIR) +
                                  "/examples");
    settings.threads = 1;
    settings.fibers = 300;
    corgi::wsgi::initialize(settings);
    const int rc = Catch::Session().run(argc, argv);
    corgi::wsgi::shutdown();
    return rc;
}
