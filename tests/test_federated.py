"""Federated pretraining: the real ClientApp's replies, reply screening, strategies, checkpoints,
the run_config mapping, and one end-to-end simulation in Flower's engine (Ray) on real records."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import validate_message_reply_consistency

from clef_core.checkpoint import load_model
from clef_core.config import ConfigError, load_config
from client import client_app
from clef_core.federation.contract import TRAIN_METRICS
from clef_core.federation.run_config import experiment_config
from clef_core.federation.sites import SiteSpec, clear_cache, read_manifest, write_manifest
from client.client_app import SiteFailure
from server.checkpoint import ResumeError, ServerRunFolder, ServerState, check_same_experiment
from server.loop import initial_arrays
from server.settings import FederationSettings
from server.strategy import aggregate_train_metrics, build_strategy, round_lr
from server.validation import ReplyValidator
from simulations.sites import prepare_federation

REPO = Path(__file__).resolve().parents[1]
TINY = ["synth.patients=16", "synth.sites=2", "federation.sites=2", "federation.holdout=0.0",
        "federation.min_site_patients=2", "train.batch_size=4", "model.scale=small"]
ECG_SITES = {"ptbxl": "HR", "ningbo": "JS", "georgia": "E"}

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- helpers


def instruction(content: RecordDict, node: int = 7, round_: int = 1,
                kind: str = MessageType.TRAIN) -> Message:
    """A real instruction Message as the SuperLink delivers it (metadata filled in)."""
    md = Metadata(run_id=1, message_id=f"m-{node}-{round_}-{time.time_ns()}", src_node_id=1, dst_node_id=node,
                  reply_to_message_id="", group_id=str(round_), created_at=time.time(), ttl=3600.0,
                  message_type=kind)
    return Message(content=content, metadata=md)


def train_message(arrays: ArrayRecord, round_: int = 1, steps: int = 2, mu: float | None = None,
                  node: int = 7) -> Message:
    config = ConfigRecord({"server-round": round_, "lr": 1e-3, "local-epochs": 1, "local-steps": steps, "seed": 0})
    if mu is not None:
        config["proximal-mu"] = mu
    return instruction(RecordDict({"arrays": arrays, "config": config}), node, round_)


def context(run_config: dict, **node_config) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=run_config)


def reply(arrays: dict[str, np.ndarray], metrics: dict[str, float], node: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=instruction(RecordDict(), node))


def link_records(folder: Path, source: Path, prefix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.glob(f"{prefix}*")):
        (folder / file.name).symlink_to(file)
    return folder


# ----------------------------------------------------------------------------- a tiny federation


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 16-patient synthetic cohort split into 2 sites, with its experiment file and run_config."""
    root = tmp_path_factory.mktemp("fed")
    cfg = load_config(None, TINY)
    prepared = prepare_federation(cfg, root)
    experiment = root / "experiment.toml"
    import tomli_w

    experiment.write_text(tomli_w.dumps(cfg))
    run_config = {"experiment": str(experiment), "set": "", "run-dir": str(root), "sites-manifest": "",
                  "prepare-sites": False}
    _, arrays = initial_arrays(cfg)
    clear_cache()
    return {"root": root, "cfg": cfg, "sites": prepared.sites, "run_config": run_config, "arrays": arrays}


def test_train_reply_follows_the_contract_and_leaks_nothing(fed: dict) -> None:
    replies = [client_app.app(train_message(fed["arrays"], node=10 + p), context(fed["run_config"], **{
        "partition-id": p, "num-partitions": 2})) for p in range(2)]
    for rep in replies:
        content = rep.content
        assert set(content.keys()) == {"arrays", "metrics"}
        assert len(content.array_records) == 1 and len(content.metric_records) == 1 and not content.config_records
        metrics = content.metric_records["metrics"]
        assert set(metrics.keys()) == set(TRAIN_METRICS)
        assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
        assert metrics["num-examples"] > 0 and metrics["steps"] == 2
        arrays = content.array_records["arrays"]
        assert list(arrays.keys()) == list(fed["arrays"].keys())
        assert all(arrays[k].shape == fed["arrays"][k].shape for k in arrays)
        assert any(not np.array_equal(arrays[k].numpy(), fed["arrays"][k].numpy()) for k in arrays)
    # Flower's own consistency check of the Message-API strategies passes
    validate_message_reply_consistency([r.content for r in replies], "num-examples", check_arrayrecord=True)
    # privacy: no record id, patient id or path appears anywhere in what is sent back
    secrets = {str(fed["root"])}
    for site in fed["sites"]:
        manifest = pd.read_csv(site.data_dir / "manifest.csv", dtype=str)
        secrets |= set(manifest["record_id"]) | set(manifest["subject_id"]) | {str(site.data_dir), site.site_id}
    for rep in replies:
        texts = list(rep.content.keys()) + [k for r in rep.content.values() for k in r.keys()]
        blob = b"".join(a.data for a in rep.content.array_records["arrays"].values())
        for secret in secrets:
            assert not any(secret in t for t in texts), secret
            assert len(secret) < 8 or secret.encode() not in blob, secret


