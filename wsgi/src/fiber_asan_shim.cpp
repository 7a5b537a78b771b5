// Sanitizer builds only (CORGI_SANITIZE: BOOST_USE_UCONTEXT + BOOST_USE_ASAN in every translation
// unit). Boost.Context's ucontext fibers expect a per-thread activation record from the compiled
// library, which Debian builds for the assembly (fcontext) switch only; these are the two
// definitions it would have provided.
#include <boost/context/fiber.hpp>

#if !defined(BOOST_USE_UCONTEXT)
#error "fiber_asan_shim.cpp belongs to the sanitizer build (BOOST_USE_UCONTEXT)"
#endif

namespace boost::context::detail {

thread_local fiber_activation_record* fib_current_rec;
thread_local static std::size_t fib_counter;

fiber_activation_record_initializer::fiber_activation_record_initializer() noexcept {
    if (0 == fib_counter++) fib_current_rec = new fiber_activation_record();
}

fiber_activation_record_initializer::~fiber_activation_record_initializer() {
    if (0 == --fib_counter) delete fib_current_rec;
}

fiber_activation_record*& fiber_activation_record::current() noexcept {
    thread_local static fiber_activation_record_initializer
        initializer;  // per thread, on first use
    return fib_current_rec;
}

}  // namespace boost::context::detail
