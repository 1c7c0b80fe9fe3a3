"""One ``clef simulate`` per run folder at a time, and the status a dead run left behind.

The lock is an advisory ``flock`` on ``OUT/.lock`` held for the whole run: the kernel releases
it when the holder exits in any way (SIGKILL and power loss included), so there is never a
stale lock to delete by hand. The file names the holder (pid, host, start time) for the
refusal message. Once the lock is taken, a ``status.json`` that still says ``starting`` or
``running`` was left by a run that died: :func:`correct_dead_status` rewrites it as
``interrupted``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clef_core.run_folder import INTERRUPTED, LIVE_STATES, RunFolder

LOCK_FILE = ".lock"


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock."""


@contextlib.contextmanager
def run_folder_lock(out: Path, command: str = "clef simulate") -> Iterator[Path]:
    """Hold ``out/.lock`` for the block, or raise :class:`RunFolderBusy` naming the holder."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(f"run folder {out} is in use by {_holder(path)}; wait for it to finish, stop it, "
                                f"or give another --out") from None
        holder = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"{info['command']} (pid {info['pid']} on {info['host']}, started {info['started']})"
    except (OSError, ValueError, KeyError):
        return "another process"


def correct_dead_status(folder: RunFolder) -> dict[str, Any] | None:
    """Call with the lock held: a status still ``starting``/``running`` belongs to a run that
    died; mark it ``interrupted`` and return what it said (None when there was nothing to fix)."""
    status = folder.read_status()
    if status.get("state") not in LIVE_STATES:
        return None
    folder.write_status(INTERRUPTED, round=status.get("round", 0), rounds=status.get("rounds"),
                        was=status.get("state"), corrected=time.strftime("%Y-%m-%d %H:%M:%S"),
                        note="the run that wrote this status ended without finishing (killed or crashed)")
    return status