def test_a_broken_site_fails_without_revealing_why(fed: dict, shared_data: Path, tmp_path: Path) -> None:
    good = link_records(tmp_path / "ptbxl", shared_data / "ecg", "HR")
    # a record whose signal file is missing: the store skips it and counts it by reason
    shutil.copy(shared_data / "ecg" / "HR06001.hea", good / "PATIENTX99.hea")
    (good / "PATIENTX99.hea").write_text((good / "PATIENTX99.hea").read_text().replace("HR06001", "PATIENTX99"))
    absent = tmp_path / "no-such-hospital"
    manifest = write_manifest(tmp_path / "sites.json", [
        SiteSpec("ptbxl", good, tmp_path / "work" / "ptbxl", 0), SiteSpec("gone", absent, tmp_path / "work" / "gone", 1)])
    run_config = {**fed["run_config"], "sites-manifest": str(manifest)}
    rep = client_app.app(train_message(fed["arrays"]), context(run_config, **{"partition-id": 0}))
    metrics = rep.content.metric_records["metrics"]
    assert metrics["skipped.missing_file"] == 1.0
    assert "PATIENTX99" not in json.dumps(dict(metrics))
    assert "PATIENTX99" in (tmp_path / "work" / "ptbxl" / "store" / "skipped.csv").read_text()
    with pytest.raises(SiteFailure) as failure:
        client_app.app(train_message(fed["arrays"]), context(run_config, **{"partition-id": 1}))
    assert str(failure.value) == "site train failed; details are in the site's own log"  # not even the type
    assert str(absent) in (tmp_path / "work" / "gone" / "site.log").read_text()
    with pytest.raises(SiteFailure) as failure:
        client_app.app(train_message(fed["arrays"]), context(run_config, **{"partition-id": 5}))
    assert str(failure.value) == "site train failed; details are in the site's own log"


def test_deployment_site_comes_from_node_config(fed: dict, shared_data: Path, tmp_path: Path) -> None:
    data = link_records(tmp_path / "georgia", shared_data / "ecg", "E")
    # a deployed site reads only shipped experiment names: the run sends the rest as `set`
    run_config = {**fed["run_config"], "experiment": "", "set": " ".join(TINY),
                  "sites-manifest": str(tmp_path / "nowhere.json")}
    rep = client_app.app(train_message(fed["arrays"], steps=1), context(
        run_config, **{"data-dir": str(data), "site-id": "georgia", "work-dir": str(tmp_path / "w"), "site-index": 4,
                       "privacy-mode": "off"}))
    assert rep.content.metric_records["metrics"]["site-index"] == 4.0
    assert (tmp_path / "w" / "site.log").is_file()


def test_dirichlet_over_risk_strata_uses_the_clinical_table(fed: dict) -> None:
    from simulations.partition import patient_table
    from simulations.sites import risk_clinical

    cohort = fed["root"] / "cohort"
    strata = patient_table(cohort, risk_clinical(cohort, fed["cfg"]))["stratum"]
    assert (strata != "unknown").any() and set(strata) <= {"low_moderate", "high", "very_high", "unknown"}


def test_optimizer_state_resets_between_rounds(fed: dict) -> None:
    """Two identical train messages give bit-identical weights: nothing (no AdamW moments, no
    step count) carries over from one round to the next."""
    ctx = context(fed["run_config"], **{"partition-id": 0})
    first = client_app.app(train_message(fed["arrays"]), ctx).content.array_records["arrays"]
    second = client_app.app(train_message(fed["arrays"]), ctx).content.array_records["arrays"]
    assert all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)
    assert not list((fed["sites"][0].work_dir).glob("*state*"))  # nothing about training persisted


