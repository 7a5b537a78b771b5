"""What the load tests read about processes in /proc: children by parent pid (never by name), descriptors, and which
TCP connections a process holds. Every read tolerates the process or descriptor vanishing meanwhile. Also the
bounded wait the tests poll them with."""

import os
import time


def eventually(condition, timeout, interval=0.02):
    """condition()'s first true value within `timeout` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def stat(pid):
    """(state, ppid, start time in clock ticks) or None. The start time tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def alive(pid):
    st = stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def children(parent):
    """The live (not zombie) children of `parent`."""
    out = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = stat(int(name))
            if st and st[1] == parent and st[0] not in ("Z", "X"):
                out.add(int(name))
    return out


def fd_targets(pid):
    """What each open descriptor of `pid` points at ("socket:[123]", "pipe:[45]", a path), or None when the
    process is gone."""
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return None
    out = []
    for n in names:
        try:
            out.append(os.readlink(f"{base}/{n}"))
        except OSError:
            pass  # closed while we looked
    return out


def fd_count(pid):
    t = fd_targets(pid)
    return None if t is None else len(t)


def socket_inodes(pid):
    return {int(t[8:-1]) for t in (fd_targets(pid) or []) if t.startswith("socket:[")}


TCP_LISTEN = 0x0A


def tcp_sockets():
    """{inode: (local port, remote port, state)} for the IPv4 TCP sockets of this network namespace."""
    out = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], int(fields[3], 16), int(fields[9])
            if inode:
                out[inode] = (int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state)
    return out


def listener_inode(port):
    for inode, (local, _, state) in tcp_sockets().items():
        if local == port and state == TCP_LISTEN:
            return inode
    return None


def connections_held(pid, server_port):
    """The client ports of the TCP connections to `server_port` that `pid` holds (any state but LISTEN)."""
    table = tcp_sockets()
    ports = set()
    for inode in socket_inodes(pid):
        entry = table.get(inode)
        if entry and entry[0] == server_port and entry[2] != TCP_LISTEN:
            ports.add(entry[1])
    return ports
