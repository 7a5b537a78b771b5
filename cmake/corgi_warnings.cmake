# Warnings and sanitizer flags shared by every corgi target.
add_library(corgi_build_flags INTERFACE)
target_compile_options(corgi_build_flags INTERFACE -Wall -Wextra -Wpedantic -Wshadow)
if(CORGI_WERROR)
  target_compile_options(corgi_build_flags INTERFACE -Werror)
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