def test_fedprox_mu_from_the_server_pulls_towards_the_global_model(fed: dict) -> None:
    ctx = context(fed["run_config"], **{"partition-id": 1})
    ref = {k: v.numpy() for k, v in fed["arrays"].items()}

    def drift(mu: float) -> float:
        arrays = client_app.app(train_message(fed["arrays"], steps=4, mu=mu), ctx).content.array_records["arrays"]
        return math.sqrt(sum(float(np.sum((arrays[k].numpy() - ref[k]) ** 2)) for k in ref))

    assert drift(1000.0) < drift(0.0)


def test_evaluate_reports_a_local_loss(fed: dict) -> None:
    msg = instruction(RecordDict({"arrays": fed["arrays"], "config": ConfigRecord({"server-round": 1})}),
                      kind=MessageType.EVALUATE)
    rep = client_app.app(msg, context(fed["run_config"], **{"partition-id": 0}))
    metrics = rep.content.metric_records["metrics"]
    assert set(metrics) == {"num-examples", "eval_loss", "site-index"} and math.isfinite(metrics["eval_loss"])
    assert not rep.content.array_records


# ----------------------------------------------------------------------------- screening and strategies


def small_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"w": rng.normal(size=(4, 3)).astype(np.float32), "b": np.zeros(3, np.float32),
            "n": np.array(5, dtype=np.int64)}


def good_metrics(n: float = 10.0) -> dict[str, float]:
    return {"num-examples": n, "train_loss": 1.0, "skipped.flat_line": 0.0, "site-index": 0.0}


def test_validator_rejects_bad_replies_and_reports_them() -> None:
    ref = small_model()
    reference = ArrayRecord({k: Array(v) for k, v in ref.items()})
    nan = {**ref, "w": np.where(np.eye(4, 3) > 0, np.nan, ref["w"]).astype(np.float32)}
    replies = [
        reply({**ref, "w": ref["w"] + 0.01}, good_metrics(), node=1),
        reply(nan, good_metrics(), node=2),
        reply({**ref, "w": np.zeros((3, 4), np.float32)}, good_metrics(), node=3),
        reply({"w": ref["w"], "b": ref["b"]}, good_metrics(), node=4),
        reply({**ref, "w": ref["w"] * 1e3}, good_metrics(), node=5),
        reply(ref, {**good_metrics(), "num-examples": 0.0}, node=6),
        reply(ref, {"num-examples": 3.0, "train_loss": 1.0}, node=7),
        reply({**ref, "b": ref["b"] - 0.01}, good_metrics(30.0), node=8),
        Message(Error(code=3, reason="<class 'RuntimeError'>:<'patient p1234 ...'>"), reply_to=instruction(RecordDict(), 9)),
    ]
    screened = ReplyValidator(max_update_ratio=10.0).screen(replies, reference, sampled=[1, 2, 3, 4, 5, 6, 7, 8, 9, 11])
    status = {v.node_id: (v.status, v.reason) for v in screened.verdicts}
    assert [m.metadata.src_node_id for m in screened.accepted] == [1, 8]
    assert status[2][0] == "rejected" and "NaN" in status[2][1]
    assert status[3][0] == "rejected" and "shape" in status[3][1]
    assert status[4][0] == "rejected" and "missing ['n']" in status[4][1]
    assert status[5][0] == "rejected" and "update norm" in status[5][1]
    assert status[6][0] == "rejected" and "num-examples" in status[6][1]
    assert status[7][0] == "rejected" and "metric names differ" in status[7][1]
    assert status[9] == ("failed", "client error (code 3)")  # the client's error text is not kept
    assert status[11][0] == "missing"


