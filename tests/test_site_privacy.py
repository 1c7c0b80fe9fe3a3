"""The hospital owns its privacy: each attack a hostile coordinator (run config, ServerApp, weights)
tried against a site pinned to patient-level DP, through the real ClientApp on a real store.

Every test here failed against the code before the site policy existed (commit 8271dcd: the run
config's [privacy] was the site's privacy, views were seeded by a patient's position, a failing
private step left the ledger untouched and named its exception type)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, Metadata, RecordDict

from clef_core.config import load_config
from clef_core.federation.sites import clear_cache
from clef_core.privacy.ledger import Entry, PrivacyLedger
from client import client_app
from client.client_app import SiteFailure, SiteRefusal
from server.loop import initial_arrays
from simulations.sites import prepare_federation

torch.set_num_threads(1)
EXPERIMENT = ["synth.patients=16", "synth.sites=1", "federation.sites=1", "federation.holdout=0.0",
              "federation.min_site_patients=2", "train.batch_size=4", "model.norm=\"group\"",
              "privacy.mode=\"patient\"", "privacy.bank_size=8", "privacy.experiment_id=\"trial-1\""]
BUDGET = 8.0


def message(arrays: ArrayRecord, kind: str = MessageType.TRAIN, round_: int = 1) -> Message:
    config = ConfigRecord({"server-round": round_, "lr": 1e-3, "local-epochs": 1, "local-steps": 1, "seed": 0})
    md = Metadata(run_id=1, message_id=f"m-{time.time_ns()}", src_node_id=1, dst_node_id=7, reply_to_message_id="",
                  group_id=str(round_), created_at=time.time(), ttl=3600.0, message_type=kind)
    return Message(content=RecordDict({"arrays": arrays, "config": config}), metadata=md)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A deployed site (node config with its own policy: patient DP, budget 8) that has already
    spent epsilon 11.8 in its ledger, and the run config of an honest DP experiment."""
    root = tmp_path_factory.mktemp("hospital")
    cfg = load_config(None, EXPERIMENT)
    data = prepare_federation(cfg, root / "split").sites[0].data_dir
    node = {"data-dir": str(data), "site-id": "hospital-a", "work-dir": str(root / "work"), "privacy-mode": "patient",
            "privacy-noise-multiplier": 1.0, "privacy-clip-norm": 1.0, "privacy-delta": 1e-5,
            "privacy-budget": BUDGET}
    _, arrays = initial_arrays(cfg)
    clear_cache()
    return {"root": root, "node": node, "arrays": arrays, "run": run_config(root / "run")}


def run_config(run_dir: Path) -> dict:
    """An honest DP run: a deployed site reads only shipped experiment names, the rest is `set`."""
    return {"experiment": "", "set": shlex.join(EXPERIMENT), "run-dir": str(run_dir), "sites-manifest": "",
            "prepare-sites": False}


def ledger(h: dict) -> PrivacyLedger:
    return PrivacyLedger(Path(h["node"]["work-dir"]) / "privacy")


def call(h: dict, run: dict | None = None, node: dict | None = None, msg: Message | None = None) -> Message:
    run = dict(run or {})
    if "set" in run:  # the run's own overrides after the honest experiment's
        run["set"] = h["run"]["set"] + " " + run["set"]
    ctx = Context(run_id=1, node_id=7, node_config=node or h["node"], state=RecordDict(),
                  run_config={**h["run"], **run})
    return client_app.app(msg or message(h["arrays"]), ctx)


def refused(h: dict, **kwargs) -> str:
    before = [e.time for e in ledger(h).entries()]
    with pytest.raises(SiteRefusal) as refusal:
        call(h, **kwargs)
    assert [e.time for e in ledger(h).entries()] == before  # nothing spent, nothing trained
    log = (Path(h["node"]["work-dir"]) / "site.log").read_text()
    assert str(refusal.value) in log
    return str(refusal.value)


def spend(h: dict, epsilon_entries: int) -> None:
    """Earlier releases of this site (another experiment): (sigma 1, q 1, 40 steps) entries."""
    for i in range(epsilon_entries):
        ledger(h).append(Entry(experiment="earlier", round=i + 1, mode="patient", noise_multiplier=1.0,
                               sample_rate=1.0, steps=40, delta=1e-5))


