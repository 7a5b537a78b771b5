// The Catch2 main shared by the C++ test binaries that need no special start-up.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
