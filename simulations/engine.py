"""Run the Flower app in Flower's simulation engine (Ray) the way ``flwr run`` does.

Why a local ``flower-superlink --simulation`` plus ``flwr run`` in subprocesses rather than the
deprecated in-process ``flwr.simulation.run_simulation``:

* ``run_simulation`` gives both apps an empty ``run_config`` (the experiment would have to be
  smuggled in), is deprecated in flwr 1.41, and leaves Ray and its threads in the calling
  process (consecutive simulations in one process are a known source of trouble, flwr #1152);
* ``flwr run`` is the path every Flower user takes: the same app, run_config and pyproject, and
  each run gets a fresh simulation process; on 2 cores it costs a few seconds more at start-up
  (SuperLink start, FAB build) and nothing per round.

The SuperLink runs with ``--disable-runtime-dependency-installation`` (otherwise every run
``uv sync``s the app's dependencies, torch included, into a new environment), on a free local
port, with a private ``FLWR_HOME`` whose config.toml names it as the ``clef-sim`` connection.
It runs under a guard process (:mod:`simulations.guard`) that stops it and every process under
it (SuperExec, the simulation process, Ray) when the run ends or ``clef simulate`` dies, even
by SIGKILL; ``flwr run`` gets SIGTERM from the kernel when its parent dies (``PR_SET_PDEATHSIG``).
``RAY_ADDRESS`` (``federation.ray_address``) makes Ray join an existing cluster instead of
starting a local one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from simulations.guard import GRACE_SECONDS, descendants, die_with_parent

CONNECTION = "clef-sim"
STARTUP_TIMEOUT = 60.0


class EngineError(RuntimeError):
    """The simulation engine could not be started or did not run the app."""


ANSI = re.compile(r"\x1b\[[0-9;]*m")  # terminal colour codes


def bin_dir() -> Path:
    """The folder of this interpreter's console scripts (flwr, flower-superlink)."""
    return Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def engine_env(flwr_home: Path, ray_address: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    return env


def write_connection(flwr_home: Path, port: int) -> Path:
    """``$FLWR_HOME/config.toml`` naming the local SuperLink as connection ``clef-sim``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(
        "[superlink]\n"
        f'default = "{CONNECTION}"\n\n'
        f"[superlink.{CONNECTION}]\n"
        f'address = "127.0.0.1:{port}"\n'
        "insecure = true\n",
        encoding="utf-8",
    )
    return path


@contextlib.contextmanager
def local_superlink(flwr_home: Path, log: IO[str], ray_address: str = "") -> Iterator[dict[str, str]]:
    """A simulation SuperLink for the duration of the block; yields the environment for ``flwr``.

    The SuperLink runs under :mod:`simulations.guard`, which stops it and everything it started
    (SuperExec, the simulation process, Ray) when the block ends -- or when this process dies
    without running its ``finally`` blocks (SIGKILL): no orphan finishes rounds unsupervised.
    """
    port = free_port()
    write_connection(flwr_home, port)
    env = engine_env(flwr_home, ray_address)
    cmd = [str(bin_dir() / "flower-superlink"), "--insecure", "--simulation",
           "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(port)]
    guard = subprocess.Popen([sys.executable, "-m", "simulations.guard", "--", *cmd], env=env, stdin=subprocess.PIPE,
                             stdout=log, stderr=subprocess.STDOUT, cwd=flwr_home, start_new_session=True)
    try:
        wait_ready(port, guard)
        yield env
    finally:
        stop_guard(guard)


def stop_guard(guard: subprocess.Popen[bytes], timeout: float = 4 * GRACE_SECONDS) -> None:
    """Close the guard's pipe (it then stops every process under it) and wait for it."""
    assert guard.stdin is not None
    with contextlib.suppress(OSError):
        guard.stdin.close()
    try:
        guard.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        guard.kill()
        guard.wait()


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EngineError(f"flower-superlink exited with code {proc.returncode} at start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.2)
    raise EngineError(f"flower-superlink did not listen on port {port} within {timeout:.0f} s")


def descendant_groups(root: int) -> set[int]:
    """Process groups of ``root`` and all its descendants. SuperExec starts the simulation in a
    group of its own, and Ray's agents outlive their raylet unless their group is signalled."""
    groups = {root}
    with contextlib.suppress(ProcessLookupError):
        groups.add(os.getpgid(root))
    return groups | set(descendants(root).values())


def federation_config(num_supernodes: int, client_cpus: float, client_gpus: float, init_cpus: int) -> str:
    return (f"num-supernodes={num_supernodes} client-resources-num-cpus={client_cpus} "
            f"client-resources-num-gpus={float(client_gpus)} init-args-num-cpus={init_cpus}")


def flwr_run(app_dir: Path, run_config: dict[str, str | int | float | bool], federation: str,
             env: dict[str, str], log: IO[str], on_line: Callable[[str], None] | None = None) -> int:
    """``flwr run APP clef-sim --stream -c ... --federation-config ...``: its output goes to ``log``
    (and each line to ``on_line``); returns its exit code, which is 0 also when the ServerApp
    failed -- the caller reads the run folder's status."""
    proc = subprocess.Popen(flwr_run_command(app_dir, run_config, federation), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=env["FLWR_HOME"], text=True, errors="replace",
                            preexec_fn=die_with_parent)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            log.write(ANSI.sub("", line))  # a readable log: without Flower's and Ray's colour codes
            log.flush()
            if on_line is not None:
                on_line(line.rstrip("\n"))
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def flwr_run_command(app_dir: Path, run_config: dict[str, str | int | float | bool], federation: str,
                     flwr: str | None = None) -> list[str]:
    cmd: list[str] = [flwr or str(bin_dir() / "flwr"), "run", str(app_dir), CONNECTION, "--stream",
                      "--federation-config", federation]
    for key, value in run_config.items():
        cmd += ["-c", f"{key}={toml_literal(value)}"]
    return cmd


def toml_literal(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if "'" in value:
        raise EngineError(f"run_config value {value!r} contains a single quote")
    return f"'{value}'"


def app_dir() -> Path:
    """The Flower app: the source tree holding pyproject.toml with [tool.flwr.app]."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise EngineError(f"no pyproject.toml beside the packages in {root}: `clef simulate` needs the source "
                          "tree (pip install -e .)")
    return root


def stage_app(source: Path, dest: Path) -> Path:
    """A clean copy of the Flower app: pyproject.toml plus the folders of its ``fab-include``.

    ``flwr run`` builds the app archive by walking the whole app folder; in a source tree with
    virtual environments and run folders that walk alone takes tens of seconds, on a copy of the
    few hundred source files it takes none.
    """
    import tomllib

    with open(source / "pyproject.toml", "rb") as fh:
        patterns = tomllib.load(fh)["tool"]["flwr"]["app"].get("fab-include", [])
    folders = sorted({p.split("/", 1)[0] for p in patterns if "/" in p})
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
    keep = (".py", ".toml", ".md", ".json")

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__" or (Path(folder, n).is_file() and not n.endswith(keep))]

    for name in folders:
        if (source / name).is_dir():
            shutil.copytree(source / name, dest / name, ignore=ignore, symlinks=False)
    return dest


def tail(path: Path, lines: int = 30) -> Sequence[str]:
    if not path.is_file():
        return []
    return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
