"""`clef simulate`'s life cycle: one run per folder, a dead run's status corrected, and no
process of the simulation engine outliving a `clef simulate` killed with SIGKILL."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from clef_core.run_folder import RunFolder
from simulations.guard import descendants
from simulations.run_lock import RunFolderBusy, correct_dead_status, run_folder_lock

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "synth.patients=30", "--set", "federation.sites=2", "--set", "federation.min_available_nodes=2",
        "--set", "federation.rounds=100", "--set", "federation.local_steps=4", "--set", "train.batch_size=4",
        "--set", "federation.eval_every=0"]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_until(what: str, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_locked_run_folder_is_refused_and_names_its_holder(tmp_path: Path) -> None:
    with run_folder_lock(tmp_path / "run"):
        with pytest.raises(RunFolderBusy, match=rf"run folder .*run is in use by clef simulate \(pid {os.getpid()} "):
            with run_folder_lock(tmp_path / "run"):
                pass
    with run_folder_lock(tmp_path / "run"):  # released when the holder is done
        pass


def test_a_dead_runs_status_is_corrected_and_a_finished_one_kept(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.write_status("running", round=2, rounds=5)
    with run_folder_lock(tmp_path):
        assert correct_dead_status(folder) == {"state": "running", "round": 2, "rounds": 5}
    status = folder.read_status()
    assert status["state"] == "interrupted" and status["round"] == 2 and status["was"] == "running"
    folder.write_status("complete", round=5, rounds=5)
    assert correct_dead_status(folder) is None and folder.read_status()["state"] == "complete"


def test_the_guard_stops_every_descendant_when_its_launcher_is_killed(tmp_path: Path) -> None:
    """A launcher holding the guard's pipe is SIGKILLed: the guard's child, a grandchild in a session
    of its own and a process that double-forked away are all stopped."""
    pids = tmp_path / "pids"
    child = f"setsid sleep 300 & echo $! >> {pids}; (sleep 300 & echo $! >> {pids}) ; echo $$ >> {pids}; sleep 300"
    launcher = textwrap.dedent(f"""
        import subprocess, sys, time
        guard = subprocess.Popen([sys.executable, "-m", "simulations.guard", "--", "sh", "-c", {child!r}],
                                 stdin=subprocess.PIPE, start_new_session=True)
        print(guard.pid, flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", launcher], cwd=REPO, stdout=subprocess.PIPE, text=True)
    guard = int(proc.stdout.readline())
    wait_until("the guarded processes", lambda: pids.is_file() and len(pids.read_text().split()) == 3, 30)
    watched = [guard, *map(int, pids.read_text().split())]
    assert all(alive(p) for p in watched)
    proc.kill()
    proc.wait()
    wait_until("every guarded process to stop", lambda: not any(alive(p) for p in watched), 30)


@pytest.mark.slow
def test_simulate_refuses_a_second_run_shows_steps_and_leaves_no_orphan_after_kill_9(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "clef", "simulate", "--out", str(out), *TINY]
    first = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in first.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 240
    while not any("clef: site " in x and ": step " in x for x in seen):  # progress within round 1
        assert first.poll() is None and time.monotonic() < deadline, "\n".join(seen)
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            pass

    second = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert f"is in use by clef simulate (pid {first.pid} " in second.stderr, second.stderr

    engine = descendants(first.pid)  # the guard, SuperLink, SuperExec, simulation process, Ray, flwr run
    assert len(engine) >= 5 and first.poll() is None, engine
    first.send_signal(signal.SIGKILL)  # no finally block of clef simulate runs
    first.wait()
    wait_until("the engine's processes to stop", lambda: not any(alive(p) for p in engine), 60)

    assert RunFolder(out).read_status()["state"] in ("starting", "running")  # what the dead run left
    with run_folder_lock(out):  # the lock died with its holder
        assert correct_dead_status(RunFolder(out)) is not None
    assert RunFolder(out).read_status()["state"] == "interrupted"


@pytest.mark.parametrize("case", ["missing", "empty", "no_records"])
def test_a_bad_site_folder_stops_the_run_before_the_engine_starts(tmp_path: Path, case: str) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    (good / "r.hea").write_text("r 1 500 5000\n")
    if case != "missing":
        bad.mkdir()
    if case == "no_records":
        (bad / "notes.txt").write_text("no ECG here")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "clef", "simulate", "--out", str(out), "--sites", str(good), str(bad),
                           "--set", "federation.min_available_nodes=2"],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    reason = {"missing": "does not exist", "empty": "holds no records", "no_records": "holds no records"}[case]
    assert line.startswith("clef simulate: site ") and f"data folder {bad} {reason}" in line, line
    assert not (out / ".flwr").exists() and not (out / "status.json").exists()  # no engine, no run


def test_ctrl_c_prints_one_line_leaves_an_interrupted_resumable_run_and_no_orphan(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "clef", "simulate", "--out", str(out), *TINY]
    # its own process group, as a shell's foreground job; SIGINT at its default even when the tests
    # run in a background job (which starts with SIGINT ignored, and so would its children)
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 240
    while not any("clef: site " in x and ": step " in x for x in seen):
        assert proc.poll() is None and time.monotonic() < deadline, "\n".join(seen)
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            pass
    engine = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("clef simulate: interrupted after round ") and "run the same command again" in line
    status = RunFolder(out).read_status()
    assert status["state"] == "interrupted" and "resume" in status["note"], status
    wait_until("the engine's processes to stop", lambda: not any(alive(p) for p in engine), 60)


def test_progress_lines_are_echoed_once_without_colour_codes() -> None:
    from simulations.run import _progress

    echoed: list[str] = []
    on_line = _progress(echoed.append)
    error = "\x1b[91mERROR \x1b[0m:     site site-1 failed: no usable window"
    for line in ("\x1b[92mINFO \x1b[0m:      [ROUND 1/2]", error, "\x1b[36m(ClientAppActor pid=7)\x1b[0m " + error,
                 "noise nobody watches", "\x1b[36m(ClientAppActor pid=7)\x1b[0m clef: site a round 1: step 1/2"):
        on_line(line)
    assert echoed == ["INFO :      [ROUND 1/2]", "ERROR :     site site-1 failed: no usable window",
                      "clef: site a round 1: step 1/2"]