def test_an_error_reply_written_by_the_superlink_is_attributed_to_the_dead_node() -> None:
    # when a SuperNode dies, the SuperLink answers for it with an error whose source is the
    # SuperLink itself (node 1): the verdict must name the node the instruction went to
    ref = small_model()
    reference = ArrayRecord({k: Array(v) for k, v in ref.items()})
    sent = [instruction(RecordDict(), node) for node in (4, 9)]
    from_superlink = Message(Error(code=5, reason="node 9 unavailable"), reply_to=sent[1])
    from_superlink.metadata.__dict__["_src_node_id"] = 1
    replies = [Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in ref.items()}),
                                   "metrics": MetricRecord(good_metrics())}), reply_to=sent[0]), from_superlink]
    destinations = {m.metadata.message_id: m.metadata.dst_node_id for m in sent}
    screened = ReplyValidator().screen(replies, reference, sampled=[4, 9], destinations=destinations)
    assert sorted((v.node_id, v.status) for v in screened.verdicts) == [(4, "accepted"), (9, "failed")]
    unattributed = ReplyValidator().screen(replies, reference, sampled=[4, 9])
    assert sorted((v.node_id, v.status) for v in unattributed.verdicts) == [(1, "failed"), (4, "accepted"), (9, "missing")]


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedadam", "fedyogi"])
def test_strategies_average_only_accepted_replies(name: str) -> None:
    ref = small_model()
    reference = ArrayRecord({k: Array(v) for k, v in ref.items()})
    settings = FederationSettings(strategy=name, proximal_mu=0.1, min_train_nodes=2, min_available_nodes=2)
    strategy = build_strategy(settings, client_lr=1e-3)
    strategy.sent_arrays, strategy.sampled_nodes = reference, [1, 2, 3]
    strategy.inner.current_arrays = {k: v.copy() for k, v in ref.items()}  # what FedOpt's configure_train keeps
    a, b = {**ref, "w": ref["w"] + 1.0, "n": np.array(7)}, {**ref, "w": ref["w"] + 3.0, "n": np.array(9)}
    bad = {**ref, "w": np.full((4, 3), np.inf, np.float32)}
    arrays, metrics = strategy.aggregate_train(1, [reply(a, good_metrics(10), 1), reply(b, good_metrics(30), 2),
                                                   reply(bad, good_metrics(1000), 3)])
    w = arrays["w"].numpy()
    assert arrays["n"].numpy().dtype == np.int64 and arrays["w"].numpy().dtype == np.float32
    if name in ("fedavg", "fedprox"):
        np.testing.assert_allclose(w, ref["w"] + 2.5, rtol=1e-6)  # (10*1 + 30*3) / 40
        assert int(arrays["n"].numpy()) == 8  # 8.5 rounded to even
    else:  # a server-side adaptive step in the direction of the accepted average
        assert np.all(w > ref["w"]) and np.all(w - ref["w"] < 2.5)
        assert set(strategy.state_dict()) == {"m_t", "v_t"}
    assert metrics["num-examples"] == 40.0 and metrics["train_loss"] == 1.0 and "site-index" not in metrics
    assert strategy.last_screen.count("rejected") == 1
    # too few accepted replies: nothing is aggregated
    assert strategy.aggregate_train(2, [reply(a, good_metrics(), 1)]) == (None, None)


def test_fedadam_state_round_trips() -> None:
    ref = small_model()
    reference = ArrayRecord({k: Array(v) for k, v in ref.items()})
    settings = FederationSettings(strategy="fedadam")

    def step(strategy, base, delta):
        strategy.sent_arrays, strategy.sampled_nodes = base, [1, 2]
        strategy.inner.current_arrays = {k: v.numpy() for k, v in base.items()}
        moved = {k: np.asarray(v.numpy() + (delta if k == "w" else 0)) for k, v in base.items()}
        out, _ = strategy.aggregate_train(2, [reply(moved, good_metrics(), 1), reply(moved, good_metrics(), 2)])
        return out

    first = build_strategy(settings, 1e-3)
    after1 = step(first, reference, 0.5)
    resumed = build_strategy(settings, 1e-3)
    resumed.load_state_dict(first.state_dict())
    a, b = step(first, after1, -0.2), step(resumed, after1, -0.2)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    fresh = step(build_strategy(settings, 1e-3), after1, -0.2)
    assert not np.array_equal(fresh["w"].numpy(), a["w"].numpy())


def test_cosine_lr_across_rounds() -> None:
    lrs = [round_lr(r, 10, 1e-3, 1e-5, "cosine") for r in range(1, 11)]
    assert lrs[0] == 1e-3 and all(x > y for x, y in zip(lrs, lrs[1:], strict=False)) and lrs[-1] > 1e-5
    assert round_lr(6, 10, 1e-3, 1e-5, "cosine") == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)
    assert round_lr(7, 10, 1e-3, 0.0, "constant") == 1e-3