def test_an_honest_request_trains_under_the_sites_policy_and_is_accounted(hospital: dict) -> None:
    metrics = call(hospital).content.metric_records["metrics"]
    assert metrics["privacy.budget_exhausted"] == 0.0 and 0 < metrics["privacy.epsilon"] < BUDGET
    assert [e.experiment for e in ledger(hospital).entries()] == ["trial-1"]


def test_a_run_cannot_switch_the_sites_dp_off(hospital: dict) -> None:
    spend(hospital, 2)
    assert ledger(hospital).epsilon(1e-5) > 11.8  # far past the site's budget of 8
    text = refused(hospital, run={"set": 'privacy.mode="off"'})
    assert text == "refused by the site: it trains only under patient-level differential privacy"
    # client-level DP adds its noise on the server: the server would see the raw update
    refused(hospital, run={"set": 'privacy.mode="client"'})


@pytest.mark.parametrize("override", ['privacy.delta=0.9', 'privacy.noise_multiplier=0.3', 'privacy.clip_norm=50.0'])
def test_a_run_cannot_weaken_delta_noise_or_clipping(hospital: dict, override: str) -> None:
    key = override.split("=")[0]
    assert refused(hospital, run={"set": override}) == f"refused by the site: {key} is weaker than the site's policy"


def test_a_run_cannot_move_the_ledger_or_its_scope(hospital: dict, tmp_path: Path) -> None:
    for override in (f'privacy.ledger_dir="{tmp_path / "fresh"}"', 'privacy.budget_scope="experiment"'):
        refused(hospital, run={"set": override})
        refused(hospital, run={override.split("=")[0]: override.split("=", 1)[1].strip('"')})
    assert not (tmp_path / "fresh").exists()


def test_a_run_cannot_point_the_site_at_other_folders(hospital: dict, tmp_path: Path) -> None:
    assert refused(hospital, run={"set": f'metadata.hosp_dir="{tmp_path}"'}) == \
        "refused by the site: the run names a folder on the site's disk"
    refused(hospital, run={"set": f'views.noise_dir="{tmp_path}"'})


def test_the_budget_counts_every_experiment_of_the_site(hospital: dict) -> None:
    """A new experiment name does not reset the spending: the site's budget scope is its own."""
    spend(hospital, 2)
    metrics = call(hospital, run={"set": 'privacy.experiment_id="brand-new"'}).content.metric_records["metrics"]
    assert metrics["privacy.budget_exhausted"] == 1.0 and metrics["steps"] == 0.0
    assert "brand-new" not in {e.experiment for e in ledger(hospital).entries()}


def test_no_noiseless_evaluation_under_dp(hospital: dict) -> None:
    assert refused(hospital, msg=message(hospital["arrays"], kind=MessageType.EVALUATE)) == \
        "refused by the site: no federated evaluation under differential privacy"
    # even when the run itself asks for no DP
    refused(hospital, msg=message(hospital["arrays"], kind=MessageType.EVALUATE), run={"set": 'privacy.mode="off"'})


def test_a_failing_private_step_is_accounted_and_says_nothing(hospital: dict, tmp_path: Path) -> None:
    """Weights chosen by the server so that the private step fails (a NaN weight makes every
    patient's loss non-finite): the round is spent in the ledger before any private step runs, and
    the failure that comes back is a fixed text -- not even the exception type."""
    node = {**hospital["node"], "work-dir": str(tmp_path / "work")}
    poisoned = hospital["arrays"].to_torch_state_dict()
    first = next(k for k, v in poisoned.items() if v.is_floating_point())
    poisoned[first] = poisoned[first].clone().fill_(float("nan"))
    with pytest.raises(SiteFailure) as failure:
        call(hospital, node=node, msg=message(ArrayRecord(poisoned)))
    assert str(failure.value) == "site train failed; details are in the site's own log"
    assert [e.round for e in PrivacyLedger(tmp_path / "work" / "privacy").entries()] == [1]


