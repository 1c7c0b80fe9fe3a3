"""A guard process that ties the simulation engine's life to ``clef simulate``'s.

``python -m simulations.guard -- CMD ...`` starts ``CMD`` (the SuperLink) as its child and
becomes a child subreaper (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``): every process started
under it -- SuperExec, the simulation process, Ray's GCS, raylet, workers and agents, even
those that put themselves in new sessions -- stays its descendant when its own parent exits.
The guard reads its stdin, a pipe whose write end only the launching ``clef simulate`` holds.
When that pipe closes -- the launcher finished, raised, or was killed with SIGKILL, which no
``finally`` block survives -- or when ``CMD`` exits, the guard stops every descendant
(SIGTERM, then SIGKILL after a grace period) and exits. It runs in a session of its own, so
killing the launcher's process group does not take the guard down before it has cleaned up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE_SECONDS = 10.0


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, value, 0, 0, 0) == 0


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """``preexec_fn`` for a child that must not outlive its parent (``PR_SET_PDEATHSIG``)."""
    _prctl(PR_SET_PDEATHSIG, sig)


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process (Linux ``/proc``)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def descendants(root: int) -> dict[int, int]:
    """pid -> process group of every descendant of ``root`` (not ``root`` itself)."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid in table and pid not in found:
            found[pid] = table[pid][1]
            stack.extend(children.get(pid, []))
    return found


def signal_descendants(root: int, sig: int) -> int:
    """Send ``sig`` to every descendant and to their process groups (other than ``root``'s);
    returns how many descendants there were."""
    procs = descendants(root)
    own_group = os.getpgid(root)
    for group in {g for g in procs.values() if g != own_group}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    for pid in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return len(procs)


def reap() -> None:
    """Collect exited children (orphans re-parented to this subreaper included)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def stop_all(grace: float = GRACE_SECONDS) -> None:
    """SIGTERM every descendant, wait up to ``grace`` seconds for them to go, SIGKILL the rest."""
    me = os.getpid()
    signal_descendants(me, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap()
        if not descendants(me):
            return
        time.sleep(0.1)
    signal_descendants(me, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while descendants(me) and time.monotonic() < deadline:
        reap()
        time.sleep(0.05)
    reap()


def launcher_alive(timeout: float) -> bool:
    """False once the launcher's end of the stdin pipe is closed."""
    ready, _, _ = select.select([sys.stdin.fileno()], [], [], timeout)
    if not ready:
        return True
    return bool(os.read(sys.stdin.fileno(), 4096))


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("usage: python -m simulations.guard -- CMD [ARG ...]", file=sys.stderr)
        return 2
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    child = subprocess.Popen(argv[1:], stdin=subprocess.DEVNULL, start_new_session=True)
    code = 0
    try:
        while launcher_alive(0.5):
            if child.poll() is not None:
                code = child.returncode
                break
    finally:
        stop_all()
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
