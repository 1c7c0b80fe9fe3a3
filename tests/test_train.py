"""The training loop: Trainer (optimisation rules, FedProx, state), pretrain (resume, metrics), `clef pretrain`."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from clef.cli import main as clef_main
from clef_core.checkpoint import load_model
from clef_core.config import ConfigError
from clef_core.encoders import build_encoder
from clef_core.train import LossConfig, NonFiniteLossError, TrainConfig, Trainer, pretrain, resolve_device

T = 1000  # short views keep the unit tests fast (Net1D pools over time)
N = 6  # patients per batch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def batch(seed: int = 0, n: int = N) -> dict[str, torch.Tensor]:
    """Two noisy views of n random 'signals'; half the risks unknown."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, T, generator=g)
    risk = torch.rand(n, generator=g, dtype=torch.float64)
    risk[::2] = math.nan
    return {
        "view1": base + 0.1 * torch.randn(n, 1, T, generator=g),
        "view2": base + 0.1 * torch.randn(n, 1, T, generator=g),
        "risk": risk,
        "completeness": torch.linspace(0, 1, n, dtype=torch.float64),
    }


def make_trainer(seed: int = 0, **train) -> Trainer:
    torch.manual_seed(seed)
    cfg = TrainConfig(**{"lr": 1e-3, "device": "cpu", **train})
    return Trainer(build_encoder("small"), LossConfig(), cfg)


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((a[k] - b[k]).pow(2).sum()) for k in a))


# ------------------------------------------------------------------------------- Trainer


def test_overfits_a_fixed_batch():
    trainer = make_trainer(grad_clip=0.0)
    fixed = [batch()]
    losses = [trainer.train_epoch(fixed, lr=3e-3).loss for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0], losses
    assert trainer.step == 12 and trainer.epoch == 12


def test_gradient_clipping_bounds_the_norm():
    trainer = make_trainer(grad_clip=1e-3)
    stats = trainer.train_epoch([batch()], max_steps=1)
    assert stats.grad_norm > 1e-3  # the norm before clipping is reported
    after = torch.nn.utils.get_total_norm([p.grad for p in trainer.model.parameters() if p.grad is not None])
    assert float(after) <= 1e-3 * (1 + 1e-4)


def test_lr_override_is_used_and_leaves_the_schedule_where_it_was():
    trainer = make_trainer(lr=1e-3, schedule="sgdr", warm_restart_t0=1, warm_restart_tmult=1)
    seen: list[float] = []
    stats = trainer.train_epoch([batch(0), batch(1)], lr=0.0123, on_step=lambda s: seen.append(s.lr))
    assert seen == [0.0123, 0.0123] and stats.lr == 0.0123
    assert trainer.scheduled_epochs == 0 and trainer.epoch == 1

    # without an override: SGDR with T_0 = 1 epoch, stepped per batch at epoch + i / len(loader)
    seen.clear()
    trainer.train_epoch([batch(i) for i in range(4)], on_step=lambda s: seen.append(s.lr))
    expected = [1e-3 * (1 + math.cos(math.pi * i / 4)) / 2 for i in range(4)]
    assert seen == pytest.approx(expected, rel=1e-9)
    assert trainer.scheduled_epochs == 1


def test_warmup_cosine_schedule_over_the_run():
    from clef_core.train.trainer import warmup_cosine

    # 20 steps, 10 % warm-up: 2 linear steps, then a half cosine from the base rate to 0
    rates = [warmup_cosine(t, 20, 1e-3, 0.1) for t in range(22)]
    assert rates[:3] == pytest.approx([5e-4, 1e-3, 1e-3])
    assert rates[2 + 9] == pytest.approx(1e-3 * (1 + math.cos(math.pi * 9 / 18)) / 2)
    assert all(a >= b for a, b in zip(rates[1:], rates[2:])) and rates[19] > 0 and rates[20:] == [0.0, 0.0]
    assert warmup_cosine(0, 20, 1e-3, 0.0) == 1e-3  # no warm-up

    # the trainer: the run is train.max_steps long (else epochs x batches), the rate set before every step
    seen: list[float] = []
    trainer = make_trainer(lr=1e-3, schedule="cosine", warmup_fraction=0.25, max_steps=8)
    for _ in range(2):
        trainer.train_epoch([batch(i) for i in range(4)], on_step=lambda s: seen.append(s.lr))
    assert seen == pytest.approx([warmup_cosine(t, 8, 1e-3, 0.25) for t in range(8)], rel=1e-12)
    seen.clear()
    by_epochs = make_trainer(lr=1e-3, schedule="cosine", warmup_fraction=0.0, epochs=2)
    by_epochs.train_epoch([batch(i) for i in range(3)], on_step=lambda s: seen.append(s.lr))
    assert seen == pytest.approx([warmup_cosine(t, 6, 1e-3, 0.0) for t in range(3)], rel=1e-12)
    with pytest.raises(ValueError, match="train.max_steps"):
        make_trainer(schedule="cosine").train_epoch(iter([batch(0)]))
    with pytest.raises(ConfigError, match="train.schedule"):
        TrainConfig(schedule="step")