def test_a_non_finite_patient_counts_as_zero_within_the_clip() -> None:
    from clef_core.privacy.dpsgd import clip_and_sum, zero_nonfinite

    grads = {"w": torch.tensor([[3.0, 4.0], [float("nan"), 1.0], [0.6, 0.8]])}
    kept, finite = zero_nonfinite(grads, torch.tensor([1.0, 2.0, float("inf")]))
    assert finite.tolist() == [True, False, False]
    summed, _ = clip_and_sum(kept, clip_norm=1.0)
    assert torch.allclose(summed["w"], torch.tensor([0.6, 0.8]))  # only the finite patient, clipped to C


def test_removing_a_real_patient_changes_only_that_patients_gradient(shared_data: Path, tmp_path: Path) -> None:
    """Per-patient gradients (both views, against the public bank) of every patient of a real
    site, with and without one patient: every other patient's gradient is bit-identical."""
    from clef_core.encoders import build_encoder
    from clef_core.federation.local import public_bank
    from clef_core.pipeline import prepare_site
    from clef_core.privacy.dpsgd import per_patient_gradients
    from clef_core.privacy.loss import bank_weights
    from clef_core.privacy.config import PrivacyConfig
    from clef_core.train.config import LossConfig
    from clef_core.data.augment import ViewConfig
    from clef_core.task import make_dataset

    cfg = load_config(None, ['model.norm="group"', "privacy.bank_size=4"])
    records = sorted(p.stem for p in (shared_data / "ecg").glob("JS*.hea"))[:6]
    full, less = tmp_path / "full", tmp_path / "less"
    for folder, names in ((full, records), (less, records[:2] + records[3:])):  # drop the third patient
        folder.mkdir()
        for name in names:
            for f in (shared_data / "ecg").glob(f"{name}.*"):
                (folder / f.name).symlink_to(f)
    torch.manual_seed(0)
    model = build_encoder("small", norm="group")
    priv = PrivacyConfig.from_config(cfg)
    grads = {}
    for folder in (full, less):
        site = prepare_site(folder, tmp_path / f"work-{folder.name}", cfg, progress=False)
        assert site.privacy_unit == "record"
        dataset = make_dataset(ViewConfig(**cfg["views"]), site, seed=0)
        dataset.set_epoch(3)
        bank = public_bank(cfg, site, priv)
        bank_z = bank.embed(lambda x: model(x).float()).detach()
        items = [dataset[i] for i in range(len(dataset))]
        x = torch.stack([torch.stack([it["view1"], it["view2"]]) for it in items])
        risk = torch.tensor([it["risk"] for it in items], dtype=torch.float32)
        rho = torch.tensor([it["completeness"] for it in items], dtype=torch.float32)
        w, defined = bank_weights(risk, rho, bank.risk.float(), bank.completeness.float(), alpha=0.2)
        # one patient per vmap chunk: batched kernels of another batch size round differently (~1e-8)
        g, _ = per_patient_gradients(model, x, w, defined, bank_z, LossConfig(**cfg["loss"]), chunk=1)
        grads[folder.name] = {sid: {k: v[i] for k, v in g.items()} for i, sid in enumerate(dataset.subject_ids)}
    assert set(grads["full"]) - set(grads["less"]) == {records[2]}
    for sid, g in grads["less"].items():
        assert all(torch.equal(g[k], grads["full"][sid][k]) for k in g), sid


