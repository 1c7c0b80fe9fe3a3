"""Differential privacy: the per-patient sensitivity bound on real gradients, the removed
contrastive coupling, accounting against an independent implementation, the ledger across
processes, the budget stop, the compatibility table, empty Poisson batches, FedProx after noise."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from clef_core.config import ConfigError, load_config
from clef_core.data.augment import ViewConfig
from clef_core.data.noise import NoiseBank
from clef_core.data.preprocess import PreprocessConfig
from clef_core.encoders import build_encoder
from clef_core.loss import clef_loss, clinical_weights
from clef_core.privacy import PrivacyConfig, check_privacy, compatibility_table, epsilon
from clef_core.privacy.bank import _SEED_OFFSET, NegativeBank, synthetic_bank
from clef_core.risk.settings import RiskSettings
from clef_core.synth import draw_clinical, make_sites
from clef_core.privacy.dpsgd import (
    PatientDPSGD,
    PoissonBatches,
    PrivacyModelError,
    clip_and_sum,
    per_patient_gradients,
    poisson_loader,
    secret_generator,
)
from clef_core.privacy.ledger import Entry, LedgerError, PrivacyLedger
from clef_core.privacy.loss import bank_weights
from clef_core.privacy.site import ledger_for, plan_round, private_round
from clef_core.train.config import LossConfig, TrainConfig
from clef_core.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
T = 1000  # short inputs keep the real Net1D gradients cheap
VIEWS = ViewConfig(crop_s=T / 500 / 2.5)  # the default disjoint crops, sized to the short test window
LOSS = LossConfig()

torch.set_num_threads(1)


class Patients(Dataset):
    """PretrainDataset-shaped items (view1, view2 (1, T), risk, completeness) from fixed tensors."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 2, 1, T, generator=g)
        self.risk = torch.rand(n, generator=g) * 0.3
        self.risk[::4] = float("nan")  # some risks unknown
        self.rho = torch.where(torch.isnan(self.risk), torch.full((n,), 3 / 7), torch.ones(n))

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"view1": self.x[i, 0], "view2": self.x[i, 1], "risk": float(self.risk[i]),
                "completeness": float(self.rho[i])}


@pytest.fixture(scope="module")
def bank() -> NegativeBank:
    return synthetic_bank(6, 0, PreprocessConfig(window_s=T / 500), VIEWS, NoiseBank(500, None))


def test_the_bank_carries_the_runs_risk_model() -> None:
    prep = PreprocessConfig(window_s=T / 500)
    score2 = synthetic_bank(8, 3, prep, VIEWS, NoiseBank(500, None))
    prevent = synthetic_bank(8, 3, prep, VIEWS, NoiseBank(500, None), RiskSettings(model="prevent"))
    # the default is the generator's true SCORE2, as before the risk models; PREVENT gives other risks
    seed = _SEED_OFFSET + 3
    truth = draw_clinical(8, make_sites(1, seed), seed, records_per_patient=(1, 1)).subjects["score2"].to_numpy()
    assert np.allclose(score2.risk.numpy(), truth, equal_nan=True)
    assert torch.equal(score2.view1, prevent.view1)
    known = ~torch.isnan(score2.risk) & ~torch.isnan(prevent.risk)
    assert known.any() and not torch.allclose(score2.risk[known], prevent.risk[known])
    assert torch.all((prevent.completeness > 0) & (prevent.completeness <= 1))


@pytest.fixture()
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_encoder("small", "group")


def grads_of(model, x, risk, rho, bank: NegativeBank):
    with torch.no_grad():
        bank_z = model(bank.view1)
    w, d = bank_weights(risk, rho, bank.risk, bank.completeness, alpha=LOSS.alpha)
    return per_patient_gradients(model, x, w, d, bank_z, LOSS)


def flat(summed: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.flatten() for v in summed.values()])


# ----------------------------------------------------------------------------- the construction


