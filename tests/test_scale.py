"""Scale-out and fault drills (issue 7): the same ``python -m mfexp -m`` against a shared MLflow
tracking server on PostgreSQL (``scripts/tracking_server.sh``, basic auth on), with Hydra's
joblib and submitit launchers, plus the faults a shared setup meets: a sweep killed with SIGKILL,
the tracking server restarted mid-sweep, unusable data folders, requests without credentials.

One server per module (``server`` fixture); each test tracks into its own experiment. Every sweep
is the cheapest one with a stage: ``search=staged`` on one rung, flip only, one noise seed, no reference.

``@pytest.mark.scale`` tests need the PostgreSQL binaries and psycopg2 (``pip install -e '.[scale]'``):
without them they are skipped, except under CI (``CI=true``), where they fail instead.
The data drills need no server and always run.
"""
from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, TINY_DEMO, TINY_TRAIN

SCRIPT = ROOT / "scripts" / "tracking_server.sh"
ENV = {"PYTHONUNBUFFERED": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
ROLE, PARENT, CAND = "mfexp.role", "mlflow.parentRunId", "mfexp.candidate"


def _search_prefix() -> str:
    """Where the search settings are overridden: ``search.`` (the job config), or ``hydra.sweeper.`` before."""
    from hydra_plugins.mfexp_sweeper import config

    return "search." if hasattr(config, "SearchConf") else "hydra.sweeper."


S = _search_prefix()
# flip at rr=0.5 against the no-policy screening run, one seed; min_improvement=1000 rejects flip, so no
# full-budget final run: baseline + 2 screening runs = 3 children per sweep, the cheapest sweep with a stage.
SWEEP = ["-m", "search=staged", f"{S}rungs=[{{epochs:1.0,subset:0.15}}]", f"{S}order=[flip]", f"{S}noise_seeds=1", f"{S}min_improvement=1000",
         f"{S}reference=false", f"{S}report=false", *TINY_DEMO, *TINY_TRAIN]
CHILDREN = 3


def _missing_requirements() -> str | None:
    from importlib.util import find_spec

    pg = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "initdb").exists()] \
        if Path("/usr/lib/postgresql").is_dir() else []
    if not pg and not shutil.which("initdb"):
        return "PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install -y postgresql"
    if find_spec("psycopg2") is None:
        return "psycopg2 not installed: pip install -e '.[scale]'"
    if not shutil.which("curl"):
        return "curl not found"
    return None


def _require() -> None:
    why = _missing_requirements()
    if why is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the scale tests: {why}")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    state: Path
    port: int
    pg_port: int
    username: str
    password: str

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """All that ``python -m mfexp`` needs to track to the server."""
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_TRACKING_USERNAME": self.username,
                "MLFLOW_TRACKING_PASSWORD": self.password}

    def script(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "MFEXP_SERVER_PORT": str(self.port), "MFEXP_PG_PORT": str(self.pg_port),
               "MFEXP_SERVER_AUTH": "1"}
        mlflow = Path(sys.executable).with_name("mlflow")
        if mlflow.exists():  # else: mlflow on PATH, or ./.venv/bin/mlflow (the script's own lookup)
            env["MLFLOW"] = str(mlflow)
        proc = subprocess.run(["bash", str(SCRIPT), command, str(self.state)], env=env, capture_output=True,
                              text=True, timeout=timeout)
        assert proc.returncode == 0, f"tracking_server.sh {command}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
        return proc

    def client(self):
        from mlflow import MlflowClient

        os.environ.update({k: v for k, v in self.env.items() if k != "MLFLOW_TRACKING_URI"})
        return MlflowClient(tracking_uri=self.uri)

    def runs(self, experiment: str) -> list:
        c = self.client()
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            return []
        return sorted(c.search_runs([exp.experiment_id], max_results=5000), key=lambda r: r.info.start_time)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    _require()
    state = tmp_path_factory.mktemp("tracking_server")
    s = Server(state, _free_port(), _free_port(), "admin", "")
    try:
        t0 = time.monotonic()
        out = s.script("start", timeout=400).stdout
        s.startup_seconds = time.monotonic() - t0
        s.password = (state / "admin.password").read_text().strip()
        assert f"export MLFLOW_TRACKING_URI={s.uri}" in out
        yield s
    finally:
        subprocess.run(["bash", str(SCRIPT), "destroy", str(state)], capture_output=True, timeout=120,
                       env={**os.environ, "MFEXP_SERVER_PORT": str(s.port), "MFEXP_PG_PORT": str(s.pg_port)})
        for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(k, None)