def test_a_wfdb_site_says_when_its_unit_is_the_record(shared_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "georgia"
    data.mkdir()
    for f in sorted((shared_data / "ecg").glob("E075*")):
        (data / f.name).symlink_to(f)
    node = {"data-dir": str(data), "site-id": "georgia", "work-dir": str(tmp_path / "w"), "privacy-mode": "patient",
            "privacy-budget": 100.0}  # q = 0.4: one replace-one step costs 8.5
    cfg = load_config(None, EXPERIMENT)
    _, arrays = initial_arrays(cfg)
    h = {"node": node, "arrays": arrays, "run": run_config(tmp_path / "run")}
    metrics = call(h).content.metric_records["metrics"]
    assert metrics["privacy.unit_is_record"] == 1.0 and metrics["num-examples"] == 10.0
    assert "privacy unit: RECORD" in (tmp_path / "w" / "site.log").read_text()
    # a site mapping file names the patients: two records of one person are one privacy unit
    (data / "patients.csv").write_text("record_id,subject_id\n" + "".join(
        f"E0750{i},{'p1' if i < 2 else f'p{i}'}\n" for i in range(10)))
    clear_cache()  # a restarted SuperNode; the changed map itself makes the site rebuild its store
    metrics = call(h).content.metric_records["metrics"]
    assert metrics["privacy.unit_is_record"] == 0.0 and metrics["num-examples"] == 9.0
    assert json.dumps(dict(metrics)).find("p1") < 0


def test_the_request_rules_of_the_policy() -> None:
    """docs/privacy.md's table: stronger requests are taken, weaker refused, budgets only lowered."""
    from clef_core.privacy.config import PrivacyConfig
    from clef_core.privacy.policy import PrivacyPolicyError, PrivacyRefusal, SitePolicy, effective_privacy

    strict = SitePolicy(mode="patient", noise_multiplier=1.0, clip_norm=1.0, delta=1e-5, budget_epsilon=8.0)
    more = effective_privacy(strict, PrivacyConfig(mode="patient", noise_multiplier=2.0, delta=1e-6, budget_epsilon=20))
    assert (more.noise_multiplier, more.delta, more.budget_epsilon, more.budget_scope) == (2.0, 1e-6, 8.0, "site")
    assert effective_privacy(strict, PrivacyConfig(mode="patient", budget_epsilon=3.0)).budget_epsilon == 3.0
    relaxed = SitePolicy()  # demands no DP: the run's request decides, the ledger stays the site's
    assert effective_privacy(relaxed, PrivacyConfig(mode="client")).mode == "client"
    assert effective_privacy(relaxed, PrivacyConfig(mode="patient", noise_multiplier=0.5)).noise_multiplier == 0.5
    with pytest.raises(PrivacyRefusal, match="delta is too large"):
        effective_privacy(relaxed, PrivacyConfig(mode="patient", delta=0.5))
    for bad in ({"privacy-mode": "client"}, {"privacy-delta": 0.5}, {"privacy-budget": "lots"},
                {"privacy-bugdet": 3.0}, {"privacy-noise-multiplier": 0}):
        with pytest.raises(PrivacyPolicyError):
            SitePolicy.from_node_config(bad)


def test_a_broken_patients_file_is_named(tmp_path: Path) -> None:
    from clef_core.data.records import read_patients_file

    (tmp_path / "patients.csv").write_text("record_id,subject_id\nA1,p1\nA2,\n")
    with pytest.raises(ValueError, match=r"patients.csv: line 3 has an empty record_id or subject_id"):
        read_patients_file(tmp_path)
    (tmp_path / "patients.csv").write_text("record,patient\nA1,p1\n")
    with pytest.raises(ValueError, match=r"patients.csv: missing column\(s\) \['record_id', 'subject_id'\]"):
        read_patients_file(tmp_path)
    (tmp_path / "patients.csv").write_text("record_id,subject_id\nA1,p1\nA1,p2\n")
    with pytest.raises(ValueError, match="record 'A1' is listed more than once"):
        read_patients_file(tmp_path)


# ----------------------------------------------------------------------------- issue 19: the second round
# Each test below failed against main at 06890b5 (the attack worked); docs/privacy.md lists them.


def test_a_run_cannot_count_the_sites_patients(hospital: dict) -> None:
    """The counting oracle: the run's [preprocess] thresholds decide which records a site keeps,
    and every reply -- a budget refusal forced with a tiny budget included -- carried
    num-examples = n, so sweeping max_abs_mv read the patient count at zero epsilon."""
    for value in (0.5, 1.0, 2.0, 5.0):
        assert refused(hospital, run={"set": f"preprocess.max_abs_mv={value}"}) == \
            "refused by the site: the run's [preprocess] is not the site's"
    metrics = call(hospital, run={"set": "privacy.budget_epsilon=1e-9"}).content.metric_records["metrics"]
    assert metrics["privacy.budget_exhausted"] == 1.0
    assert (metrics["num-examples"], metrics["examples"], metrics["steps"], metrics["seconds"]) == (1.0, 0.0, 0.0, 0.0)
    # the site's own preprocessing is what counts: a site that set its own refuses the defaults
    own = {**hospital["node"], "preprocess-max-abs-mv": 12.0}
    assert refused(hospital, node=own) == "refused by the site: the run's [preprocess] is not the site's"


def test_a_runs_budget_does_not_probe_other_experiments_spending(hospital: dict, tmp_path: Path) -> None:
    """A run lowering its budget learned the whole site's spending (other experiments included)
    from when budget_exhausted flipped; its budget now bounds its own experiment only."""
    node = {**hospital["node"], "work-dir": str(tmp_path / "work"), "privacy-budget": 50.0}
    PrivacyLedger(tmp_path / "work" / "privacy").append(Entry(experiment="someone-else", round=1, mode="patient",
                                                              noise_multiplier=1.0, sample_rate=0.25, steps=40,
                                                              delta=1e-5))
    own_round = 7.32  # replace-one epsilon of one step at q = 0.25, sigma 1 (the whole site: 40.8 <= 50)
    metrics = call(hospital, node=node, run={"set": f"privacy.budget_epsilon={own_round}"}).content.metric_records
    assert metrics["metrics"]["privacy.budget_exhausted"] == 0.0
    assert metrics["metrics"]["privacy.epsilon"] == pytest.approx(7.314, abs=1e-3)


RACE = """
import sys, time
from clef_core.privacy.config import PrivacyConfig
from clef_core.privacy.site import ledger_for, spend_round
folder, start, budget, name = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
priv = PrivacyConfig(mode="patient", budget_epsilon=budget, experiment_id=name)
ledger = ledger_for(priv, folder)
while time.time() < start:
    time.sleep(0.001)
plan = spend_round(priv, ledger, experiment=name, server_round=1, patients=16, batch_size=4, local_epochs=1)
print(plan.allowed)
"""


def test_two_concurrent_rounds_cannot_both_pass_the_budget(tmp_path: Path) -> None:
    """Flower starts one ClientApp process per task: two runs checked the budget against the same
    spending and both appended (two rounds of 7.8 left a budget-8 site at 10.6). The check and the
    append now hold one lock file in the ledger folder."""
    from clef_core.privacy.config import PrivacyConfig
    from clef_core.privacy.site import ledger_for, plan_round

    work = tmp_path / "site"
    ledger = ledger_for(PrivacyConfig(mode="patient"), work)
    for i in range(20):  # earlier releases: a long ledger made the unlocked window long
        ledger.append(Entry(experiment="earlier", round=i, mode="patient", noise_multiplier=3.0 + i / 100,
                            sample_rate=0.05, steps=5, delta=1e-5))
    priv = PrivacyConfig(mode="patient", experiment_id="x")
    plan = plan_round(priv, ledger, "a", 16, 4, 1)  # q = 0.25, 4 steps
    one = plan.checked
    two = ledger.epsilon(1e-5, None, planned=(1.0, plan.sample_rate, 2 * plan.steps))  # both rounds
    budget = (one + two) / 2
    start = time.time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(work), str(start), str(budget), name],
                              stdout=subprocess.PIPE, text=True) for name in ("a", "b")]
    allowed = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert allowed == ["False", "True"]
    assert ledger.epsilon(1e-5) <= budget and len(ledger.entries()) == 21


