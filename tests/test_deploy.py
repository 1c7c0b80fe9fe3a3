"""Real deployment on loopback: a TLS SuperLink with SuperNode authentication, three hospitals'
SuperNodes behind the app gate, `flwr run` -- plus the refusals (unregistered key, plaintext, an
altered app bundle) and the recoveries (a SuperNode killed mid-run, the SuperLink restarted
mid-run and the run resumed). Also the trial
credentials, the site preflight and the offline-install lock file.

Only 127.0.0.1, ports chosen at runtime, FLWR_HOME in tmp; every process started here is
stopped here (process groups, also when a test fails)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clef_core.checkpoint import load_model
from deploy.certs import create_credentials
from deploy.commands import node_config, register_command, superlink_command, supernode_command, write_connection
from server.checkpoint import ServerRunFolder
from simulations.engine import bin_dir, descendant_groups, engine_env, free_port, stage_app, wait_ready

REPO = Path(__file__).resolve().parents[1]
# the run's experiment, as `set` overrides: a deployed site reads only shipped experiment names
EXPERIMENT = ("federation.rounds=2 federation.local_steps=1 federation.min_train_nodes=2 "
              "federation.min_available_nodes=2 federation.round_timeout=240.0 federation.eval_every=0 "
              "federation.keep_checkpoints=0 train.batch_size=4 model.scale=small")


# ----------------------------------------------------------------------------- process handling


class Processes:
    """Every process a test starts, each in its own session; all stopped at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, env=env or self.env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        proc.log_path = self.logs / f"{name}.log"  # type: ignore[attr-defined]
        log.close()
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal ``proc`` and every process group below it (SuperExec, ServerApp, ClientApps)."""
        for group in descendant_groups(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.kill(proc, signal.SIGTERM)
        for proc in reversed(self.procs):
            self.kill(proc, signal.SIGKILL)


def processes_in(folder: Path) -> list[int]:
    """Pids whose working directory is inside ``folder``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if str(Path(os.readlink(proc / "cwd"))).startswith(str(folder)):
                    pids.append(int(proc.name))
    return pids


def wait_for(what: str, check: Callable[[], object], timeout: float, alive: list[subprocess.Popen] = ()) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for proc in alive:
            assert proc.poll() is None, f"{proc.args[0]} exited ({proc.returncode}) while waiting for {what}: " \
                                        f"{Path(proc.log_path).read_text()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def log_has(path: Path, pattern: str) -> bool:
    return path.is_file() and re.search(pattern, path.read_text(encoding="utf-8", errors="replace")) is not None


# ----------------------------------------------------------------------------- the trial federation


@pytest.fixture()
def trial(tmp_path: Path, shared_data: Path) -> Iterator[dict]:
    """Credentials (3 registered keys + 1 stranger), three site folders (the real HR* records of
    shared/data/ecg, two small synthetic cohorts), the experiment, a clean app copy, FLWR_HOME."""
    from clef_core.synth import generate_cohort

    creds = create_credentials(tmp_path / "certs", supernodes=4)
    hr = tmp_path / "sites" / "hospital-hr"
    hr.mkdir(parents=True)
    for file in sorted((shared_data / "ecg").glob("HR*")):
        (hr / file.name).symlink_to(file)
    sites = {"hospital-hr": hr}
    for seed, name in ((1, "hospital-a"), (2, "hospital-b")):
        generate_cohort(tmp_path / "sites" / name, patients=8, sites=1, seed=seed)
        sites[name] = tmp_path / "sites" / name
    port = free_port()
    flwr_home = tmp_path / "flwr-home"
    write_connection(flwr_home, f"127.0.0.1:{port}", creds.ca_cert)
    env = engine_env(flwr_home)
    env.pop("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION")  # the command-line flags alone must do it
    procs = Processes(env, tmp_path / "logs")
    try:
        yield {"root": tmp_path, "creds": creds, "sites": sites, "port": port, "procs": procs,
               "app": stage_app(REPO, tmp_path / "app"), "run_dir": tmp_path / "run", "flwr_home": flwr_home}
    finally:
        procs.stop_all()


