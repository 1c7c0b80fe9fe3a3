"""``clef simulate``: synthesise (when no cohort is given), split, simulate, evaluate, summarise.

1. sites: ``--sites`` folders, or a cohort (``federation.cohort``, else the built-in synthetic
   cohort) split into ``federation.sites`` sites plus a held-out probe set
   (:mod:`simulations.sites`);
2. the resolved experiment is written to ``OUT/experiment.toml``: it is what the ServerApp and
   every ClientApp read through run_config ``experiment`` (:mod:`clef_core.federation.run_config`);
3. the Flower app runs in the simulation engine (:mod:`simulations.engine`): one ClientApp per
   site, ``federation.client_cpus`` CPUs each; the ServerApp checkpoints every round to OUT and
   resumes from it, so running the same command again continues an interrupted run, and a
   larger ``federation.rounds`` continues a finished one;
4. the server probes the held-out set each ``eval_every`` rounds; the summary table and
   ``OUT/summary.png`` come from ``OUT/metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from clef_core.config import ConfigError
from clef_core.run_folder import COMPLETE, INTERRUPTED, STARTING, RunFolder
from server.checkpoint import ServerRunFolder
from server.settings import FederationSettings
from simulations.engine import (
    ANSI,
    app_dir,
    federation_config,
    flwr_run,
    local_superlink,
    stage_app,
    tail,
)
from simulations.run_lock import correct_dead_status, run_folder_lock
from simulations.sites import PreparedFederation, prepare_federation
from simulations.summary import read_rounds, summarise

EXPERIMENT = "experiment.toml"
ENGINE_LOG = "simulation.log"


class SimulationError(RuntimeError):
    """The simulation did not complete; the message ends with the engine log's last lines."""


@dataclasses.dataclass
class SimulationResult:
    out: Path
    status: dict[str, Any]
    rounds: list[dict[str, Any]]
    final_model: Path
    summary: str
    plot: Path | None
    seconds: float  # wall time of this call
    startup_seconds: float  # from launch to the start of the first round this call ran (nan if none)
    federation: PreparedFederation


def write_experiment(cfg: Mapping[str, Any], out: Path) -> Path:
    path = out / EXPERIMENT
    path.write_text("# the resolved experiment of this run (written by clef simulate)\n" + tomli_w.dumps(dict(cfg)),
                    encoding="utf-8")
    return path


def check_node_counts(cfg: Mapping[str, Any], n_sites: int) -> None:
    fed = cfg["federation"]
    for key in ("min_train_nodes", "min_available_nodes"):
        if int(fed[key]) > n_sites:
            raise ConfigError(f"federation.{key} = {fed[key]} but the federation has {n_sites} sites "
                              f"(Flower would wait for nodes that never come)")


def run_config_for(out: Path, experiment: Path, manifest: Path) -> dict[str, str | int | float | bool]:
    return {"experiment": str(experiment), "run-dir": str(out), "sites-manifest": str(manifest),
            "prepare-sites": False}


def simulate(cfg: Mapping[str, Any], out: str | Path, *, site_dirs: Sequence[str | Path] | None = None,
             echo: Callable[[str], None] | None = None) -> SimulationResult:
    """Prepare and run one federated simulation in ``out`` (resuming what is there); a second
    call on a folder in use raises :class:`RunFolderBusy` before anything is done."""
    started = time.time()
    FederationSettings.from_config(cfg)  # choices and ranges of [federation], before anything is built
    out = Path(out).expanduser().resolve()
    with run_folder_lock(out):
        dead = correct_dead_status(RunFolder(out))
        if dead is not None and echo is not None:
            echo(f"clef: the previous run in {out} died during round {int(dead.get('round') or 0) + 1} (its "
                 f"status.json still said {dead['state']!r}; now 'interrupted'); resuming from its last checkpoint")
        try:
            return _simulate_locked(cfg, out, site_dirs, echo, started)
        except KeyboardInterrupt:  # SIGINT, or SIGTERM as `clef simulate` maps it; the engine is stopped by now
            mark_interrupted(RunFolder(out), len(read_rounds(out)))
            raise


def mark_interrupted(folder: RunFolder, rounds_done: int) -> None:
    """status.json after a stop by the user: ``interrupted`` and resumable (call with the lock held)."""
    status = folder.read_status()
    if status.get("state") == COMPLETE:
        return
    folder.write_status(INTERRUPTED, round=rounds_done, rounds=status.get("rounds"),
                        stopped=time.strftime("%Y-%m-%d %H:%M:%S"),
                        note="stopped by SIGINT/SIGTERM; run the same command again to resume")


def _simulate_locked(cfg: Mapping[str, Any], out: Path, site_dirs: Sequence[str | Path] | None,
                     echo: Callable[[str], None] | None, started: float) -> SimulationResult:
    federation = prepare_federation(cfg, out, site_dirs=site_dirs)
    check_node_counts(cfg, len(federation.sites))
    if str(cfg.get("privacy", {}).get("mode", "off")) != "off":
        from clef_core.privacy.compat import check_privacy

        check_privacy(cfg, len(federation.sites))  # refuse a DP setting before anything starts
    experiment = write_experiment(cfg, out)
    fed = cfg["federation"]
    folder = ServerRunFolder(out)
    before = {r["round"] for r in read_rounds(out)}
    folder.write_status(STARTING, round=max(before, default=0), rounds=int(fed["rounds"]))
    run_config = run_config_for(out, experiment, federation.manifest)
    engine = federation_config(len(federation.sites), fed["client_cpus"], fed["client_gpus"], os.cpu_count() or 1)
    with open(out / ENGINE_LOG, "a", encoding="utf-8") as log:
        log.write(f"\n=== clef simulate {time.strftime('%Y-%m-%d %H:%M:%S')}: {len(federation.sites)} sites, "
                  f"{fed['rounds']} rounds\n")
        with local_superlink(out / ".flwr", log, str(fed.get("ray_address", ""))) as env:
            app = stage_app(app_dir(), out / ".flwr" / "app")
            flwr_run(app, run_config, engine, env, log, on_line=_progress(echo))
    status = folder.read_status()
    rows = read_rounds(out)
    if status.get("state") != COMPLETE:
        correct_dead_status(folder)  # the engine is stopped: a "running" here is no longer true
        detail = status.get("error") or "the ServerApp did not finish (see the log)"
        lines = "\n".join(tail(out / ENGINE_LOG, 25))
        raise SimulationError(f"simulation in {out} stopped: {detail}\n--- last lines of {out / ENGINE_LOG}:\n{lines}")
    text, plot = summarise(out)
    new = [r for r in rows if r["round"] not in before]
    startup = (new[0]["time"] - new[0]["seconds"] - started) if new else float("nan")
    return SimulationResult(out, status, rows, folder.final_model, text, plot, time.time() - started, startup,
                            federation)


ACTOR = re.compile(r"^\((?:ClientAppActor|pid)[^)]*\)\s*")


def _progress(echo: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Pass on the lines a person wants to watch: rounds, the sites' step counts within a round,
    failures, the clef server's lines (without Ray's colour codes and actor prefixes), each once:
    a line equal to one of the last few echoed (the same error from the ServerApp and from Ray's
    actor, a warning every site repeats) is not repeated."""
    if echo is None:
        return None
    keys = ("clef:", "[ROUND", "ERROR", "Traceback", "Exit Code")
    recent: deque[str] = deque(maxlen=8)

    def on_line(line: str) -> None:
        if any(k in line for k in keys):
            text = ACTOR.sub("", ANSI.sub("", line)).strip()
            if text and text not in recent:
                recent.append(text)
                echo(text)

    return on_line
