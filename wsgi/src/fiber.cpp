// Fibers: guarded stacks, per-fiber thread states, the switch, and the stack-overflow report.
#include "python.hpp"

#include "fiber.hpp"

#include "asyncio_bridge.hpp"
#include "lane.hpp"
#include "wsgi_call.hpp"

#include <pybind11/pybind11.h>

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

namespace corgi::wsgi::detail {

namespace {

thread_local fiber* t_current = nullptr;
pybind11::detail::internals* g_pybind11_internals = nullptr;

constexpr std::size_t guard_bytes = 4096;

}  // namespace

void init_pybind11_tls() { g_pybind11_internals = &pybind11::detail::get_internals(); }

void set_pybind11_tstate(PyThreadState* ts) noexcept {
    if (!g_pybind11_internals) return;
    if (ts) {
        PYBIND11_TLS_REPLACE_VALUE(g_pybind11_internals->tstate, ts);
    } else {
        PYBIND11_TLS_DELETE_VALUE(g_pybind11_internals->tstate);
    }
}

// Stacks grow down: the guard page sits below the usable range, so an overflow faults instead of
// corrupting whatever was mapped there. MAP_NORESERVE: only touched pages cost memory (~13 KiB per
// idle fiber).
struct fiber::stack_allocator {
    fiber* owner;
    boost::context::stack_context allocate() {
        const std::size_t total = owner->stack_bytes_ + guard_bytes;
        void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        if (::mprotect(p, guard_bytes, PROT_NONE) != 0) {
            ::munmap(p, total);
            throw std::bad_alloc();
        }
        owner->guard_low_ = static_cast<char*>(p);
        owner->stack_low_ = owner->guard_low_ + guard_bytes;
        boost::context::stack_context sc;
        sc.size = owner->stack_bytes_;
        sc.sp = owner->stack_low_ + owner->stack_bytes_;
        return sc;
    }
    void deallocate(boost::context::stack_context& sc) noexcept {
        char* top = static_cast<char*>(sc.sp);
        ::munmap(top - sc.size - guard_bytes, sc.size + guard_bytes);
    }
};

fiber::fiber(lane& owner, std::size_t stack_bytes, std::uint64_t id)
    : timer(owner.io()), owner_(owner), id_(id), stack_bytes_(stack_bytes) {
    tstate_ = PyThreadState_New(PyThreadState_Get()->interp);
    if (!tstate_) throw std::bad_alloc();
    self_ = boost::context::fiber(std::allocator_arg, stack_allocator{this},
                                  [this](boost::context::fiber&& sink) {
                                      sink_ = std::move(sink);
                                      loop();
                                      return std::move(sink_);
                                  });
}

fiber::~fiber() {
    if (self_) {
        quit_ = true;
        resume();  // the loop sees quit_ and returns: the stack unwinds normally
    }
    if (tstate_) {
        PyThreadState_Clear(tstate_);
        PyThreadState_Delete(tstate_);
    }
}

fiber* fiber::current() noexcept { return t_current; }

void fiber::resume() {
    PyThreadState* lane_ts = PyThreadState_Swap(tstate_);
    corgi_wsgi_set_gilstate_tstate(tstate_);
    set_pybind11_tstate(tstate_);
    fiber* outer = std::exchange(t_current, this);
    self_ = std::move(self_).resume();
    t_current = outer;
    set_pybind11_tstate(nullptr);
    corgi_wsgi_set_gilstate_tstate(lane_ts);
    PyThreadState_Swap(lane_ts);
}

void fiber::suspend() { sink_ = std::move(sink_).resume(); }

bool fiber::wait() {
    waiting_ = true;
    // Suspended in the middle of an asyncio step (a blocking read in a coroutine): the loop runs
    // other tasks meanwhile, which must not find this one current.
    py_ref task = aio_step_depth > 0 ? stash_current_task(owner_) : py_ref();
    suspend();
    if (task) restore_current_task(owner_, std::move(task));
    waiting_ = false;
    return !std::exchange(interrupted_, false);
}

void fiber::loop() {
    while (!quit_) {
        if (job) {
            run_wsgi_call(*this, *job);
            job = nullptr;
            reset_thread_state(tstate_);
        }
        suspend();
    }
}

// --- stack overflow report
// ------------------------------------------------------------------------------

#ifndef CORGI_SANITIZE  // under ASan the sanitizer reports stack overflows itself
namespace {

struct sigaction g_previous_segv {};
std::atomic<bool> g_handler_installed{false};

char* append(char* out, const char* text) {
    while (*text) *out++ = *text++;
    return out;
}
char* append_number(char* out, std::size_t n) {
    char digits[24];
    int k = 0;
    do {
        digits[k++] = static_cast<char>('0' + n % 10);
        n /= 10;
    } while (n);
    while (k) *out++ = digits[--k];
    return out;
}

void on_segv(int sig, siginfo_t* info, void* context) {
    const fiber* f = t_current;
    const char* addr = static_cast<const char*>(info->si_addr);
    if (f && addr >= f->guard_low() && addr < f->stack_low() + 256) {
        char msg[512];
        char* p = msg;
        p = append(p, "\n[corgi] fatal: fiber stack overflow: a Python request used more than ");
        p = append_number(p, f->stack_bytes() / 1024);
        p = append(
            p,
            " KiB of C stack (deep recursion through C code such as json, re or sorted(key=...)). "
            "Raise fiber_stack_kib (--fiber-stack-kib) or lower sys.setrecursionlimit(). "
            "The process stops now.\n");
        (void)!::write(2, msg, static_cast<std::size_t>(p - msg));
    }
    // Not ours, or reported: hand the fault to whoever handled it before (default: die with
    // SIGSEGV). Returning re-executes the faulting instruction under the restored action.
    (void)sig;
    (void)context;
    ::sigaction(SIGSEGV, &g_previous_segv, nullptr);
}

}  // namespace
#endif

void ensure_alternate_signal_stack() {
#ifndef CORGI_SANITIZE  // ASan gives every thread its own alternate stack and reports overflows
                        // itself
    thread_local bool done = false;
    if (done) return;
    done = true;
    stack_t current{};
    if (::sigaltstack(nullptr, &current) == 0 && !(current.ss_flags & SS_DISABLE) && current.ss_sp)
        return;
    constexpr std::size_t size = 64 * 1024;
    stack_t ss{};
    ss.ss_sp =
        std::malloc(size);  // lives as long as the thread (lanes live as long as the process)
    if (!ss.ss_sp) return;
    ss.ss_size = size;
    ::sigaltstack(&ss, nullptr);
#endif
}

void install_overflow_handler() {
#ifndef CORGI_SANITIZE
    if (g_handler_installed.exchange(true)) return;
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGSEGV, &sa, &g_previous_segv);
#endif
}

}  // namespace corgi::wsgi::detail