def start_superlink(t: dict) -> subprocess.Popen:
    c = t["creds"]
    cmd = superlink_command(ca=c.ca_cert, cert=c.server_cert, key=c.server_key, host="127.0.0.1", port=t["port"],
                            database=t["root"] / "superlink" / "state.db")
    (t["root"] / "superlink").mkdir(exist_ok=True)
    proc = t["procs"].start("superlink", cmd, t["root"] / "superlink")
    wait_ready(t["port"], proc)
    return proc


def start_supernode(t: dict, i: int, site: str | None, *, key: int | None, tls: bool = True,
                    retries: int | None = None) -> subprocess.Popen:
    """A hospital's SuperNode as `clef supernode` starts it: behind the app gate (deploy/app_gate.py)."""
    from deploy.app_gate import LOG_NAME, gate_environment, write_gate

    c = t["creds"]
    data = t["sites"][site] if site else t["root"] / "nowhere"
    work = t["root"] / "work" / (site or f"node-{i}")
    config = node_config(data, site_id=site or "", work_dir=work, device="cpu", site_index=i,
                         extra={"privacy-mode": "off"})
    cmd = supernode_command(superlink=f"127.0.0.1:{t['port']}", ca=c.ca_cert if tls else None,
                            private_key=c.node_keys[key] if key is not None else None, node_config=config,
                            port=free_port(), max_retries=retries, max_wait_time=20 if retries else None)
    (t["root"] / "nodes").mkdir(exist_ok=True)
    env = gate_environment(write_gate(work / "app-gate", work / LOG_NAME), t["procs"].env)
    return t["procs"].start(f"supernode-{i}", cmd, t["root"] / "nodes", env)


def flwr(t: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir() / "flwr"), *args], env=t["procs"].env, cwd=t["flwr_home"], text=True,
                          capture_output=True, timeout=timeout)


def online_nodes(t: dict) -> set[str]:
    out = flwr(t, "supernode", "list", "--format", "json")
    if out.returncode:
        return set()
    return {n["node-id"] for n in json.loads(out.stdout).get("nodes", []) if n["status"] == "online"}


def start_run(t: dict, name: str, app: Path | None = None, run_dir: Path | None = None) -> subprocess.Popen:
    config = f"prepare-sites=false run-dir='{run_dir or t['run_dir']}' set='{EXPERIMENT}'"
    cmd = [str(bin_dir() / "flwr"), "run", str(app or t["app"]), "--stream", "-c", config]
    return t["procs"].start(name, cmd, t["flwr_home"])


def site_log(t: dict, site: str) -> Path:
    return t["root"] / "work" / site / "site.log"