def test_train_metric_aggregation_sums_counts() -> None:
    records = [RecordDict({"m": MetricRecord({"num-examples": 10.0, "train_loss": 1.0, "skipped.flat_line": 2.0,
                                              "seconds": 3.0, "site-index": 0.0})}),
               RecordDict({"m": MetricRecord({"num-examples": 30.0, "train_loss": 2.0, "skipped.flat_line": 1.0,
                                              "seconds": 5.0, "site-index": 1.0})})]
    out = aggregate_train_metrics(records, "num-examples")
    assert dict(out) == {"num-examples": 40.0, "train_loss": 1.75, "skipped.flat_line": 3.0, "seconds": 5.0}


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_resume_and_metrics_reconciliation(tmp_path: Path) -> None:
    folder = ServerRunFolder(tmp_path / "run")
    assert folder.latest() is None
    fp = {"encoder": {"scale": "small"}, "strategy": "fedadam"}
    ref = small_model()
    for r in (1, 2, 3):
        folder.save_round(ServerState(r, {k: v + r for k, v in ref.items()}, {"m_t": {"w": ref["w"] * r}},
                                      {"round": r, "train_loss": 1.0 / r}, fp), keep=2)
    assert folder.rounds() == [2, 3]
    state = folder.latest()
    assert state.round == 3 and np.array_equal(state.arrays["w"], ref["w"] + 3)
    assert np.array_equal(state.strategy["m_t"]["w"], ref["w"] * 3)
    assert state.arrays["n"].dtype == np.int64 and state.arrays["n"].shape == ()
    # a crash after round 4's metrics line but before its checkpoint, and a cut line
    folder.append_metrics({"round": 4, "train_loss": 0.1})
    with open(folder.metrics, "a") as fh:
        fh.write('{"round": 5, "tra')
    folder.reconcile_metrics(state)
    assert [line["round"] for line in folder.read_metrics()] == [1, 2, 3]
    # a crash after round 3's checkpoint but before its metrics line
    folder.metrics.write_text("".join(json.dumps(x) + "\n" for x in folder.read_metrics()[:2]))
    folder.reconcile_metrics(state)
    assert folder.read_metrics()[-1] == {"round": 3, "train_loss": 1.0 / 3}
    check_same_experiment(state, fp, {k: v for k, v in ref.items()}, "run")
    with pytest.raises(ResumeError, match="strategy"):
        check_same_experiment(state, {**fp, "strategy": "fedavg"}, ref, "run")
    with pytest.raises(ResumeError, match="do not fit"):
        check_same_experiment(state, fp, {**ref, "w": np.zeros((2, 2))}, "run")
    # only plain values and tensors: loadable with weights_only
    torch.load(folder.round_path(3), weights_only=True)


# ----------------------------------------------------------------------------- the server loop in-process


class SerialGrid(Grid):
    """Flower's Grid contract served in-process: each message goes to the real ClientApp with
    that node's Context (partition-id), one after the other; an exception becomes an error reply
    as in Flower's engines. The Ray engine is exercised by the end-to-end test."""

    def __init__(self, run_config: dict, nodes: int, crash_at: int = 0) -> None:
        self.crash_at = crash_at  # simulate the server process dying when this round starts
        self.contexts = {100 + p: Context(run_id=1, node_id=100 + p, node_config={"partition-id": p},
                                          state=RecordDict(), run_config=run_config) for p in range(nodes)}

    def set_run(self, run) -> None:  # pragma: no cover - not used by the loop
        raise NotImplementedError

    @property
    def run(self):  # pragma: no cover
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:  # pragma: no cover
        raise NotImplementedError

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            if msg.content["config"].get("server-round") == self.crash_at:
                raise KeyboardInterrupt("the server was killed")
            msg.metadata.__dict__["_message_id"] = f"m{time.time_ns()}"
            try:
                replies.append(client_app.app(msg, self.contexts[msg.metadata.dst_node_id]))
            except Exception as exc:
                replies.append(Message(Error(code=3, reason=str(exc)), reply_to=msg))
        return replies