def test_bank_weights_are_the_clinical_weights_of_patient_plus_bank() -> None:
    g = torch.Generator().manual_seed(1)
    risk = torch.tensor([0.05, float("nan"), 0.3, 0.12], dtype=torch.float64)
    rho = torch.tensor([1.0, 2 / 7, 1.0, 6 / 7], dtype=torch.float64)
    bank_r = torch.rand(5, generator=g, dtype=torch.float64) * 0.2
    bank_r[2] = float("nan")
    bank_rho = torch.rand(5, generator=g, dtype=torch.float64)
    w, d = bank_weights(risk, rho, bank_r, bank_rho, alpha=0.2)
    for i in range(4):
        ref_w, ref_d = clinical_weights(torch.cat([risk[i:i + 1], bank_r]), torch.cat([rho[i:i + 1], bank_rho]),
                                        alpha=0.2)
        torch.testing.assert_close(w[i], ref_w[0, 1:])
        assert torch.equal(d[i], ref_d[0, 1:])


def test_removing_or_replacing_one_patient_moves_the_clipped_sum_by_at_most_c(model, bank) -> None:
    data = Patients(5)
    x, risk, rho = data.x, data.risk, data.rho
    grads, _ = grads_of(model, x, risk, rho, bank)
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    clip = float(norms.min()) / 2  # every patient is clipped: the bound is attained
    full, _ = clip_and_sum(grads, clip)
    for j in range(5):
        keep = [i for i in range(5) if i != j]
        removed, _ = clip_and_sum(grads_of(model, x[keep], risk[keep], rho[keep], bank)[0], clip)
        change = float((flat(full) - flat(removed)).norm())
        assert change <= clip * (1 + 1e-4)
        assert change == pytest.approx(clip, rel=1e-3)  # one patient = one clipped term, both views in it
    # replacement = remove + add: at most 2C, and the rest of the batch does not move
    other = Patients(5, seed=9)
    x2, r2, p2 = x.clone(), risk.clone(), rho.clone()
    x2[2], r2[2], p2[2] = other.x[2], other.risk[2], other.rho[2]
    replaced, _ = clip_and_sum(grads_of(model, x2, r2, p2, bank)[0], clip)
    assert float((flat(full) - flat(replaced)).norm()) <= 2 * clip * (1 + 1e-4)


def test_the_contrastive_coupling_is_removed(model, bank) -> None:
    """Patient i's gradient is the same whatever the other patients of the batch are -- unlike the
    in-batch loss, where every patient is a negative of every other."""
    data, other = Patients(4), Patients(4, seed=5)
    grads, _ = grads_of(model, data.x, data.risk, data.rho, bank)
    x2, r2, p2 = data.x.clone(), data.risk.clone(), data.rho.clone()
    x2[3], r2[3], p2[3] = other.x[3], 0.29, 1.0  # another patient changes (views and a high risk)
    grads2, _ = grads_of(model, x2, r2, p2, bank)
    for i in range(3):
        for k in grads:
            torch.testing.assert_close(grads[k][i], grads2[k][i], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(grads[k][3], grads2[k][3]) for k in grads)

    def in_batch_grad(x, risk, rho):  # patient 0's loss term in the ordinary batch loss depends on patient 3
        model.zero_grad()
        z = model(torch.cat([x[:, 0], x[:, 1]]))
        clef_loss(z, risk, rho).backward()
        return model.first_conv.conv.weight.grad.clone()

    assert not torch.allclose(in_batch_grad(data.x, data.risk, data.rho), in_batch_grad(x2, r2, p2))


def test_batchnorm_is_refused() -> None:
    with pytest.raises(PrivacyModelError, match="BatchNorm1d.*norm=\"group\""):
        trainer = Trainer(build_encoder("small", "batch"), LOSS, TrainConfig(device="cpu"))
        PatientDPSGD(trainer, NegativeBank(torch.zeros(1, 1, T), torch.zeros(1, 1, T), torch.zeros(1), torch.ones(1)),
                     noise_multiplier=1.0, clip_norm=1.0)