@pytest.mark.slow
def test_tls_federation_refuses_strangers_and_survives_a_lost_node_and_a_superlink_restart(trial: dict) -> None:
    t = trial
    started = time.monotonic()
    superlink = start_superlink(t)

    # plaintext is refused: an HTTP request to the TLS port, and an --insecure SuperNode
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{t['port']}/v1/fleet/activate-node", data=b"{}", timeout=5)
    plaintext = start_supernode(t, 9, "hospital-a", key=0, tls=False, retries=2)

    # the coordinator registers the three hospitals' public keys; the fourth key is a stranger's
    for i in range(3):
        out = subprocess.run(register_command(t["creds"].node_public(i)), env=t["procs"].env, cwd=t["flwr_home"],
                             text=True, capture_output=True, timeout=60)
        assert out.returncode == 0 and "registered successfully" in out.stdout, out.stdout + out.stderr
    stranger = start_supernode(t, 8, "hospital-b", key=3)
    nodes = [start_supernode(t, i, site, key=i) for i, site in enumerate(t["sites"])]
    wait_for("3 SuperNodes online", lambda: len(online_nodes(t)) == 3, 90, [superlink, *nodes])

    assert stranger.wait(timeout=60) != 0  # Flower exit code 305: the SuperLink refused to activate it
    assert log_has(Path(superlink.log_path), "No SuperNode found with the given public key")
    assert plaintext.wait(timeout=60) != 0
    assert len(online_nodes(t)) == 3
    refusals = time.monotonic() - started

    # the run: hospital-b's SuperNode is killed (SIGKILL, a crash) while it trains round 1
    run1 = start_run(t, "flwr-run-1")
    wait_for("hospital-b training round 1", lambda: log_has(site_log(t, "hospital-b"), r"train round 1: start"),
             180, [superlink, run1])
    Processes.kill(nodes[2])
    folder = ServerRunFolder(t["run_dir"])
    wait_for("round 1 checkpoint", lambda: folder.rounds() == [1], 240, [superlink, run1])
    line1 = folder.read_metrics()[0]
    lost = int(re.search(r"SuperNode ID: (\d+)", Path(nodes[2].log_path).read_text()).group(1))
    assert line1["sampled"] == 3 and line1["accepted"] == 2 and line1["failed"] >= 1, line1
    assert [s["status"] for s in line1["sites"] if s["node_id"] == lost] in (["failed"], ["missing"])
    round1 = time.monotonic() - started

    # the SuperLink dies (SIGKILL, its ServerApp with it) during round 2, then comes back
    wait_for("round 2 under way", lambda: all(log_has(site_log(t, s), r"train round 2: start")
                                              for s in ("hospital-hr", "hospital-a")), 180, [superlink, run1])
    Processes.kill(superlink)
    run1.wait(timeout=60)
    assert folder.rounds() == [1] and folder.read_status()["state"] == "running"
    superlink = start_superlink(t)  # same database: registered keys and nodes survive
    wait_for("2 SuperNodes back online", lambda: len(online_nodes(t)) == 2, 120, [superlink, *nodes[:2]])

    # the same run folder resumes at round 2 and finishes
    run2 = start_run(t, "flwr-run-2")
    assert run2.wait(timeout=300) == 0, Path(run2.log_path).read_text()[-3000:]
    wait_for("run complete", lambda: folder.read_status().get("state") == "complete", 60)
    lines = folder.read_metrics()
    assert [x["round"] for x in lines] == [1, 2] and lines[0] == line1
    assert lines[1]["accepted"] == 2 and lines[1]["failed"] == 0
    assert log_has(Path(run2.log_path), r"federated rounds 2\.\.2")
    assert not (t["flwr_home"] / "runtime-envs").exists()  # no process installed dependencies at run time
    model = load_model(t["run_dir"] / "final_model.pt")
    assert model.provenance["kind"] == "federated-pretrain" and model.provenance["rounds"] == 2

    # observability: the coordinator's metrics name every site's reply; each site logged its rounds
    indices = {int(s["site-index"]) for s in line1["sites"] if s["status"] == "accepted"}
    assert indices == {0, 1}
    for site in ("hospital-hr", "hospital-a"):
        text = site_log(t, site).read_text()
        assert "train round 1: start" in text and re.search(r"round 2: 1 steps over \d+ patients", text)
        assert re.search(r"records: \d+ used, \d+ skipped", text)
    # the hospitals ran the installed ClientApp; a coordinator's altered bundle is refused at every site
    altered = stage_app(REPO, t["root"] / "altered-app")
    client = altered / "client" / "client_app.py"
    client.write_text(client.read_text() + "\n# a changed line: not the code the hospital installed\n")
    run3 = start_run(t, "flwr-run-altered", altered, t["root"] / "run-altered")
    run3.wait(timeout=300)  # `flwr run --stream` exits 0 even when its ServerApp fails: read the run folder
    failed = ServerRunFolder(t["root"] / "run-altered").read_status()
    assert failed["state"] == "failed" and "only 0 of 2 sampled sites" in failed["error"], failed
    # one refusal text whatever the reason: which file differs stays in the site's gate log
    assert "refused by the site: it is not the site's installed clef-fl" in failed["sites"]
    assert "client_app.py" not in failed["sites"]
    for site in ("hospital-hr", "hospital-a"):
        gate_log = (t["root"] / "work" / site / "app-gate.log").read_text()
        assert "is the installed clef-fl" in gate_log and "allowed" in gate_log
        assert re.search(r"REFUSED app bundle \S+: client/client_app.py differs from the installed clef-fl", gate_log)
    print(f"\ntimings: refusals {refusals:.0f} s, round 1 with a lost node {round1:.0f} s, "
          f"total {time.monotonic() - started:.0f} s")

    t["procs"].stop_all()
    assert not processes_in(t["root"]), "processes of the deployment outlived the test"