def test_proximal_term_pulls_toward_the_global_weights():
    data = [batch(i) for i in range(3)]
    free, prox = make_trainer(grad_clip=0.0), make_trainer(grad_clip=0.0)
    start = params(free)
    assert distance(start, params(prox)) == 0.0
    free_stats = free.train_epoch(data, lr=1e-3)
    prox_stats = prox.train_epoch(data, lr=1e-3, proximal_mu=100.0, global_params=start)
    assert free_stats.proximal == 0.0 and prox_stats.proximal > 0.0
    assert distance(params(prox), start) < 0.5 * distance(params(free), start)


def test_proximal_term_needs_matching_global_weights():
    trainer = make_trainer()
    with pytest.raises(ValueError, match="needs global_params"):
        trainer.train_epoch([batch()], proximal_mu=0.1)
    glob = params(trainer)
    name = next(iter(glob))
    with pytest.raises(ValueError, match=f"no entry for parameter '{name}'"):
        trainer.train_epoch([batch()], proximal_mu=0.1, global_params={k: v for k, v in glob.items() if k != name})
    # Opacus-style names are accepted
    stats = trainer.train_epoch([batch()], proximal_mu=0.1, global_params={f"_module.{k}": v for k, v in glob.items()})
    assert stats.steps == 1


def test_empty_batches_are_skipped_and_max_steps_is_honoured():
    trainer = make_trainer()
    empty = batch(n=0)
    stats = trainer.train_epoch([batch(0), empty, batch(1), batch(2)], max_steps=2)
    assert (stats.steps, stats.skipped_empty_batches, stats.examples) == (2, 1, 2 * N)
    assert trainer.step == 2


def test_non_finite_loss_raises_naming_the_step_and_keeps_the_weights():
    trainer = make_trainer()
    trainer.train_epoch([batch(0)])
    before = params(trainer)
    bad = batch(1)
    bad["view1"][0, 0, 0] = math.nan
    with pytest.raises(NonFiniteLossError, match=r"at step 2 \(epoch 2, batch 0\); weights were not updated"):
        trainer.train_epoch([bad])
    assert distance(before, params(trainer)) == 0.0


def test_bad_batches_and_config_are_named():
    trainer = make_trainer()
    with pytest.raises(KeyError, match=r"batch 0: missing key\(s\) \['risk'\]"):
        trainer.train_epoch([{k: v for k, v in batch().items() if k != "risk"}])
    with pytest.raises(ConfigError, match="train.lr = -1"):
        TrainConfig(lr=-1)
    with pytest.raises(ConfigError, match="loss.kind = 'simclr'"):
        LossConfig(kind="simclr")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")


def test_ntxent_kind_trains():
    torch.manual_seed(0)
    trainer = Trainer(build_encoder("small"), LossConfig(kind="ntxent"), TrainConfig(device="cpu"))
    assert math.isfinite(trainer.train_epoch([batch()]).loss)


def test_state_round_trip_continues_identically(tmp_path):
    first = make_trainer()
    first.train_epoch([batch(0), batch(1)])
    first.save_state(tmp_path / "state.pt")
    torch.manual_seed(123)  # disturb the RNG: load_state restores it
    second = make_trainer(seed=99)  # different init: load_state replaces it
    second.load_state(tmp_path / "state.pt")
    assert (second.step, second.epoch, second.scheduled_epochs) == (2, 1, 1)
    for trainer in (first, second):
        trainer.train_epoch([batch(2), batch(3)])
    assert distance(params(first), params(second)) == 0.0
    assert first.optimizer.param_groups[0]["lr"] == second.optimizer.param_groups[0]["lr"]