def _sweep_args(tmp: Path, experiment: str, *extra: str) -> list[str]:
    return [*SWEEP, f"tracking.experiment={experiment}", f"hydra.sweep.dir={tmp / 'multirun'}", *extra]


def _mfexp(args: list[str], cwd: Path, server: Server, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV, **server.env}
    return subprocess.run([sys.executable, "-m", "mfexp", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _popen(args: list[str], cwd: Path, server: Server, log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "mfexp", *args], cwd=cwd,
                                env={**os.environ, **ENV, **server.env, **(env or {})},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _check_tree(server: Server, experiment: str, output: str) -> tuple:
    """One FINISHED sweep run; every other run its child; nothing RUNNING; each candidate key FINISHED
    exactly once; each finished child's metrics and artifacts readable through the server."""
    runs = server.runs(experiment)
    sweeps = [r for r in runs if r.data.tags.get(ROLE) == "sweep"]
    assert len(sweeps) == 1, output[-3000:]
    parent = sweeps[0]
    assert parent.info.status == "FINISHED", parent.data.tags.get("mfexp.error")
    children = [r for r in runs if r is not parent]
    assert all(r.data.tags.get(PARENT) == parent.info.run_id for r in children)
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    finished = [r for r in children if r.info.status == "FINISHED"]
    keys = [r.data.tags[CAND] for r in finished]
    assert len(keys) == len(set(keys)), "a candidate was recorded twice"
    assert len(finished) == CHILDREN, [(r.data.tags.get(ROLE), r.info.status) for r in children]
    client = server.client()
    for r in finished:
        assert "best_val_loss" in r.data.metrics, r.data.metrics
        history = client.get_metric_history(r.info.run_id, "val_loss")
        assert len(history) == 1, history  # one epoch, logged once
        names = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"config.yaml", "policy.json", "dataset.json"} <= names, names
    for r in finished:
        if r.data.tags.get(ROLE) in ("baseline", "final"):
            assert "test_error_rate" in r.data.metrics
            assert "test_predictions.csv" in {a.path for a in client.list_artifacts(r.info.run_id)}
    assert f"mfexp sweep {parent.info.run_id} finished" in output
    return parent, children


# -- the server itself ------------------------------------------------------------------------------

@pytest.mark.scale
def test_server_refuses_requests_without_credentials_and_accepts_mfexp_s(server):
    url = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=30)
    assert e.value.code == 401, f"no credentials: HTTP {e.value.code}, expected 401"
    bad = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad, timeout=30)
    assert e.value.code == 401, f"wrong password: HTTP {e.value.code}, expected 401"
    token = base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
    ok = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    assert urllib.request.urlopen(ok, timeout=30).status == 200
    # The sweeps below run with MLFLOW_TRACKING_USERNAME/PASSWORD and nothing else changed.
    assert server.startup_seconds < 400, f"server start took {server.startup_seconds:.0f} s"


# -- launchers --------------------------------------------------------------------------------------

@pytest.mark.scale
@pytest.mark.parametrize("launcher", [
    ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
], ids=["joblib", "submitit_local"])
def test_a_sweep_through_a_parallel_launcher_records_each_candidate_once(server, tmp_path, launcher):
    name = launcher[0].split("=")[1]
    if name == "submitit_local":
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[scale]'")
    experiment = f"scale-{name}"
    t0 = time.monotonic()
    proc = _mfexp(_sweep_args(tmp_path, experiment, *launcher), tmp_path, server)
    seconds = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    if name == "joblib":
        assert "Joblib.Parallel(n_jobs=2" in output
    else:
        assert list((tmp_path / "multirun" / ".submitit").iterdir()), "submitit wrote no job folders"
    _check_tree(server, experiment, output)
    print(f"{name}: {CHILDREN} runs in {seconds:.0f} s")


