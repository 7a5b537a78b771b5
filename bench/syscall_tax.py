"""What one system call between two requests costs the Python code of the next one on this machine.
Flask's hello world in a loop (as bench/apps/flask_ceiling.py) with 0, 1 or 4 cheap system calls (getppid) between
calls. On kernels with page-table isolation and no PCID (/sys/devices/system/cpu/vulnerabilities/meltdown says
"Mitigation: PTI", /proc/cpuinfo has no pcid) every kernel entry flushes the TLB, and the next call pays for it.
    /usr/bin/python3.11 bench/syscall_tax.py [ROUNDS]"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps"))
from flask_ceiling import app, environ, start_response  # noqa: E402


def calls_per_second(syscalls, n=10000):
    t0 = time.perf_counter()
    for _ in range(n):
        body = app(dict(environ), start_response)
        b"".join(body)
        body.close()
        for _ in range(syscalls):
            os.getppid()
    return n / (time.perf_counter() - t0)


def bare_syscall_us(n=200000):
    t0 = time.perf_counter()
    for _ in range(n):
        os.getppid()
    return (time.perf_counter() - t0) / n * 1e6


calls_per_second(0, 1000)  # warm-up
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    rates = [calls_per_second(k) for k in (0, 1, 4)]
    per_call = [1e6 / r for r in rates]
    print(
        f"0 syscalls {rates[0]:6.0f}/s ({per_call[0]:.1f} us)   1 syscall {rates[1]:6.0f}/s ({per_call[1]:.1f} us)   "
        f"4 syscalls {rates[2]:6.0f}/s ({per_call[2]:.1f} us)   a bare getppid {bare_syscall_us():.2f} us"
    )
