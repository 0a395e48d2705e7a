"""Start and stop the daemons tests talk to (dockerd, containerd, docker-registry).

Plain Python, no pytest: bench/push.py starts registries with the same code. Every daemon runs
in a session of its own, dies with the process that started it, and is stopped by its pid only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

TIMEOUT = 120  # seconds for a helper command (umount): ample on a 2-core machine


def alive(pid: int) -> bool:
    try:  # a zombie (Z) has stopped already: its parent reaps it later
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in "ZX"
    except (OSError, IndexError):
        return False


def stop(pid: int, timeout: float = 30) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL it if the leader lingers."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):  # it may exit meanwhile
                os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def unmount_under(folder: Path) -> None:
    # dockerd and containerd mount below their roots; a daemon that died uncleanly leaves them.
    prefix = str(Path(folder).resolve())
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, timeout=TIMEOUT)


def _die_with_parent() -> None:
    # Runs in the child before exec: should the parent be killed outright, the kernel sends the
    # daemon SIGTERM (PR_SET_PDEATHSIG = 1), so no daemon outlives its test session or bench.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(name: str, proc: subprocess.Popen, ready: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if ready():
                return
        time.sleep(0.1)
    raise AssertionError(f"{name} not ready after 60 s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def running(name: str, argv: list, log: Path, ready: Callable[[], bool],
            stdout: Path | None = None) -> Iterator[subprocess.Popen]:
    """Run a daemon until the block ends; its stderr (and stdout unless given) go to LOG.

    READY is polled until it returns true; an early exit or 60 s without it raise
    AssertionError with the log's tail.
    """
    with contextlib.ExitStack() as files:
        err = files.enter_context(log.open("wb"))
        out = files.enter_context(stdout.open("ab")) if stdout else err
        proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        _wait_ready(name, proc, ready, log)
        yield proc
    finally:
        stop(proc.pid)
        proc.wait(timeout=10)


def succeeds(argv: list, env: dict | None = None) -> bool:
    """A readiness check: ARGV exits 0 within 10 s."""
    return subprocess.run([str(a) for a in argv], env=env, capture_output=True,
                          timeout=10).returncode == 0