def _has_ray_launcher() -> bool:
    from importlib.util import find_spec

    try:
        return find_spec("hydra_plugins.hydra_ray_launcher") is not None
    except ImportError:
        return False


@pytest.mark.scale
@pytest.mark.skipif(not _has_ray_launcher(), reason="Ray launcher not installed: pip install -e '.[ray]'")
def test_a_sweep_on_a_local_ray_instance_records_each_candidate_once(server, tmp_path):
    """hydra/launcher=ray (pip install -e '.[ray]'); not in CI: Ray is ~240 MB and pins cloudpickle<3."""
    experiment = "scale-ray"
    t0 = time.monotonic()
    proc = _mfexp(_sweep_args(tmp_path, experiment, "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                              "+hydra.launcher.ray.init.include_dashboard=false"), tmp_path,
                  server)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    assert "Started a local Ray instance" in output or "Initializing ray" in output
    _check_tree(server, experiment, output)
    print(f"ray: {CHILDREN} runs in {time.monotonic() - t0:.0f} s")


# -- faults -----------------------------------------------------------------------------------------

def _wait_for(proc: subprocess.Popen, log: Path, what, timeout: float = 400):
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "the sweep ended too early:\n" + log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        got = what()
        if got:
            return got
        time.sleep(0.3)


@pytest.mark.scale
def test_a_sweep_killed_mid_candidate_resumes_without_retraining_finished_ones(server, tmp_path):
    """kill -9 lands right after the first screening candidate logged an epoch (tests/faults/), so the
    baseline has finished and the candidate's run is RUNNING; the same command then resumes the sweep."""
    experiment = "scale-kill"
    args = _sweep_args(tmp_path, experiment)
    log1 = tmp_path / "first.log"
    killer = ["+hydra.callbacks.kill._target_=kill_mid_candidate.KillMidCandidate"]
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "faults"), os.environ.get("PYTHONPATH", "")])}
    proc = _popen([*args, *killer], tmp_path, server, log1, env)
    try:
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, not the drill's kill:\n" + log1.read_text()[-3000:]
    running = [r for r in server.runs(experiment) if r.info.status == "RUNNING" and r.data.tags.get(PARENT)]
    assert [r.data.tags.get(ROLE) for r in running] == ["candidate"], log1.read_text()[-3000:]
    before = {r.info.run_id: r for r in server.runs(experiment)}
    finished_before = {r.data.tags[CAND]: i for i, r in before.items() if r.info.status == "FINISHED" and CAND in r.data.tags}
    killed = [r.info.run_id for r in running]
    assert finished_before, "the baseline had finished before the kill"

    t0 = time.monotonic()
    proc2 = _mfexp(args, tmp_path, server)
    resume_seconds = time.monotonic() - t0
    output = proc2.stdout + proc2.stderr
    assert proc2.returncode == 0, output[-5000:]
    assert "resuming sweep" in output
    parent, children = _check_tree(server, experiment, output)
    client = server.client()
    statuses = {i: client.get_run(i).info.status for i in killed}
    assert set(statuses.values()) <= {"KILLED", "FAILED"}, f"the run killed mid-training ended {statuses}"
    now = {r.data.tags[CAND]: r.info.run_id for r in children if r.info.status == "FINISHED"}
    retrained = [k for k, i in finished_before.items() if now.get(k) != i]
    assert not retrained, f"{len(retrained)} of {len(finished_before)} finished candidates were retrained"
    launched = [line for line in output.splitlines() if "tracking.tags.candidate=" in line and "\t#" in line]
    assert not [k for k in finished_before if any(f"tracking.tags.candidate={k} " in line for line in launched)]
    print(f"kill -9 drill: {len(finished_before)} finished runs reused, {len(killed)} closed "
          f"{sorted(set(statuses.values()))}, resume took {resume_seconds:.0f} s for {len(launched)} jobs")


