"""clef evaluate's expected duration per task: the embedding cost timed on the first windows."""

from __future__ import annotations

import time

import numpy as np


def test_expected_probe_seconds_predicts_the_embedding_time(tiny_checkpoint) -> None:
    from clef_core.checkpoint import load_model
    from clef_core.evaluation.embed import embed
    from clef_core.evaluation.run import expected_probe_seconds
    from clef_core.evaluation.tasks import TaskData

    encoder = load_model(tiny_checkpoint).encoder
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 5000)).astype(np.float32)
    test = TaskData("t", "binary", ["a"], x[:16], np.zeros((16, 1)), np.arange(16), "II")
    task = TaskData("t", "binary", ["a"], x, np.zeros((48, 1)), np.arange(48), "II", test=test)
    seconds, per, n = expected_probe_seconds(encoder, task, passes=2)
    assert n == 64 and per > 0 and abs(seconds - 2 * 64 * per) < 1e-9
    started = time.perf_counter()
    embed(encoder, np.concatenate([x, x[:16]]), batch_size=64)
    actual = time.perf_counter() - started
    assert actual / 5 < per * n < actual * 5, (per * n, actual)  # an estimate, on a shared CPU
