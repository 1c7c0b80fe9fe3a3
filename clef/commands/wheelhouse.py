"""`clef wheelhouse`: the offline install of a site (deploy/wheelhouse.py)."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

NAME = "wheelhouse"
HELP = "download every locked dependency and clef-fl's wheel into DIR for an offline install (or --write-lock)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, metavar="DIR", help="the wheelhouse folder")
    parser.add_argument("--lock", type=Path, help="the lock file (default: requirements-lock.txt of the source tree)")
    parser.add_argument("--write-lock", action="store_true",
                        help="regenerate the lock file from this environment's installed versions")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--pip-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for pip (repeatable), e.g. --pip-arg=--extra-index-url=URL")


def run(args: argparse.Namespace) -> int:
    from deploy.wheelhouse import LOCK, LockError, check_lock, download_commands, install_command, write_lock

    lock = args.lock or LOCK
    try:
        if args.write_lock:
            print(f"wrote {write_lock(lock)}")
        problems = check_lock(lock)
    except (LockError, FileNotFoundError) as exc:
        print(f"clef wheelhouse: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"clef wheelhouse: {lock} does not fit pyproject.toml: {'; '.join(problems)} "
              "(regenerate: clef wheelhouse --write-lock)", file=sys.stderr)
        return 2
    if args.out is None:
        if not args.write_lock:
            print("clef wheelhouse: give --out DIR (or --write-lock)", file=sys.stderr)
            return 2
        return 0
    for cmd in download_commands(args.out, lock, pip_args=args.pip_arg):
        print(shlex.join(cmd))
        if not args.dry_run and subprocess.run(cmd).returncode:
            print(f"clef wheelhouse: failed: {shlex.join(cmd)}", file=sys.stderr)
            return 1
    print(f"inside the hospital: {shlex.join(install_command(args.out))}")
    return 0