def test_empty_poisson_batches_still_release_noise(model, bank) -> None:
    sampler = PoissonBatches(50, 0.01, 200, secret_generator(0))
    sizes = [len(b) for b in sampler]
    assert len(sizes) == 200 and 0 in sizes and max(sizes) > 0
    assert sum(sizes) == pytest.approx(100, rel=0.5)  # expected q * n * steps
    batches = list(poisson_loader(Patients(3), 1e-9, 3, secret_generator(0)))
    assert batches == [None, None, None]
    trainer = Trainer(model, LOSS, TrainConfig(lr=1e-3, device="cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dp = PatientDPSGD(trainer, bank, noise_multiplier=1.0, clip_norm=1.0, seed=0)
    stats = dp.run(Patients(3), steps=2, sample_rate=1e-9)
    assert stats.steps == 2 and stats.empty_batches == 2 and stats.patients == 0 and trainer.step == 2
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # noise-only steps


def test_fedprox_pull_comes_after_clipping_and_noise(model, bank) -> None:
    """With lr * mu >= 1 the decoupled proximal step lands exactly on the global weights: it is
    applied after the private step and is not clipped or noised away."""
    global_params = {k: v.detach().clone() + 0.01 for k, v in model.named_parameters()}
    trainer = Trainer(model, LOSS, TrainConfig(lr=1e-2, device="cpu"))
    dp = PatientDPSGD(trainer, bank, noise_multiplier=1.0, clip_norm=1.0, seed=0)
    dp.run(Patients(4), steps=1, sample_rate=0.5, lr=1e-2, proximal_mu=100.0, global_params=global_params)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), global_params[k])
    assert not any(k.startswith("_module.") for k in model.state_dict())


# ----------------------------------------------------------------------------- accounting and the ledger