# ------------------------------------------------------------------------------- pretrain


def _cfg(base, **train):
    return base.replace(train={"max_steps": 0, "batch_size": 16, **train})


def _weights(path) -> dict[str, torch.Tensor]:
    return load_model(path).encoder.state_dict()


@pytest.mark.parametrize("schedule", ["sgdr", "cosine"])
def test_resume_equals_straight_training(tmp_path, tiny_site, tiny_config, schedule):
    # cosine: the run's length is max_steps (fixed), so stopping after epoch 1 and resuming is the same run
    extra = {"schedule": schedule, **({"max_steps": 1000} if schedule == "cosine" else {})}
    straight = pretrain(_cfg(tiny_config, epochs=2, **extra), run_dir=tmp_path / "straight", site=tiny_site, progress=False)
    half = pretrain(_cfg(tiny_config, epochs=1, **extra), run_dir=tmp_path / "resumed", site=tiny_site, progress=False)
    assert half.epochs == 1 and half.resumed_from_epoch is None
    resumed = pretrain(_cfg(tiny_config, epochs=2, **extra), run_dir=tmp_path / "resumed", site=tiny_site, progress=False)
    assert resumed.resumed_from_epoch == 1 and resumed.epochs == 2 and resumed.steps == straight.steps
    a, b = _weights(straight.final_model), _weights(resumed.final_model)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)

    lines = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    straight_lines = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for got, want in zip(lines, straight_lines, strict=True):
        assert {"epoch", "step", "train_loss", "lr", "seconds"} <= set(got)
        assert got["kind"] == "epoch" and got["step"] == want["step"] and got["train_loss"] == want["train_loss"]
        assert math.isfinite(got["train_loss"]) and got["lr"] > 0 and got["seconds"] >= 0


def test_step_metrics_and_provenance(tmp_path, tiny_site, tiny_config):
    result = pretrain(_cfg(tiny_config, epochs=1, max_steps=2, batch_size=8, log_every=1),
                      run_dir=tmp_path, site=tiny_site, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in lines] == [("step", 1), ("step", 2), ("epoch", 2)]
    loaded = load_model(result.final_model)
    prov = loaded.provenance
    assert prov["loss"]["kind"] == "clef" and prov["train"]["max_steps"] == 2 and prov["privacy"] is None
    assert prov["data"]["windows"] == len(tiny_site.store) and prov["data"]["cohort"]
    assert prov["noise"]["kinds"]["bw"]["source"] in {"recorded", "generated"}
    assert loaded.preprocess == tiny_site.store.preprocess
    changed = _cfg(tiny_config, epochs=2, max_steps=4, batch_size=8).replace(loss={"tau": 0.1})
    with pytest.raises(ValueError, match=r"other settings \(loss.tau: 0.07 -> 0.1\)"):
        pretrain(changed, run_dir=tmp_path, site=tiny_site, progress=False)
    assert loaded.input == {"channels": 1, "lead": "any", "normalize": "zscore-per-window", "samples": 5000,
                            "sample_rate": 500}


def test_tiny_checkpoint_is_a_clef_model(tiny_checkpoint):
    loaded = load_model(tiny_checkpoint)
    x = torch.randn(2, 1, 5000)
    with torch.no_grad():
        z = loaded.encoder(x)
    assert z.shape == (2, loaded.encoder.emb_dim) and torch.isfinite(z).all()
    assert (tiny_checkpoint.parent / "train_state.pt").is_file()


def test_cli_pretrain_end_to_end(tmp_path, tiny_site, capsys):
    out = tmp_path / "run"
    argv = ["pretrain", "--set", "synth.patients=30", "--set", "train.max_steps=2", "--set", "train.batch_size=8",
            "--out", str(out), "--work", str(tiny_site.work_dir), "--quiet"]  # reuses the cached cohort and store
    assert clef_main(argv) == 0
    printed = capsys.readouterr().out
    assert "final_model.pt" in printed and "2 steps" in printed
    assert load_model(out / "final_model.pt").provenance["result"]["steps"] == 2
    # a second call finds the finished state and only rewrites the model
    assert clef_main(argv) == 0
    assert "resumed at epoch 1" in capsys.readouterr().out


