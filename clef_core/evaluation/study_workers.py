"""Independent units of ``clef study`` (one arm and seed each) in worker processes (``study.workers``).

``map_units(fn, context, items, workers, threads)`` returns ``[fn(context, item) for item in
items]`` in the order of ``items``. With workers > 1 the items run in that many forked processes,
each with ``threads`` torch threads; the context (the study's data: cohorts, windows, splits) is
inherited by the fork instead of being pickled. A unit must depend only on its context and item
(every random draw seeded by the unit itself), so the results do not depend on which process ran
which unit, nor on how many there were: the study's outputs are the same for any worker count.

Fork is used on purpose: the study's data is large and read-only. It is for CPU runs; a parent
that already holds CUDA state cannot fork usable children, so that combination is refused.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_CONTEXT: Any = None  # the context of the running map, inherited by the forked workers


def map_units(fn: Callable[[Any, T], R], context: Any, items: Sequence[T], workers: int, threads: int) -> list[R]:
    """``[fn(context, item) for item in items]``, in ``workers`` processes when > 1 (``fn`` a
    module-level function; its results are pickled back)."""
    global _CONTEXT
    if workers <= 1 or len(items) <= 1:
        return [fn(context, item) for item in items]
    _refuse_cuda()
    _CONTEXT = context
    try:
        with ProcessPoolExecutor(min(workers, len(items)), mp_context=multiprocessing.get_context("fork"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            return list(pool.map(_call, [fn] * len(items), items))
    finally:
        _CONTEXT = None


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _call(fn: Callable[[Any, T], R], item: T) -> R:
    return fn(_CONTEXT, item)


def _refuse_cuda() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        raise ValueError("study.workers > 1 forks worker processes, which cannot use CUDA once the parent has; "
                         "set study.workers = 1 on a GPU")
