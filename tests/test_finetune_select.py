"""Fine-tuning keeps the epoch a validation score picks (clef_core.evaluation.finetune, ``select``)."""

from __future__ import annotations

import numpy as np
import torch

from clef_core.encoders import build_encoder
from clef_core.evaluation.finetune import FinetuneConfig, finetune


def _data(n: int = 48, t: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random((n, 2)) < 0.5).astype(float)
    x = rng.normal(size=(n, t)).astype(np.float32) + 2.0 * y[:, :1] * np.sin(np.arange(t) / 5.0)[None, :].astype(np.float32)
    return x, y


def _encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_encoder(scale="tiny").eval()


def test_the_epoch_select_prefers_is_kept():
    x, y = _data()
    cfg = FinetuneConfig(epochs=3, lr=1e-3, batch_size=16, seed=3)
    scores = iter([0.9, 0.5, 0.7])  # epoch 1 is best
    picked = finetune(_encoder(), x, y, "binary", ["a", "b"], cfg, select=lambda decide: next(scores))
    one = finetune(_encoder(), x, y, "binary", ["a", "b"], FinetuneConfig(epochs=1, lr=1e-3, batch_size=16, seed=3))
    last = finetune(_encoder(), x, y, "binary", ["a", "b"], cfg)
    assert picked.best_epoch == 1 and picked.selection == [0.9, 0.5, 0.7] and last.best_epoch == 3
    assert np.allclose(picked.decision(x), one.decision(x))  # the weights after epoch 1, not after epoch 3
    assert not np.allclose(picked.decision(x), last.decision(x))
    assert len(picked.history) == 3  # every epoch still trained


def test_select_sees_the_current_model_and_nan_never_wins():
    x, y = _data()
    seen = []

    def select(decide):
        out = decide(x[:5])
        seen.append(out.copy())
        return float("nan") if len(seen) == 2 else float(len(seen) == 1)

    tuned = finetune(_encoder(), x, y, "binary", ["a", "b"], FinetuneConfig(epochs=3, lr=1e-3, batch_size=16), select=select)
    assert seen[0].shape == (5, 2) and not np.allclose(seen[0], seen[2])  # the model moves between epochs
    assert tuned.best_epoch == 1 and np.allclose(tuned.decision(x[:5]), seen[0])


def test_select_every_scores_only_some_epochs_and_the_last():
    x, y = _data(16)
    calls = []
    tuned = finetune(_encoder(), x, y, "binary", ["a", "b"], FinetuneConfig(epochs=5, batch_size=16),
                     select=lambda decide: calls.append(1) or float(len(calls)), select_every=2)
    assert len(calls) == 3 and tuned.best_epoch == 5  # after epochs 2, 4 and 5
