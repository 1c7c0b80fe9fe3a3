"""The loss options beside the paper's defaults (rank risk scaling, mean-one weights, unknown pairs
at the mean weight, a power on D, projection head, the two placebos) and the batch weight diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

from clef_core.encoders import build_encoder
from clef_core.loss import batch_quantiles, clef_loss, clinical_weights, log_weights, nt_xent
from clef_core.placebo import placebo_inputs
from clef_core.train import LossConfig, TrainConfig, Trainer
from clef_core.train.trainer import placebo_permutation
from clef_core.weight_diagnostics import batch_diagnostics

N = 8


def _inputs(seed: int = 0, n: int = N):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * n, 16, generator=g, dtype=torch.float64)
    risk = torch.rand(n, generator=g, dtype=torch.float64) * 0.3
    rho = torch.rand(n, generator=g, dtype=torch.float64)
    return z, risk, rho


def _negatives(n: int) -> torch.Tensor:
    two_n = 2 * n
    pos = (torch.arange(two_n) + n) % two_n
    return ~((pos[:, None] == torch.arange(two_n)[None, :]) | torch.eye(two_n, dtype=torch.bool))


def test_mean_one_weights_have_mean_one():
    _, risk, rho = _inputs()
    risk[1] = math.nan
    w, _ = clinical_weights(risk, rho, alpha=0.2)
    eff = torch.exp(log_weights(w.repeat(2, 2), "mean_one"))
    neg = _negatives(N)
    row_means = torch.stack([eff[i][neg[i]].mean() for i in range(2 * N)])
    assert torch.allclose(row_means, torch.ones(2 * N, dtype=torch.float64))
    # the softmax keeps weights close together; mean-one keeps W's ratios
    soft = torch.exp(log_weights(w.repeat(2, 2), "softmax"))
    tiled = w.repeat(2, 2)
    for i in range(2 * N):  # within an anchor's row the ratios of W are kept
        assert torch.allclose(eff[i][neg[i]] / eff[i][neg[i]][0], tiled[i][neg[i]] / tiled[i][neg[i]][0])
    ratio = lambda m: float(m[neg].max() / m[neg].min())  # noqa: E731
    assert ratio(soft) < ratio(eff)


def test_mean_one_with_equal_weights_is_nt_xent():
    z, _, rho = _inputs(1)
    loss = clef_loss(z, torch.full((N,), 0.1, dtype=torch.float64), rho, alpha=1.0, use_mask=False,
                     weight_norm="mean_one", align_weight=0.0)
    assert float(loss) == pytest.approx(float(nt_xent(z)), rel=1e-12)


def test_rank_scaling_ignores_the_risk_scale_and_outliers():
    z, risk, rho = _inputs(2)
    base = clef_loss(z, risk, rho, risk_scaling="rank")
    assert float(clef_loss(z, torch.exp(10 * risk), rho, risk_scaling="rank")) == pytest.approx(float(base), rel=1e-12)
    outlier = risk.clone()
    outlier[0] = 50.0  # one absurd risk squeezes every other minmax difference towards 0, not the ranks
    w_rank, _ = clinical_weights(outlier, None, alpha=0.0, risk_scaling="rank")
    w_minmax, _ = clinical_weights(outlier, None, alpha=0.0)
    others = w_rank[1:, 1:][~torch.eye(N - 1, dtype=torch.bool)]
    assert float(others.max()) > 0.5 and float(w_minmax[1:, 1:].max()) < 1e-3
    q = batch_quantiles(torch.tensor([0.3, math.nan, 0.1, 0.1, 0.9]))
    assert torch.allclose(q[[0, 2, 3, 4]], torch.tensor([2 / 3, 1 / 6, 1 / 6, 1.0]))
    assert math.isnan(float(q[1]))


def test_defaults_are_the_papers():
    z, risk, rho = _inputs(3)
    assert float(clef_loss(z, risk, rho)) == float(clef_loss(z, risk, rho, weight_norm="softmax", risk_scaling="minmax"))
    cfg = LossConfig()
    assert (cfg.weight_norm, cfg.risk_scaling, cfg.projection_dim, cfg.shuffle_risk) == ("softmax", "minmax", 0, False)
    assert (cfg.unknown_weight, cfg.weight_power, cfg.shuffle_scope) == ("one", 1.0, "all")
    assert float(clef_loss(z, risk, rho)) == float(clef_loss(z, risk, rho, unknown_weight="one", weight_power=1.0))


def test_unknown_pairs_weigh_as_the_mean_known_pair():
    _, risk, rho = _inputs(6)
    risk[[1, 4]] = math.nan
    paper, _ = clinical_weights(risk, None, alpha=0.2)
    mean, defined = clinical_weights(risk, None, alpha=0.2, unknown_weight="mean")
    known = ~torch.isnan(risk)
    known_off = known[:, None] & known[None, :] & ~torch.eye(N, dtype=torch.bool)
    assert torch.equal(mean[known_off], paper[known_off])  # known pairs keep their D
    assert float(paper[1, 4]) == 1.0 and float(paper[0, 1]) == 1.0  # the paper: unknown = the ceiling
    expected = paper[known_off].mean()
    assert torch.allclose(mean[~known_off & ~torch.eye(N, dtype=torch.bool)], expected)
    assert float(expected) < 1.0 and torch.equal(defined, known[:, None] & known[None, :] | torch.eye(N, dtype=torch.bool))
    none_known, _ = clinical_weights(torch.full((N,), math.nan, dtype=torch.float64), None, unknown_weight="mean")
    assert float(none_known[0, 1]) == 1.0  # no known pair: plain negatives


def test_weight_power_sharpens_the_known_pairs():
    _, risk, _ = _inputs(7)
    base, _ = clinical_weights(risk, None, alpha=0.2, risk_scaling="rank")
    sharp, _ = clinical_weights(risk, None, alpha=0.2, risk_scaling="rank", weight_power=4.0)
    off = ~torch.eye(N, dtype=torch.bool)
    assert torch.allclose(sharp[off], base[off] ** 4)
    assert float(sharp[off].max() / sharp[off].min()) == pytest.approx(float(base[off].max() / base[off].min()) ** 4)


def test_known_placebo_moves_only_known_risks():
    risk = torch.tensor([0.1, math.nan, 0.3, 0.2, math.nan, 0.5], dtype=torch.float64)
    rho = torch.linspace(0, 1, 6, dtype=torch.float64)
    perm = torch.tensor([5, 1, 0, 4, 3, 2])
    r, c = placebo_inputs(risk, rho, perm, "known")
    assert torch.equal(c, rho) and torch.isnan(r[[1, 4]]).all()  # missingness and completeness stay
    assert r[[0, 2, 3, 5]].tolist() == [0.5, 0.1, 0.2, 0.3]  # the known risks in the order perm visits them
    r_all, c_all = placebo_inputs(risk, rho, perm, "all")
    assert torch.equal(c_all, rho[perm]) and torch.isnan(r_all[[3, 1]]).all()
    full = torch.arange(6, dtype=torch.float64)  # every risk known: both scopes move risk alike
    assert torch.equal(placebo_inputs(full, rho, perm, "known")[0], full[perm])
    with pytest.raises(ValueError, match="shuffle_scope"):
        placebo_inputs(risk, rho, perm, "some")


def test_the_trainer_runs_the_known_placebo():
    trainer = _trainer(shuffle_risk=True, shuffle_scope="known")
    seen = []
    real = trainer.criterion
    trainer.criterion = lambda z, b: (seen.append((b["risk"].clone(), b["completeness"].clone())), real(z, b))[1]
    b = _batch()
    b["risk"][[0, 3]] = math.nan
    trainer.train_epoch([b, b])
    for step, (r, c) in enumerate(seen):
        expected, _ = placebo_inputs(b["risk"].float(), b["completeness"].float(), placebo_permutation(6, 0, step), "known")
        assert torch.equal(torch.isnan(r), torch.isnan(b["risk"])) and torch.equal(c, b["completeness"].float())
        assert torch.allclose(r, expected, equal_nan=True)


def _trainer(**loss) -> Trainer:
    torch.manual_seed(0)
    return Trainer(build_encoder("tiny"), LossConfig(**loss), TrainConfig(lr=1e-3, device="cpu"))


def _batch(n: int = 6) -> dict:
    g = torch.Generator().manual_seed(5)
    base = torch.randn(n, 1, 500, generator=g)
    return {"view1": base, "view2": base + 0.1 * torch.randn(n, 1, 500, generator=g),
            "risk": torch.arange(n, dtype=torch.float64) / 10, "completeness": torch.linspace(0, 1, n, dtype=torch.float64)}


def test_placebo_shuffles_only_within_the_batch():
    trainer = _trainer(shuffle_risk=True)
    seen = []
    real = trainer.criterion
    trainer.criterion = lambda z, b: (seen.append((b["risk"].clone(), b["completeness"].clone())), real(z, b))[1]
    b = _batch()
    trainer.train_epoch([b, b])
    for step, (r, c) in enumerate(seen):
        perm = placebo_permutation(6, 0, step)
        assert torch.equal(r, b["risk"].float()[perm]) and torch.equal(c, b["completeness"].float()[perm])
        assert sorted(r.tolist()) == sorted(b["risk"].float().tolist())  # the batch's own risks, nothing else
    assert not torch.equal(seen[0][0], seen[1][0])  # a new permutation every step
    assert sorted(placebo_permutation(64, 3, 7).tolist()) == list(range(64))


def test_projection_head_trains_and_stays_out_of_the_encoder(tmp_path):
    trainer = _trainer(projection_dim=32)
    head_before = [p.detach().clone() for p in trainer.head.parameters()]
    trainer.train_epoch([_batch()])
    assert any(not torch.equal(a, b) for a, b in zip(head_before, trainer.head.parameters()))
    assert not any(k.startswith("head") for k in trainer.model.state_dict())
    trainer.save_state(tmp_path / "s.pt")
    again = _trainer(projection_dim=32)
    again.load_state(tmp_path / "s.pt")
    assert all(torch.equal(a, b) for a, b in zip(trainer.head.state_dict().values(), again.head.state_dict().values()))
    _trainer().save_state(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="projection head"):
        _trainer(projection_dim=32).load_state(tmp_path / "plain.pt")


def test_diagnostics_of_a_batch():
    z, risk, rho = _inputs(4, n=16)
    risk[:4] = math.nan
    ntx = batch_diagnostics(risk, rho, LossConfig(kind="ntxent"), z)
    assert ntx["weight_ratio"] == 1.0 and ntx["grad_cosine_placebo"] == pytest.approx(1.0)
    assert ntx["risk_known"] == 0.75 and ntx["pairs_with_risk"] == pytest.approx(66 / 120)
    paper = batch_diagnostics(risk, rho, LossConfig(), z)
    assert paper["spearman_w_completeness"] < 0  # M = exp(-rho_i rho_k) falls with completeness
    repaired = batch_diagnostics(risk, rho, LossConfig(use_mask=False, risk_scaling="rank", weight_norm="mean_one"), z)
    # monotone in the rank difference (not the risk difference), row-normalised: high but below 1
    assert repaired["spearman_w_riskdiff"] > 0.8 and repaired["weight_ratio"] > paper["weight_ratio"]
    assert repaired["grad_cosine_placebo"] < 0.999
    # the paper's weights reward missingness: pairs with an unknown risk weigh most (D = 1)
    assert paper["mean_w_unknown_unknown"] > paper["mean_w_known_unknown"] > paper["mean_w_known_known"]
    # ... and the weights' deviation from NT-Xent barely depends on the risk values; the new defaults' does
    new = batch_diagnostics(risk, rho, LossConfig(use_mask=False, risk_scaling="rank", weight_norm="mean_one",
                                                  unknown_weight="mean", weight_power=4.0, align_weight=0.0), z)
    assert paper["clinical_cosine_placebo_known"] > 0.9 > new["clinical_cosine_placebo_known"]
    assert new["mean_w_unknown_unknown"] < new["mean_w_known_known"] * 1.5 and new["grad_change_placebo_known"] > 0
    assert math.isnan(ntx["clinical_cosine_placebo"])  # NT-Xent (all weights equal) has no clinical part


def test_bad_options_are_named():
    z, risk, rho = _inputs()
    with pytest.raises(ValueError, match="risk_scaling"):
        clef_loss(z, risk, rho, risk_scaling="log")
    from clef_core.config import ConfigError
    with pytest.raises(ConfigError, match="projection_dim"):
        LossConfig(projection_dim=-1)
    for bad, key in (({"unknown_weight": "zero"}, "unknown_weight"), ({"weight_power": 0.0}, "weight_power"),
                     ({"shuffle_scope": "some"}, "shuffle_scope")):
        with pytest.raises(ConfigError, match=key):
            LossConfig(**bad)
    with pytest.raises(ValueError, match="unknown_weight"):
        clef_loss(z, risk, rho, unknown_weight="zero")
    with pytest.raises(ValueError, match="weight_power"):
        clef_loss(z, risk, rho, weight_power=-1.0)
    from clef_core.privacy.dpsgd import check_dp_loss
    with pytest.raises(ValueError, match="weight_power"):  # the DP bank loss implements the paper's options only
        check_dp_loss(LossConfig(weight_power=2.0))


def test_clef_diagnose_command(tiny_site, tmp_path, capsys):
    import json

    from clef.cli import main

    out = tmp_path / "diag.json"
    code = main(["diagnose", "--cohort", str(tiny_site.root), "--work", str(tmp_path / "w"), "--batches", "2",
                 "--set", "train.batch_size=8", "--set", "model.scale=\"tiny\"", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "pairs_with_risk" in text and "repaired (study.repaired)" in text
    stats = json.loads(out.read_text())["statistics"]["paper defaults"]
    assert 0 <= stats["risk_known"] <= 1 and -1 <= stats["grad_cosine_placebo"] <= 1
    assert main(["diagnose", "--cohort", str(tmp_path / "nothing"), "--work", str(tmp_path / "w2")]) == 1
    # the oracle needs a hidden factor: the default cohort has none, and the error names it
    assert main(["diagnose", "--cohort", str(tiny_site.root), "--work", str(tmp_path / "w"), "--oracle"]) == 1
    assert "risk_factor" in capsys.readouterr().err
