# Warnings and sanitizer flags shared by every corgi target.
add_library(corgi_build_flags INTERFACE)
target_compile_options(corgi_build_flags INTERFACE -Wall -Wextra -Wpedantic -Wshadow)
if(CORGI_WERROR)
  target_compile_options(corgi_build_flags INTERFACE -Werror)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    # GCC 12 reports -Wrestrict inside libstdc++ for `"literal" + std::string&&` at -O2 (GCC bug 105329, a
    # false positive); it stays a warning so the rest of -Werror keeps its teeth.
    target_compile_options(corgi_build_flags INTERFACE -Wno-error=restrict)
  endif()
endif()
if(CORGI_SANITIZE)
  # Boost.Context's assembly switch is invisible to ASan: the sanitizer build uses ucontext fibers with ASan
  # annotations in every translation unit (see wsgi/src/fiber_asan_shim.cpp and shared/reference/asan-fibers).
  # -fno-sanitize=function: clang 14's function sanitizer cannot emit its prologue data for coroutines that are
  # split across sections ("Cannot represent a difference across sections"); every other UBSan check stays on.
  add_compile_options(-fsanitize=address,undefined -fno-sanitize=function -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
  add_compile_definitions(BOOST_USE_UCONTEXT BOOST_USE_ASAN CORGI_SANITIZE=1)
endif()
install(TARGETS corgi_build_flags EXPORT corgi-targets)
