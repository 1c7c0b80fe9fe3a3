"""The task module's fit loop and the trainer's device rules: precision by device, losses read from
the device at log points and epoch ends, a criterion passed in, a step plugged in."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clef_core.encoders import build_encoder
from clef_core.task import fit
from clef_core.train import LossConfig, NonFiniteLossError, TrainConfig, Trainer
from clef_core.train import trainer as trainer_module
from clef_core.train.trainer import StepOutcome, autocast_dtype, make_loss

T = 500
N = 4


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def batch(seed: int = 0, n: int = N) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, T, generator=g)
    return {"view1": base + 0.1 * torch.randn(n, 1, T, generator=g), "view2": base + 0.1 * torch.randn(n, 1, T, generator=g),
            "risk": torch.rand(n, generator=g, dtype=torch.float64), "completeness": torch.ones(n, dtype=torch.float64)}


def make_trainer(**train) -> Trainer:
    torch.manual_seed(0)
    return Trainer(build_encoder("tiny"), LossConfig(), TrainConfig(**{"lr": 1e-3, "device": "cpu", **train}))


def test_precision_is_chosen_by_device():
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(torch.device("cuda"), capability=(8, 0)) is torch.bfloat16  # Ampere: native bf16
    assert autocast_dtype(torch.device("cuda"), capability=(9, 0)) is torch.bfloat16  # Hopper
    assert autocast_dtype(torch.device("cuda"), capability=(7, 5)) is torch.float16  # Turing: fp16 + GradScaler
    trainer = make_trainer()
    assert trainer.precision is None and not trainer.scaler.is_enabled()


def test_fit_runs_epochs_up_to_the_step_budget_and_resumes_where_it_stopped():
    trainer = make_trainer(max_steps=5)
    seen_epochs = []
    history = fit(trainer, lambda epoch: [batch(10 * epoch + i) for i in range(2)], epochs=4, max_steps=5,
                  on_epoch=lambda stats: seen_epochs.append((stats.epoch, stats.step)))
    assert [s.steps for s in history] == [2, 2, 1] and seen_epochs == [(1, 2), (2, 4), (3, 5)]
    assert fit(trainer, lambda epoch: [batch(epoch)], epochs=4, max_steps=5) == []  # the budget is spent
    more = fit(trainer, lambda epoch: [batch(10 * epoch)], epochs=4, max_steps=0)
    assert [(s.epoch, s.step) for s in more] == [(4, 6)]  # from the trainer's own epoch on


def test_a_plugged_in_step_replaces_the_optimizer_step_and_sees_empty_batches():
    trainer = make_trainer()
    seen = []

    def step(item, index):
        seen.append(item)
        return StepOutcome(loss=float(index), grad_norm=math.nan, examples=0 if item is None else 1)

    lr = trainer.lr
    (stats,) = fit(trainer, lambda epoch: [None, "a", None], epochs=1, schedule=False, step=step)
    assert seen == [None, "a", None] and trainer.step == 3 and stats.examples == 1 and stats.loss == 1.0
    assert trainer.lr == lr and trainer.scheduled_epochs == 0  # schedule=False keeps the rate


def test_the_criterion_is_an_argument_and_the_trainer_evaluates_with_it():
    torch.manual_seed(0)
    calls = []

    def criterion(z, b):
        calls.append(sorted(b))
        return z.pow(2).mean()

    trainer = Trainer(build_encoder("tiny"), LossConfig(), TrainConfig(device="cpu"), criterion=criterion)
    assert math.isfinite(trainer.train_epoch([batch()]).loss) and "risk" in calls[0]
    plain = Trainer(build_encoder("tiny"), LossConfig(), TrainConfig(device="cpu"))
    plain.model.eval()
    b = batch(3)
    loss, n = plain.loss(b)
    with torch.no_grad():
        z = plain.model(torch.cat([b["view1"], b["view2"]]))
    expected = make_loss(LossConfig())(z, b["risk"].float(), b["completeness"].float())
    assert n == N and torch.equal(loss, expected)


def test_without_free_host_reads_the_non_finite_step_is_named_at_the_next_check(monkeypatch):
    # what a GPU does: no read per step; the check at the epoch end (or a log point) names the step
    monkeypatch.setattr(trainer_module, "reads_are_free", lambda device: False)
    trainer = make_trainer()
    bad = batch(1)
    bad["view1"][0, 0, 0] = math.nan
    with pytest.raises(NonFiniteLossError, match=r"at step 2 \(batch 1 of its epoch\)"):
        trainer.train_epoch([batch(0), bad, batch(2)])
    logged = make_trainer(log_every=1)
    steps = []
    with pytest.raises(NonFiniteLossError, match=r"at step 2 "):
        logged.train_epoch([batch(0), bad, batch(2)], on_step=lambda info: steps.append(info.step))
    assert steps == [1]  # checked at the log point, before the step's callback
    good = make_trainer()
    assert math.isfinite(good.train_epoch([batch(0), batch(2)]).loss)


def test_fine_tuning_skips_batches_without_a_known_label():
    from clef_core.evaluation.finetune import FinetuneConfig, finetune

    torch.manual_seed(0)
    x = torch.randn(8, T).numpy()
    y = torch.tensor([math.nan] * 4 + [0.0, 1.0, 1.0, 0.0]).numpy()
    tuned = finetune(build_encoder("tiny"), x[:4], y[:4], "binary", ["a"], FinetuneConfig(epochs=1, batch_size=4))
    assert tuned.history == [0.0]  # the only batch is all unknown: no step, no loss
    tuned = finetune(build_encoder("tiny"), x, y, "binary", ["a"], FinetuneConfig(epochs=2, batch_size=4))
    assert len(tuned.history) == 2 and all(h > 0 for h in tuned.history)
    assert isinstance(tuned.head, nn.Linear)
