"""Processes and ports on this machine: what the embedded broker, `lfz up`'s supervisor, a job's child process and
the tests share.

A process that starts another owns it: `die_with_parent` asks Linux to signal the child when its parent dies, so a
crashed or killed parent leaves no orphan behind (Linux ties this to the thread that forked: start long-lived
children from a thread that lives as long as the parent, such as the main thread or the event loop's).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import sys
import threading

_PR_SET_PDEATHSIG = 1
_M_MMAP_THRESHOLD = -3  # glibc's mallopt option


def die_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Have this process get `signum` when its parent dies. Returns False where the OS cannot do it (not Linux):
    then only a clean exit of the parent stops the child, or the child's own check of its parent's pid."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with(pid: int) -> bool:
    """Kill this process when process `pid` ends: for one that must not outlive a process other than its parent (a
    job's process, which the server of job processes forks, and the worker that asked for it; the server itself
    outlives the worker while any job process it forked lives). Returns False where the OS cannot watch a pid."""
    try:
        watched = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return False

    def watch() -> None:
        select.select([watched], [], [])  # readable once the process has ended
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name=f"die-with-{pid}", daemon=True).start()
    return True


def own_session_dying_with_parent() -> None:
    """A `preexec_fn`: the child gets a session of its own (a Ctrl-C at the terminal reaches the parent alone, which
    stops its children in order) and SIGTERM when the parent dies."""
    os.setsid()
    die_with_parent(signal.SIGTERM)


def return_large_blocks(threshold: int = 1 << 20) -> bool:
    """Have glibc serve every allocation of `threshold` bytes or more from mmap, so that freeing it gives it back to
    the system. By default glibc raises that threshold each time a large block is freed (up to 32 MiB) and keeps
    later blocks in its per-thread heaps, where a process that handles buffers of megabytes in several threads (the
    gateway's upload parts) stays resident at its highest use for good. False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, threshold) == 1
    except (OSError, AttributeError):
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (another process may take it before the caller binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False