def test_a_deleted_or_moved_ledger_stops_the_site(hospital: dict, tmp_path: Path) -> None:
    """Deleting, emptying or moving the ledger reset the site's spending to 0; the high-water mark
    beside its store now says how many releases the site made."""
    node = {**hospital["node"], "work-dir": str(tmp_path / "work")}
    assert call(hospital, node=node).content.metric_records["metrics"]["privacy.budget_exhausted"] == 0.0
    book = PrivacyLedger(tmp_path / "work" / "privacy")
    assert len(book.entries()) == 1
    moved = {**node, "privacy-ledger-dir": str(tmp_path / "fresh-ledger")}
    with pytest.raises(SiteFailure):
        call(hospital, node=moved)
    assert not PrivacyLedger(tmp_path / "fresh-ledger").entries()
    book.path.write_text("")  # emptied
    with pytest.raises(SiteFailure):
        call(hospital, node=node)
    book.path.unlink()  # deleted
    with pytest.raises(SiteFailure):
        call(hospital, node=node)
    assert not book.path.exists() or not book.entries()
    assert "holds 0 entries, but this site recorded 1" in (tmp_path / "work" / "site.log").read_text()
    (tmp_path / "work" / "ledger.mark.json").unlink()  # the mark as well: the site's log still remembers
    with pytest.raises(SiteFailure):
        call(hospital, node=node)
    assert "records earlier private rounds" in (tmp_path / "work" / "site.log").read_text()
    assert not book.path.exists() or not book.entries()