@pytest.fixture()
def task_identity():
    """Messages made by a ServerApp carry the run's identity (set by Flower's runtime)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def test_server_loop_resumes_exactly_and_fails_below_min_nodes(fed: dict, tmp_path: Path, task_identity) -> None:
    """With one of three sites broken: 3 rounds straight == killed during round 3, rerun (weights,
    FedAdam moments, metrics); with min_train_nodes = 3 the round fails and the status says so."""
    from server.loop import Federation, RoundFailed

    sites = [*fed["sites"], SiteSpec("gone", tmp_path / "absent", tmp_path / "w-gone", 2)]
    manifest = write_manifest(tmp_path / "sites.json", sites)
    run_config = {**fed["run_config"], "sites-manifest": str(manifest)}

    def run(folder: Path, rounds: int, min_train: int = 2, crash_at: int = 0) -> Federation:
        cfg = experiment_config(run_config)
        cfg["federation"].update(rounds=rounds, strategy="fedadam", min_train_nodes=min_train,
                                 min_available_nodes=3, local_steps=1, eval_every=0)
        federation = Federation(cfg, ServerRunFolder(folder), manifest)
        federation.run(SerialGrid(run_config, 3, crash_at))
        return federation

    straight = run(tmp_path / "straight", 3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", 3, crash_at=3)
    assert ServerRunFolder(tmp_path / "resumed").rounds() == [1, 2]
    resumed = run(tmp_path / "resumed", 3)
    assert resumed.start_round == 3
    a, b = ServerRunFolder(tmp_path / "straight").latest(), ServerRunFolder(tmp_path / "resumed").latest()
    assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    assert all(np.array_equal(a.strategy["v_t"][k], b.strategy["v_t"][k]) for k in a.strategy["v_t"])
    lines = ServerRunFolder(tmp_path / "resumed").read_metrics()
    straight_lines = ServerRunFolder(tmp_path / "straight").read_metrics()
    assert [x["train_loss"] for x in lines] == [x["train_loss"] for x in straight_lines]
    assert all(x["failed"] == 1 and x["accepted"] == 2 for x in lines)
    assert [e.get("site") for e in lines[0]["sites"] if e["status"] == "failed"] == ["gone"]
    assert straight.folder.final_model.is_file()
    assert load_model(straight.folder.final_model).provenance["privacy"] is None  # privacy off: server.privacy.NoPrivacy
    assert not any("epsilon" in x or "privacy_mode" in x for x in lines)
    with pytest.raises(RoundFailed, match="only 2 of 3"):
        run(tmp_path / "strict", 1, min_train=3)
    status = ServerRunFolder(tmp_path / "strict").read_status()
    assert status["state"] == "failed" and "node" in status["sites"]
    assert not (tmp_path / "strict" / "final_model.pt").exists()


@pytest.mark.parametrize("mode", ["client", "patient"])
def test_privacy_modes_plug_into_the_loop_and_keep_counting_after_a_restart(
        mode: str, tmp_path: Path, task_identity) -> None:
    """The server loop and the ClientApp hand over to server/privacy.py and clef_core/federation/local.py:
    epsilon is reported every round and grows on across a restart; the final model records it."""
    import tomli_w

    from server.loop import Federation

    cfg = load_config(None, TINY + [f"privacy.mode={mode}", "model.norm=group", "federation.local_steps=2",
                                    "federation.eval_every=0", "federation.rounds=1"])
    out = tmp_path / mode
    prepare_federation(cfg, out)
    (out / "experiment.toml").write_text(tomli_w.dumps(cfg))
    run_config = {"experiment": str(out / "experiment.toml"), "set": "", "run-dir": str(out), "sites-manifest": "",
                  "prepare-sites": False}
    for rounds in (1, 2):
        cfg["federation"]["rounds"] = rounds
        Federation(cfg, ServerRunFolder(out), out / "sites.json").run(SerialGrid(run_config, 2))
    eps = [line["epsilon"] for line in ServerRunFolder(out).read_metrics()]
    assert len(eps) == 2 and 0 < eps[0] < eps[1]
    assert load_model(out / "final_model.pt").provenance["privacy"]["epsilon"] == eps[1]


# ----------------------------------------------------------------------------- configuration


def test_run_config_maps_onto_the_experiment(tmp_path: Path) -> None:
    experiment = tmp_path / "exp.toml"
    experiment.write_text('[federation]\nrounds = 7\nstrategy = "fedprox"\nproximal_mu = 0.1\n[train]\nlr = 0.01\n')
    run_config = {"experiment": str(experiment), "set": "train.lr=0.02 loss.tau=0.2", "run-dir": "",
                  "sites-manifest": "", "prepare-sites": True, "federation.rounds": 3, "federation.sites": "",
                  "train.batch_size": ""}
    cfg = experiment_config(run_config)
    assert cfg["federation"]["rounds"] == 3  # -c beats the file
    assert cfg["federation"]["strategy"] == "fedprox" and cfg["train"]["lr"] == 0.02  # set beats the file
    assert cfg["loss"]["tau"] == 0.2 and cfg["train"]["batch_size"] == load_config()["train"]["batch_size"]
    with pytest.raises(ConfigError, match="unknown config key"):
        experiment_config({**run_config, "federation.round": 2})
    with pytest.raises(ConfigError, match="proximal_mu"):
        FederationSettings(strategy="fedprox", proximal_mu=0.0)


def test_the_console_names_the_strategy_and_its_settings() -> None:
    """`clef simulate` logs this line at the start of the rounds (server/loop.py)."""
    line = FederationSettings(strategy="fedprox", proximal_mu=0.01, local_steps=4).describe()
    assert line == "strategy fedprox (proximal_mu 0.01), 4 local steps, fraction_train 1, lr schedule cosine"
    assert "server_lr 0.01" in FederationSettings(strategy="fedyogi").describe()


def test_pyproject_flower_app_matches_the_config() -> None:
    """Every dotted key `flwr run -c` accepts is a real experiment key, and the shipped
    experiments are valid federations."""
    app = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "server.server_app:app", "clientapp": "client.client_app:app"}
    from flwr.common.config import flatten_dict

    flat = flatten_dict(app["config"])
    cfg = load_config()
    for key, value in flat.items():
        if "." in key:
            section, name = key.split(".", 1)
            assert name in cfg[section], key
            assert value == "", key
    for name in ("default", "simulate-small"):
        FederationSettings.from_config(load_config(name))


def test_a_bare_flwr_run_prepares_the_sites_with_the_function_run_config_names(tmp_path: Path, task_identity) -> None:
    """`flwr run .` with prepare-sites=true and no sites.json: the app's ServerApp (server/) writes
    the sites with the function run_config site-preparer names (the simulation's, looked up by
    name) and trains on them; a name that is not a function is an error naming the key."""
    from clef_core.federation.run_config import site_preparer
    from server.server_app import run_server

    app_config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert site_preparer(app_config) is prepare_federation
    for bad, why in (("simulations.sites", "expected 'module:function'"), ("simulations.nowhere:f", "cannot import"),
                     ("simulations.sites:nothing", "has no function nothing"), ("", "expected")):
        with pytest.raises(ConfigError, match=f"site-preparer = .*{why}"):
            site_preparer({"site-preparer": bad})
    overrides = TINY + ["federation.rounds=1", "federation.local_steps=1", "federation.eval_every=0"]
    run_config = {"experiment": "", "set": " ".join(overrides), "run-dir": str(tmp_path), "sites-manifest": "",
                  "prepare-sites": True, "site-preparer": app_config["site-preparer"]}
    final = run_server(SerialGrid(run_config, 2), context(run_config))
    specs, _ = read_manifest(tmp_path / "sites.json")
    assert len(specs) == 2 and final.is_file()
    assert [e["status"] for e in ServerRunFolder(tmp_path).read_metrics()[0]["sites"]] == ["accepted", "accepted"]


def test_sites_manifest_round_trip(tmp_path: Path) -> None:
    specs = [SiteSpec("a", tmp_path / "a", tmp_path / "wa", 0), SiteSpec("b", tmp_path / "b", tmp_path / "wb", 1, "cuda:1")]
    write_manifest(tmp_path / "sites.json", specs, tmp_path / "holdout")
    assert read_manifest(tmp_path / "sites.json") == (specs, tmp_path / "holdout")


# ----------------------------------------------------------------------------- end to end


def _simulate(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clef", "simulate", "--quiet", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.slow
def test_simulation_on_three_real_sites_survives_a_broken_site_and_a_killed_server(
        shared_data: Path, tmp_path: Path) -> None:
    """PTB-XL, Ningbo and Georgia records as three hospitals plus one whose signal files are gone
    (its headers pass the check before the run; a missing folder is refused before the engine
    starts, tests/test_run_lifecycle.py), in Flower's simulation engine: the server is killed
    during round 2, rerun, resumes and finishes; the broken site is reported every round and
    never stops the run."""
    sites = [link_records(tmp_path / name, shared_data / "ecg", prefix) for name, prefix in ECG_SITES.items()]
    closed = tmp_path / "closed-hospital"
    closed.mkdir()
    for header in sorted((shared_data / "ecg").glob("*.hea"))[:2]:
        shutil.copy(header, closed / header.name)  # without its .mat: no record can be read
    sites.append(closed)
    from clef_core.synth import generate_cohort

    generate_cohort(tmp_path / "held-out", patients=40, sites=1, seed=1)  # labelled, for the server's probe
    out = tmp_path / "run"
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), "OMP_NUM_THREADS": "1"}
    args = ["--out", str(out), "--sites", *map(str, sites),
            "--set", "federation.rounds=3", "--set", "federation.min_train_nodes=3",
            "--set", "federation.min_available_nodes=4", "--set", "federation.local_steps=1",
            "--set", "federation.fraction_evaluate=1.0",
            "--set", "train.batch_size=4", "--set", f"federation.eval_dir=\"{tmp_path / 'held-out'}\""]
    first = _simulate(args, env)
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "round_00001.pt").exists():
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "no round completed in time"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGTERM)  # the server dies during round 2
    first.wait(timeout=60)
    killed = ServerRunFolder(out)
    assert killed.read_status().get("state") != "complete"
    done_before = killed.rounds()
    line1 = killed.read_metrics()[0]

    second = _simulate(args, env)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    folder = ServerRunFolder(out)
    lines = folder.read_metrics()
    assert [x["round"] for x in lines] == [1, 2, 3] and lines[0] == line1
    assert folder.read_status()["state"] == "complete" and max(done_before) < 3
    for line in lines:
        assert line["accepted"] == 3 and line["failed"] == 1 and line["train_loss"] is not None
        assert line["bytes_sent"] > 0 and line["bytes_received"] > 0
        names = {s.get("site") for s in line["sites"] if s["status"] == "accepted"}
        assert names == set(ECG_SITES)
        assert [s["status"] for s in line["sites"]].count("failed") == 1
        assert math.isfinite(line["eval"]["eval_loss"]) and line["eval_failed"] == 1
    assert 0 <= lines[-1]["probe_auroc"] <= 1 and 0 <= lines[0]["probe_auroc_initial"] <= 1
    model = load_model(out / "final_model.pt")
    assert model.provenance["kind"] == "federated-pretrain" and set(model.provenance["sites"]) == set(ECG_SITES)
    assert model.provenance["risk"]["model"] == "score2"  # the clinical risk behind the run's weights
    assert (out / "summary.png").stat().st_size > 0
    assert "closed-hospital" in output  # the summary names the failing site
    assert not processes_in(out), "processes of the simulation outlived it"


def processes_in(folder: Path) -> list[int]:
    """Pids whose working directory is inside ``folder`` (the SuperLink and its children run in
    ``<out>/.flwr``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(Path(os.readlink(proc / "cwd"))).startswith(str(folder)):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_server_probe_is_clef_evaluates_probe() -> None:
    """The server's probe scores with clef_core.evaluation's folds, probe and AUROC: a label the
    features carry scores near 1, a label with too few positives is left out."""
    from clef_core.evaluation.protocol import oof_decisions, score
    from server.probe import L2, ProbeSet, probe_scores

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 2)
    signal = rng.integers(0, 2, size=40).repeat(2).astype(float)
    rare = np.zeros(80)
    rare[:3] = 1.0  # below MIN_PER_CLASS positives
    features = rng.normal(size=(80, 8)) + 3.0 * signal[:, None]
    probe = ProbeSet(np.zeros((80, 10)), np.stack([signal, rare], axis=1), groups, ["signal", "rare"])
    out = probe_scores(features, probe, folds=5, seed=0)
    assert set(out) == {"probe_auroc", "probe_auroc.signal", "probe_pos.signal", "probe_neg.signal"}
    assert out["probe_auroc.signal"] > 0.95 and out["probe_pos.signal"] == signal.sum()
    reference = score("binary", ["signal"], signal[:, None], oof_decisions(
        features, signal[:, None], "binary", ["signal"], groups, folds=5, seed=0, l2=L2))["labels"]["signal"]["auroc"]
    assert out["probe_auroc"] == reference