def independent_epsilon(history: list[tuple[float, float, int]], delta: float, replace_one: bool = False) -> float:
    """Google's dp-accounting RDP accountant (a separate implementation from Opacus'); with
    ``replace_one``, Mironov 2017's weak triangle inequality applied to its add/remove curve."""
    import dp_accounting
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    logging.getLogger("absl").setLevel(logging.ERROR)
    alphas = np.array([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)), dtype=float)
    orders = np.concatenate([alphas, 2 * alphas, 2 * alphas - 1]) if replace_one else alphas
    acct = rdp.RdpAccountant(orders=list(orders),
                             neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    for sigma, q, steps in history:
        acct.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    if not replace_one:
        return acct.get_epsilon(delta)
    curve = np.asarray(acct._rdp)  # noqa: SLF001 -- the composed curve at `orders`
    n = len(alphas)
    bound = (alphas - 0.5) / (alphas - 1) * curve[n:2 * n] + curve[2 * n:]
    return rdp.compute_epsilon(alphas, bound, delta)[0]


def entry(round_: int, experiment: str = "exp-a", steps: int = 8) -> Entry:
    return Entry(experiment=experiment, round=round_, mode="patient", noise_multiplier=1.1, sample_rate=0.125,
                 steps=steps, delta=1e-5, clip_norm=1.0)


def test_epsilon_grows_survives_a_restart_and_matches_an_independent_accountant(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path)
    eps = []
    for r in (1, 2, 3):
        ledger.append(entry(r))
        eps.append(ledger.epsilon(1e-5, "exp-a"))
    assert eps[0] < eps[1] < eps[2]
    ledger.append(entry(1, experiment="exp-b"))  # another experiment on the same site
    assert ledger.epsilon(1e-5, "exp-a") == eps[2] and ledger.epsilon(1e-5) > eps[2]
    # a new process with new objects reads the same ledger and gets the same epsilon
    code = ("import sys; from clef_core.privacy.ledger import PrivacyLedger; "
            "print(PrivacyLedger(sys.argv[1]).epsilon(1e-5, 'exp-a'))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert float(out.stdout) == eps[2]
    # the ledger's raw entries, composed by a different accountant: the ledger reports replace-one
    raw = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    history = [(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in raw if e["experiment"] == "exp-a"]
    assert independent_epsilon(history, 1e-5, replace_one=True) == pytest.approx(eps[2], rel=2e-3)
    assert epsilon(history, 1e-5, "replace_one") == eps[2]
    assert independent_epsilon(history, 1e-5) == pytest.approx(epsilon(history, 1e-5), rel=2e-3)
    assert eps[2] > epsilon(history, 1e-5)  # replace-one costs more than the textbook add/remove figure


def test_noise_for_epsilon_is_the_smallest_sigma_within_the_target() -> None:
    from clef_core.privacy.accounting import noise_for_epsilon

    for target, q, steps in ((8.0, 0.16, 24), (1.0, 0.05, 200), (3.0, 1.0, 5)):
        sigma = noise_for_epsilon(target, q, steps, 1e-5)
        assert epsilon([(sigma, q, steps)], 1e-5) <= target
        assert epsilon([(sigma * (1 - 1e-4), q, steps)], 1e-5) > target  # any less noise spends more
    with pytest.raises(ValueError, match="above"):
        noise_for_epsilon(1e-3, 1.0, 10_000, 1e-5)


def test_a_cut_ledger_line_stops_the_site(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path)
    ledger.append(entry(1))
    with open(ledger.path, "a") as fh:
        fh.write('{"experiment": "exp-a", "round": 2, "noise_mul')
    with pytest.raises(LedgerError, match="line 2 is unreadable"):
        ledger.epsilon(1e-5, "exp-a")


def test_private_rounds_account_and_the_budget_stops_the_site(tmp_path: Path, model, bank) -> None:
    data = Patients(8)
    base = PrivacyConfig(mode="patient", noise_multiplier=1.0, clip_norm=1.0, delta=1e-5, experiment_id="exp")
    ledger = ledger_for(base, tmp_path / "site")
    one_round = plan_round(base, ledger, "exp", len(data), 4, 1).epsilon_after  # q = 0.5, 2 steps
    priv = PrivacyConfig(**{**base.to_dict(), "budget_epsilon": one_round * 1.25})
    trainer = Trainer(model, LOSS, TrainConfig(lr=1e-3, device="cpu"))
    kwargs = dict(experiment="exp", batch_size=4, local_epochs=1, lr=1e-3, seed=0)
    first = private_round(trainer, data, bank, priv, ledger, server_round=1, **kwargs)
    assert first.trained and first.plan.steps == 2 and first.plan.sample_rate == 0.5
    assert first.epsilon == pytest.approx(one_round) and math.isfinite(first.public_loss)
    assert [e.round for e in ledger.entries("exp")] == [1]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    # a restarted site (new ledger object) would pass the budget (1.25 x one round) after round 2: refused before training
    second = private_round(trainer, data, bank, priv, ledger_for(priv, tmp_path / "site"), server_round=2, **kwargs)
    assert not second.trained and not second.plan.allowed and second.plan.epsilon_after > priv.budget_epsilon
    assert second.epsilon == pytest.approx(first.epsilon)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert len(ledger.entries()) == 1  # nothing released, nothing recorded


# ----------------------------------------------------------------------------- configuration


def test_unsupported_dp_combinations_are_refused() -> None:
    ok = load_config(None, ["privacy.mode=\"patient\"", "model.norm=\"group\"", "federation.strategy=\"fedadam\""])
    assert check_privacy(ok).mode == "patient"
    with pytest.raises(ConfigError, match="model.norm = 'batch' is refused.*running statistics"):
        check_privacy(load_config(None, ["privacy.mode=\"patient\"", "model.norm=\"batch\""]))
    client = ["privacy.mode=\"client\"", "model.norm=\"group\"", "federation.sites=3",
              "federation.min_train_nodes=3", "federation.min_available_nodes=3"]
    assert check_privacy(load_config(None, client), n_sites=3).mode == "client"
    with pytest.raises(ConfigError, match="has 4 sites but .* expects exactly 3"):
        check_privacy(load_config(None, client), n_sites=4)
    with pytest.raises(ConfigError, match="strategy = 'fedyogi' is refused.*FedAvg"):
        check_privacy(load_config(None, [*client, "federation.strategy=\"fedyogi\""]))
    with pytest.raises(ConfigError, match="min_train_nodes = 2 is refused.*no dropout"):
        check_privacy(load_config(None, [*client, "federation.min_train_nodes=2"]))
    with pytest.raises(ConfigError, match="fraction_train = 0.5 is refused"):
        check_privacy(load_config(None, [*client, "federation.fraction_train=0.5"]))
    with pytest.raises(ConfigError, match="fraction_evaluate = 0.5 is refused.*without noise"):
        check_privacy(load_config(None, ["privacy.mode=\"patient\"", "model.norm=\"group\"",
                                         "federation.fraction_evaluate=0.5"]))
    with pytest.raises(ConfigError, match="noise_multiplier"):
        PrivacyConfig(mode="patient", noise_multiplier=0.0)


def test_docs_hold_the_compatibility_table_and_the_dp_experiment_is_valid() -> None:
    assert compatibility_table() in (REPO / "docs" / "privacy.md").read_text()
    cfg = load_config("simulate-dp")
    assert check_privacy(cfg).mode == "patient"


# ----------------------------------------------------------------------------- the Flower side


def _instruction(content, node: int = 7, round_: int = 1):
    from flwr.app import Message, MessageType, Metadata

    md = Metadata(run_id=1, message_id=f"m-{node}-{round_}", src_node_id=1, dst_node_id=node, reply_to_message_id="",
                  group_id=str(round_), created_at=0.0, ttl=3600.0, message_type=MessageType.TRAIN)
    return Message(content=content, metadata=md)


def _reply(arrays: dict[str, np.ndarray], metrics: dict[str, float], node: int):
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=_instruction(_empty(), node))


def _empty():
    from flwr.app import RecordDict

    return RecordDict()


def test_client_level_dp_clips_weighs_uniformly_accounts_and_resumes() -> None:
    from flwr.app import Array, ArrayRecord

    from server.privacy import client_dp_strategy
    from server.settings import FederationSettings

    ref = {"w": np.ones((4, 3), np.float32), "b": np.ones(3, np.float32)}  # (screening bounds updates by ||w||)
    reference = ArrayRecord({k: Array(v) for k, v in ref.items()})
    priv = PrivacyConfig(mode="client", noise_multiplier=1e-6, clip_norm=0.1, delta=1e-3)
    settings = FederationSettings(strategy="fedavg", min_train_nodes=2, min_available_nodes=2)
    strategy = client_dp_strategy(settings, priv, sites=2)
    strategy.sent_arrays, strategy.sampled_nodes, strategy.dp.current_arrays = reference, [1, 2], reference
    strategy.dp._prepare_accounting(1, [_instruction(_empty(), n) for n in (1, 2)])  # what configure_train does
    a = {"w": ref["w"] + 1.0, "b": ref["b"]}  # update norm sqrt(12): clipped to 0.1
    b = {"w": ref["w"] - 0.01, "b": ref["b"]}  # update norm 0.035: kept
    arrays, _ = strategy.aggregate_train(1, [_reply(a, {"num-examples": 10.0, "train_loss": 1.0}, 1),
                                             _reply(b, {"num-examples": 30.0, "train_loss": 1.0}, 2)])
    expected = (0.1 / math.sqrt(12) - 0.01) / 2  # uniform mean of the clipped updates, not 10:30
    np.testing.assert_allclose(arrays["w"].numpy(), 1.0 + expected, atol=1e-5)
    assert [v.metrics["num-examples"] for v in strategy.last_screen.verdicts] == [10.0, 30.0]
    spent = strategy.privacy_spent().epsilon
    assert spent > 0
    resumed = client_dp_strategy(settings, priv, sites=2)
    resumed.load_state_dict(strategy.state_dict())
    assert resumed.privacy_spent().epsilon == spent and resumed.privacy_spent().num_releases == 1
    # a missing site: no release, no spending
    strategy.sent_arrays, strategy.sampled_nodes = reference, [1, 2]
    strategy.dp._prepare_accounting(2, [_instruction(_empty(), n) for n in (1, 2)])
    assert strategy.aggregate_train(2, [_reply(a, {"num-examples": 10.0, "train_loss": 1.0}, 1)]) == (None, None)
    assert strategy.privacy_spent().epsilon == spent


def test_server_sets_aside_stopped_sites_and_reports_the_largest_epsilon() -> None:
    from flwr.app import Array, ArrayRecord

    from server.privacy import BudgetAwareValidator, ServerPrivacy

    ref = {"w": np.ones((2, 2), np.float32)}
    reference = ArrayRecord({k: Array(v) for k, v in ref.items()})
    m = {"num-examples": 10.0, "train_loss": 1.0, "privacy.delta": 1e-5}
    replies = [_reply({"w": ref["w"] + 0.1}, {**m, "privacy.epsilon": 2.0, "privacy.budget_exhausted": 0.0}, 1),
               _reply(ref, {**m, "privacy.epsilon": 5.5, "privacy.budget_exhausted": 1.0}, 2)]
    screen = BudgetAwareValidator().screen(replies, reference, [1, 2])
    assert [r.metadata.src_node_id for r in screen.accepted] == [1]
    assert [v.status for v in screen.verdicts] == ["accepted", "stopped"]
    cfg = load_config(None, ["privacy.mode=\"patient\"", "model.norm=\"group\""])
    policy = ServerPrivacy(cfg, previous_lines=[{"round": 1, "epsilon": 6.0}])
    assert policy.round_fields(None, screen)["epsilon"] == 6.0  # a site's earlier, larger epsilon is kept
    policy = ServerPrivacy(cfg)
    assert policy.round_fields(None, screen) == {"epsilon": 5.5, "delta": 1e-5, "privacy_mode": "patient",
                                                 "sites_stopped": 1}
    assert policy.budget_stop(screen) and policy.budget_stop(BudgetAwareValidator().screen(replies[1:], reference, [2]))
    assert not policy.budget_stop(BudgetAwareValidator().screen(replies[1:], reference, [2, 3]))  # 3 is missing


@pytest.fixture(scope="module")
def dp_site(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from clef_core.federation.sites import clear_cache
    from simulations.sites import prepare_federation

    root = tmp_path_factory.mktemp("dpfed")
    cfg = load_config(None, ["synth.patients=16", "synth.sites=1", "federation.sites=1", "federation.holdout=0.0",
                             "federation.min_train_nodes=1", "federation.min_available_nodes=1",
                             "federation.min_site_patients=2", "train.batch_size=4", "model.norm=\"group\"",
                             "privacy.mode=\"patient\"", "privacy.bank_size=8", "privacy.experiment_id=\"exp-1\""])
    prepared = prepare_federation(cfg, root)
    clear_cache()
    return {"cfg": cfg, "spec": prepared.sites[0], "root": root}


def test_a_private_site_round_replies_within_the_contract(dp_site: dict) -> None:
    import dataclasses

    from flwr.app import ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import validate_message_reply_consistency

    from clef_core.federation.contract import PRIVACY_METRICS, TRAIN_METRICS
    from clef_core.federation.local import site_train
    from server.loop import initial_arrays

    cfg, spec = dp_site["cfg"], dp_site["spec"]
    assert spec.policy.mode == "patient"  # a simulated site demands what the experiment asks
    _, arrays = initial_arrays(cfg)
    log = logging.getLogger("test.dp")

    def round_(r: int, site):
        conf = {"server-round": r, "lr": 1e-3, "local-epochs": 1, "local-steps": 2, "seed": 0}
        weights, metrics = site_train(arrays.to_torch_state_dict(), conf, cfg, site, log, run_dir=str(dp_site["root"]))
        return RecordDict({"arrays": ArrayRecord(weights), "metrics": MetricRecord(metrics)})

    first = round_(1, spec)
    metrics = first.metric_records["metrics"]
    assert set(metrics) == set(TRAIN_METRICS) | set(PRIVACY_METRICS)
    assert all(math.isfinite(v) for v in metrics.values()) and metrics["privacy.budget_exhausted"] == 0.0
    assert metrics["steps"] == 2 and metrics["privacy.epsilon"] > 0 and metrics["skipped.empty_batches"] == 0.0
    assert metrics["privacy.unit_is_record"] == 0.0  # a MIMIC-layout site: patients from record_list
    sent = first.array_records["arrays"]
    assert list(sent.keys()) == list(arrays.keys())  # bare names: no "_module." prefix
    assert any(not np.array_equal(sent[k].numpy(), arrays[k].numpy()) for k in arrays)
    ledger = PrivacyLedger(spec.work_dir / "privacy")
    assert [(e.experiment, e.round) for e in ledger.entries()] == [("exp-1", 1)]
    # the site's own budget (tighter than the experiment's none) stops round 2
    tight = dataclasses.replace(spec, policy=dataclasses.replace(spec.policy,
                                                                 budget_epsilon=metrics["privacy.epsilon"] * 1.01))
    stopped = round_(2, tight)
    m2 = stopped.metric_records["metrics"]
    assert m2["privacy.budget_exhausted"] == 1.0 and m2["steps"] == 0.0
    assert m2["privacy.epsilon"] == metrics["privacy.epsilon"] and len(ledger.entries()) == 1
    back = stopped.array_records["arrays"]
    assert all(np.array_equal(back[k].numpy(), arrays[k].numpy()) for k in arrays)
    validate_message_reply_consistency([first, stopped], "num-examples", check_arrayrecord=True)