def test_cli_reports_a_bad_cohort(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert clef_main(["pretrain", "--cohort", str(tmp_path / "empty"), "--out", str(tmp_path / "run")]) == 1
    assert "neither a MIMIC-IV-ECG layout" in capsys.readouterr().err


def test_central_pretrain_refuses_a_privacy_config_instead_of_ignoring_it(tmp_path, tiny_site, capsys):
    argv = ["pretrain", "--set", "privacy.mode=\"patient\"", "--set", "model.norm=\"group\"",
            "--out", str(tmp_path / "run"), "--work", str(tiny_site.work_dir), "--quiet"]
    assert clef_main(argv) == 1
    assert "privacy.mode = 'patient' is not applied by central pretraining" in capsys.readouterr().err
    assert not (tmp_path / "run" / "final_model.pt").exists()


def _private_trainer(data: dict[str, torch.Tensor]):
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader

    trainer = make_trainer()
    loader = DataLoader([{k: v[i] for k, v in data.items()} for i in range(N)], batch_size=N)
    model, optimizer, loader = PrivacyEngine().make_private(
        module=trainer.model, optimizer=trainer.optimizer, data_loader=loader,
        noise_multiplier=0.0, max_grad_norm=1.0, poisson_sampling=False,
    )
    trainer.replace(model, optimizer)
    return trainer, loader


def test_opacus_wrapped_model_and_optimizer_can_be_swapped_in():
    trainer, loader = _private_trainer(batch(0))
    assert trainer.private
    start = {k.removeprefix("_module."): v.detach().clone() for k, v in trainer.model.named_parameters()}
    stats = trainer.train_epoch(loader, lr=1e-3)
    assert stats.steps == 1 and math.isfinite(stats.loss)
    # the gradient the optimizer used: the mean of per-sample gradients clipped to max_grad_norm
    used = float(torch.nn.utils.get_total_norm([p.grad for p in trainer.model.parameters() if p.grad is not None]))
    assert 1e-6 < used <= 1.0 + 1e-6
    assert not any(k.startswith("_module.") for k in trainer.state_dict()["model"])

    # FedProx under DP: the decoupled proximal step still pulls toward the global weights
    prox, prox_loader = _private_trainer(batch(0))
    free_d = distance({k.removeprefix("_module."): v for k, v in trainer.model.named_parameters()}, start)
    prox.train_epoch(prox_loader, lr=1e-3, proximal_mu=100.0, global_params=start)
    prox_d = distance({k.removeprefix("_module."): v for k, v in prox.model.named_parameters()}, start)
    assert prox_d < free_d


def test_paper_config_is_the_reference_recipe():
    """configs/paper.toml: the paper's loss, optimizer and SGDR schedule (its views are checked in
    tests/test_data_views.py, draw for draw against the reference pipeline)."""
    from clef_core.experiment import load_experiment

    exp = load_experiment("paper")
    loss, train = exp.loss, exp.train
    assert (loss.kind, loss.tau, loss.alpha, loss.use_mask, loss.weight_norm, loss.align_weight, loss.risk_scaling,
            loss.projection_dim, loss.shuffle_risk) == ("clef", 0.07, 0.2, True, "softmax", 1.0, "minmax", 0, False)
    assert (train.batch_size, train.lr, train.weight_decay, train.schedule, train.warm_restart_t0,
            train.warm_restart_tmult) == (64, 1e-4, 5e-4, "sgdr", 10, 2)
    assert (exp.model.scale, exp.model.norm, exp.preprocess.sample_rate) == ("small", "none", 500)
    # the SGDR rate the paper's trainer sets: eta(t) = lr (1 + cos(pi t / T0)) / 2 at fractional epoch t
    torch.manual_seed(0)
    trainer = Trainer(build_encoder("tiny"), loss, dataclasses.replace(train, device="cpu"))
    seen: list[float] = []
    trainer.train_epoch([batch(i) for i in range(2)], on_step=lambda s: seen.append(s.lr))
    assert seen == pytest.approx([1e-4 * (1 + math.cos(math.pi * (i / 2) / 10)) / 2 for i in range(2)], rel=1e-9)