@pytest.mark.scale
def test_restarting_the_tracking_server_mid_sweep_loses_no_run_metric_or_artifact(server, tmp_path):
    """MLflow's client retries HTTP (urllib3, exponential backoff: $MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    default 7); a job whose requests outlast the outage fails, and the resume path reruns it."""
    experiment = "scale-restart"
    args = _sweep_args(tmp_path, experiment)
    log1 = tmp_path / "first.log"
    proc = _popen(args, tmp_path, server, log1)
    try:
        _wait_for(proc, log1, lambda: [r for r in server.runs(experiment)
                                       if r.info.status == "RUNNING" and r.data.tags.get(PARENT)])
        t0 = time.monotonic()
        server.script("restart", timeout=400)  # the server process is stopped, then started again
        outage = time.monotonic() - t0
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log1.read_text()
    retried = output.count("Retrying") + output.count("retry")
    recovered_by_resume = proc.returncode != 0
    if recovered_by_resume:  # a request gave up: the same command resumes the sweep
        proc2 = _mfexp(args, tmp_path, server)
        output += proc2.stdout + proc2.stderr
        assert proc2.returncode == 0, output[-5000:]
    _check_tree(server, experiment, output)
    msg = (f"server down {outage:.0f} s mid-sweep: sweep {'failed, resume recovered it' if recovered_by_resume else 'finished by itself'}"
           f"; client retry log lines {retried}; all {CHILDREN} runs, their metrics and artifacts present")
    print(msg)
    assert outage > 0, msg


# -- unusable data fails before anything is tracked --------------------------------------------------

def _png(path: Path, color=(120, 120, 120)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), color).save(path)


def _folder(root: Path, classes: dict[str, int]) -> Path:
    for c, n in classes.items():
        (root / "train" / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _png(root / "train" / c / f"{i}.png", (i * 20 % 255, 40, 80))
    return root


@pytest.mark.parametrize("case", ["corrupt_image", "empty_class", "single_class"])
def test_an_unusable_data_folder_fails_early_naming_the_file_or_folder(tmp_path, compose_cfg, case):
    from mfexp.errors import MfexpError
    from mfexp.job import load_data

    root = _folder(tmp_path / "data", {"good": 6, "bad": 6} if case != "single_class" else {"good": 6})
    if case == "corrupt_image":
        culprit = root / "train" / "bad" / "3.png"
        culprit.write_bytes(b"not a png at all")
    elif case == "empty_class":
        culprit = root / "train" / "empty"
        culprit.mkdir()
    else:
        culprit = root / "train"
    cfg = compose_cfg("data=folder", f"data.root={root}", "data.image_size=16")
    t0 = time.monotonic()
    with pytest.raises(MfexpError) as e:
        load_data(cfg.data)
    seconds = time.monotonic() - t0
    assert str(culprit) in str(e.value), f"{case}: the error does not name {culprit}: {e.value}"
    assert seconds < 30, f"{case}: failed after {seconds:.1f} s"


@pytest.mark.scale
def test_a_sweep_on_a_corrupt_image_fails_before_any_run_naming_the_file(server, tmp_path):
    root = _folder(tmp_path / "data", {"good": 6, "bad": 6})
    culprit = root / "train" / "bad" / "2.png"
    culprit.write_bytes(b"\x89PNG truncated")
    args = [a for a in _sweep_args(tmp_path, "scale-corrupt") if not a.startswith("data.demo_per_class")]
    proc = _mfexp([*args, "data=folder", f"data.root={root}"], tmp_path, server)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"mfexp: error: {culprit}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert server.runs("scale-corrupt") == []


def test_the_slurm_launcher_preset_composes_to_submitit_s_slurm_launcher():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[scale]'")
    from hydra import compose, initialize_config_dir

    from mfexp.__main__ import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.cpus_per_task) == ("gpu", 1, 8)
