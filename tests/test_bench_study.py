"""benchmarks/bench_study.py counts the CPU of the study's worker processes, not only its own."""

from __future__ import annotations

import multiprocessing
import sys
import time

from tests.conftest import REPO_ROOT


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_seconds_include_finished_children():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        from bench_study import cpu_seconds
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))
    before = cpu_seconds()
    child = multiprocessing.get_context("fork").Process(target=_burn, args=(0.6,))
    child.start()
    child.join()
    assert cpu_seconds() - before >= 0.5  # the parent only waited