@pytest.mark.parametrize("change", [
    {"privacy_mode": "patient"}, {"Privacy-Mode": "patient"},  # near misses: silently no DP before
    {"privacy-budget": 0.0}, {"work-dir": "relative/work"}, {"work-dir": ""},
    {"preprocess_max_abs_mv": 5.0}])
def test_a_careless_site_file_does_not_train(hospital: dict, change: dict) -> None:
    from clef_core.federation.sites import SiteConfigError, resolve_site
    from deploy.site_config import SiteConfig, SiteConfigFileError

    node = {**hospital["node"], **change}
    if "privacy_mode" in change or "Privacy-Mode" in change:
        node.pop("privacy-mode")
    with pytest.raises(SiteConfigError):
        resolve_site(node, Path())
    with pytest.raises(SiteFailure):
        call(hospital, node=node)
    with pytest.raises(SiteConfigFileError):  # clef preflight / clef supernode refuse the site file
        SiteConfig.from_mapping({"node-config": node})


def test_a_bare_supernode_must_state_its_privacy_mode(hospital: dict) -> None:
    """`flower-supernode --node-config data-dir=...` without a policy meant no DP."""
    from clef_core.federation.sites import SiteConfigError, resolve_site

    bare = {k: v for k, v in hospital["node"].items() if not k.startswith("privacy-")}
    with pytest.raises(SiteConfigError, match="privacy-mode is required"):
        resolve_site(bare, Path())
    with pytest.raises(SiteFailure):
        call(hospital, node=bare)


def test_a_run_cannot_read_any_toml_on_the_sites_disk(hospital: dict, tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text("[train]\nlr = 0.1\n")
    assert refused(hospital, run={"experiment": str(tmp_path / "x.toml")}) == \
        "refused by the site: the run's experiment is not a shipped config name"
    refused(hospital, run={"experiment": "../../etc/passwd"})


@pytest.mark.parametrize("field", ['"steps": 5.9', '"steps": true', '"noise_multiplier": "1.0"', '"round": 1.5'])
def test_a_mistyped_ledger_line_stops_the_site(tmp_path: Path, field: str) -> None:
    from clef_core.privacy.ledger import LedgerError

    line = {"experiment": "e", "round": 1, "mode": "patient", "noise_multiplier": 1.0, "sample_rate": 0.1,
            "steps": 5, "delta": 1e-5}
    key = field.split(":")[0].strip('"')
    text = json.dumps({k: v for k, v in line.items() if k != key})[:-1] + ", " + field + "}\n"
    (tmp_path / "ledger.jsonl").write_text(text)
    with pytest.raises(LedgerError, match="line 1 is unreadable"):
        PrivacyLedger(tmp_path).epsilon(1e-5)


def test_a_partly_named_wfdb_folder_is_a_record_level_site(shared_data: Path, tmp_path: Path) -> None:
    """patients.csv naming some records made the whole site report unit "patient", though each
    unnamed record is its own unit."""
    from clef_core.data.records import privacy_unit
    from deploy.preflight import check_patients

    for f in sorted((shared_data / "ecg").glob("E075*")):
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "patients.csv").write_text("record_id,subject_id\nE07500,p1\nE07501,p1\nE07502,p2\n")
    check = check_patients(tmp_path)
    assert check.status == "warn" and "7 of 10 records (70%)" in check.detail and check.data["unit_is_record"]
    import pandas as pd

    index = pd.DataFrame({"record_id": ["a", "b", "c"], "subject_id": ["p1", "p1", "c"]})
    assert privacy_unit(index, "wfdb") == "record"
    assert privacy_unit(index.assign(subject_id=["p1", "p1", "p2"]), "wfdb") == "patient"