# ----------------------------------------------------------------------------- credentials, preflight, lock


def test_trial_credentials_load_the_way_flower_loads_them(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.cli.supernode.register import try_load_public_key

    creds = create_credentials(tmp_path, supernodes=2, hosts=["coordinator.example.org", "10.0.0.5"])
    ca = x509.load_pem_x509_certificate(creds.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(creds.server_cert.read_bytes())
    assert server.issuer == ca.subject and ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes, padding.PKCS1v15(),
                           server.signature_hash_algorithm)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.0.5"}
    assert set(san.get_values_for_type(x509.DNSName)) == {"coordinator.example.org", "localhost"}
    for i, key in enumerate(creds.node_keys):
        private = load_ssh_private_key(key.read_bytes(), None)  # what flower-supernode does
        assert isinstance(private.curve, ec.SECP384R1) and key.stat().st_mode & 0o077 == 0
        assert try_load_public_key(creds.node_public(i))  # what flwr supernode register does
    assert creds.node_public(0).read_text() != creds.node_public(1).read_text()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clef", *args], cwd=REPO, text=True, capture_output=True, timeout=120)


def test_preflight_reports_a_healthy_site_and_a_broken_one(tmp_path: Path, shared_data: Path) -> None:
    creds = create_credentials(tmp_path / "certs", supernodes=1)
    data = tmp_path / "ecg"
    data.mkdir()
    for file in sorted((shared_data / "ecg").glob("E*")):
        (data / file.name).symlink_to(file)
    (data / "PATIENTX1.hea").write_text((shared_data / "ecg" / "E07500.hea").read_text().replace("E07500", "PATIENTX1"))
    site = tmp_path / "site.toml"
    site.write_text(f'superlink = "127.0.0.1:9093"\nroot-certificates = "certs/ca.crt"\n'
                    f'auth-supernode-private-key = "certs/supernode_1"\n[node-config]\ndata-dir = "{data}"\n'
                    f'site-id = "georgia"\nwork-dir = "{tmp_path / "work"}"\ndevice = "cpu"\nprivacy-mode = "patient"\n'
                    f'privacy-budget = 4.0\n')
    out = _cli("preflight", "--site-config", str(site), "--json", "--set", "privacy.mode=patient")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    n = len(list((shared_data / "ecg").glob("E*.hea")))
    assert checks["data"]["status"] == "warn"
    assert checks["data"]["data"] | {"by_reason": None} == {"records": n + 1, "used": n, "skipped": 1, "windows": n,
                                                           "patients": n, "sampled": False, "by_reason": None}
    assert checks["data"]["data"]["by_reason"] == {"missing_file": 1}
    assert report["bad_records"][0]["record_id"] == "PATIENTX1"
    assert checks["metadata"]["data"]["records"] == n + 1 and 0 < checks["metadata"]["data"]["mean_completeness"] < 1
    assert checks["privacy"]["status"] == "ok" and checks["privacy"]["data"]["policy"]["budget_epsilon"] == 4.0
    assert checks["patients"]["status"] == "warn" and "privacy unit is the RECORD" in checks["patients"]["detail"]
    weaker = json.loads(_cli("preflight", "--site-config", str(site), "--json").stdout)  # the default run: no DP
    assert "would be REFUSED" in {c["name"]: c for c in weaker["checks"]}["privacy"]["detail"]
    assert all(checks[k]["status"] == "ok" for k in ("device", "tls", "node-key", "work-dir"))
    assert not (tmp_path / "work").exists()  # nothing written
    cmd = _cli("preflight", "--site-config", str(site), "--print-command").stdout.splitlines()[-1]
    assert "--root-certificates" in cmd and "--insecure" not in cmd and "--allow-runtime" not in cmd

    (tmp_path / "certs" / "ca.crt").write_text("not a certificate")
    broken = _cli("preflight", "--data-dir", str(tmp_path / "absent"), "--device", "cuda:7",
                  "--ca", str(tmp_path / "certs" / "ca.crt"), "--key", str(creds.node_public(0)))
    assert broken.returncode == 1
    lines = {line.split()[1]: line for line in broken.stdout.splitlines() if line[:4] in ("OK  ", "WARN", "FAIL")}
    assert lines["data"].startswith("FAIL") and "is not a folder" in lines["data"]
    assert lines["device"].startswith("FAIL") and lines["tls"].startswith("FAIL") and lines["node-key"].startswith("FAIL")
    assert "site not ready (data, device, tls, node-key)" in broken.stderr
    assert _cli("preflight").returncode == 2


def test_lock_file_pins_every_dependency_at_the_tested_version() -> None:
    from importlib import metadata

    from packaging.utils import canonicalize_name

    from deploy.wheelhouse import LOCK, check_lock, download_commands, project_requirements, read_lock

    assert check_lock() == [], "requirements-lock.txt is stale: clef wheelhouse --write-lock"
    pinned = read_lock()
    for req in project_requirements():  # the lock is what this environment runs (and tests)
        assert pinned[canonicalize_name(req.name)] == metadata.version(req.name), req.name
    assert "clef-fl" not in pinned and {"ray", "dp-accounting"} <= set(pinned)  # flwr's extras are locked too
    download, wheel = download_commands(Path("/wh"))
    assert download[-5:] == ["download", "-r", str(LOCK), "-d", "/wh"] and wheel[-5:] == ["wheel", str(REPO), "-w", "/wh", "--no-deps"]
    dry = _cli("wheelhouse", "--out", "/tmp/never-created", "--dry-run")
    assert dry.returncode == 0 and "pip install --no-index --find-links /tmp/never-created clef-fl" in dry.stdout
    assert not Path("/tmp/never-created").exists()


def _built_bundle(tmp_path: Path) -> Path:
    """The app bundle `flwr build` makes of this source tree, unpacked as Flower installs it."""
    import zipfile

    src = stage_app(REPO, tmp_path / "src")
    build = subprocess.run([str(bin_dir() / "flwr"), "build"], cwd=src, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    fab = next(src.glob("*.fab"))
    bundle = tmp_path / "apps" / fab.stem
    zipfile.ZipFile(fab).extractall(bundle)
    return bundle


def _gate_script(tmp_path: Path, bundle: Path, then: str) -> list[str]:
    """A Python process as the gate's flwr-clientapp runs: its own bytecode folder, the import
    hook, the bundle on sys.path (as Flower's loader puts it)."""
    return [sys.executable, "-c",
            "from deploy.app_gate import AppGate, code_root, own_bytecode, log; import sys, logging; "
            f"from pathlib import Path; log.addHandler(logging.FileHandler({str(tmp_path / 'app-gate.log')!r})); "
            f"log.propagate = False; own_bytecode(Path({str(tmp_path / 'pycache')!r})); "
            f"sys.meta_path.insert(0, AppGate({str(tmp_path / 'apps')!r}, code_root())); "
            f"sys.path.insert(0, {str(bundle)!r})\n" + then]


def test_the_app_gate_runs_only_the_installed_clientapp(tmp_path: Path) -> None:
    from deploy.app_gate import REFUSAL, code_root, verify_bundle

    bundle = _built_bundle(tmp_path)
    assert verify_bundle(bundle, code_root()) == ""
    gate = _gate_script(tmp_path, bundle, "import client.client_app, clef_core.privacy.policy as p; print(p.__file__)")
    ok = subprocess.run(gate, capture_output=True, text=True, timeout=120)
    # the bundle is a token: the installed code ran, and nothing was written into the bundle
    assert ok.returncode == 0 and ok.stdout.strip().startswith(str(code_root())), ok.stderr
    assert not list(bundle.rglob("__pycache__"))
    assert verify_bundle(bundle, code_root()) == ""
    # a coordinator's altered bundle: one changed line in the site's privacy policy
    policy = bundle / "clef_core" / "privacy" / "policy.py"
    policy.write_text(policy.read_text().replace("if STRENGTH[request.mode] < STRENGTH[policy.mode]:", "if False:"))
    assert verify_bundle(bundle, code_root()) == "clef_core/privacy/policy.py differs from the installed clef-fl"
    refused = subprocess.run(gate, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and REFUSAL in refused.stderr and "policy.py" not in refused.stderr
    assert "policy.py differs" in (tmp_path / "app-gate.log").read_text()  # the reason stays on the site
    # an extra module, or another entry point, is refused as well -- with the same text
    policy.write_text((code_root() / "clef_core/privacy/policy.py").read_text())
    (bundle / "client" / "evil.py").write_text("app = None\n")
    assert verify_bundle(bundle, code_root()) == "client/evil.py is not part of the installed clef-fl"
    (bundle / "client" / "evil.py").unlink()
    (bundle / "pyproject.toml").write_text((bundle / "pyproject.toml").read_text().replace(
        'clientapp = "client.client_app:app"', 'clientapp = "client.evil:app"'))
    assert "its ClientApp is 'client.evil:app'" in verify_bundle(bundle, code_root())


def test_the_app_gate_runs_no_bytecode_from_the_bundle(tmp_path: Path) -> None:
    """The attack of issue 19: every listed file byte-identical to the installed clef-fl, plus an
    unchecked-hash ``client/__pycache__/__init__.cpython-311.pyc`` whose code Python ran instead
    of the identical source (the gate skipped __pycache__). Now the bundle is only a token: the
    installed ``client`` is imported, so the payload never runs; a sourceless ``*.pyc`` is refused."""
    import py_compile

    from deploy.app_gate import REFUSAL, code_root, verify_bundle

    bundle = _built_bundle(tmp_path)
    payload = tmp_path / "payload.py"
    payload.write_text("print('PAYLOAD RAN')\n")
    cached = bundle / "client" / "__pycache__" / f"__init__.{sys.implementation.cache_tag}.pyc"
    cached.parent.mkdir()
    unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
    py_compile.compile(str(payload), cfile=str(cached), invalidation_mode=unchecked)
    script = "import client, client.client_app; print(client.__file__)"
    for env in ({}, {"PYTHONPYCACHEPREFIX": ""}):  # with or without a bytecode folder of its own
        run = subprocess.run(_gate_script(tmp_path, bundle, script), capture_output=True, text=True, timeout=120,
                             env={**os.environ, **env})
        assert run.returncode == 0 and "PAYLOAD RAN" not in run.stdout, run.stdout + run.stderr
        assert run.stdout.strip().startswith(str(code_root()))
    sourceless = bundle / "client" / "evil.pyc"
    py_compile.compile(str(payload), cfile=str(sourceless), invalidation_mode=unchecked)
    assert verify_bundle(bundle, code_root()) == "client/evil.pyc is bytecode (a bundle ships source only)"
    run = subprocess.run(_gate_script(tmp_path, bundle, "import client.evil"), capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0 and "PAYLOAD RAN" not in run.stdout and REFUSAL in run.stderr


def test_clef_supernode_starts_behind_the_gate(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text((REPO / "configs" / "site-template.toml").read_text().replace("/var/lib/clef", str(tmp_path / "w")))
    dry = _cli("supernode", "--site-config", str(site), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"PATH={tmp_path / 'w' / 'app-gate'}:$PATH ") and "flower-supernode" in dry.stdout
