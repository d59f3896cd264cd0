"""The policy-search sweeper (``python -m mfexp -m``, ``hydra/sweeper=mfexp``).

* ``StagedSearch`` in-process with a fake evaluator (milliseconds): noise threshold, verdicts,
  successive halving, failures, budget.
* End to end in subprocesses on the tiny demo data (``@pytest.mark.slow``, tens of seconds each):
  one module-scoped sweep checked by several tests (MLflow schema, a candidate forced to fail),
  a failing baseline, resume after SIGKILL, the joblib launcher, Hydra's basic sweeper, and
  plugin discovery from a wheel and from an editable install in fresh virtualenvs.

Sweeps here search two techniques at most, on one rung, with ``search.report=false``
(the report has its own tests) and ``trainer.log_model=false`` (the sweeper honours it).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY_DEMO, TINY_TRAIN, MlflowStore, mfexp_cli
from hydra_plugins.mfexp_sweeper.optuna_search import OptunaSearch
from hydra_plugins.mfexp_sweeper.search import Candidate, Result
from hydra_plugins.mfexp_sweeper.staged import StagedSearch

from mfexp.errors import SearchFailed

ENV = {"PYTHONUNBUFFERED": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
# The cheapest search that still has stages: the staged search on one rung, no report.
SWEEP = ["-m", "search=staged", "search.rungs=[{epochs:1.0,subset:0.15}]", *TINY_DEMO, *TINY_TRAIN, "search.report=false"]
ROLE, PARENT, CAND = "mfexp.role", "mlflow.parentRunId", "mfexp.candidate"


# -- StagedSearch with a fake evaluator --------------------------------------------------------------

BASE = 1.0
SEED_OFFSET = {0: 0.0, 1: 0.1, 2: 0.05}  # noise_seeds=2 -> noise 0.1


class Fake:
    """``evaluate(candidates)``: loss = BASE + the effects of the policy's (technique, axis, value)
    + a per-seed offset. ``fail`` items (or ``"baseline"``: the empty policy at seed 0) give no loss."""

    def __init__(self, effects: dict, fail=(), nan=()):
        self.effects, self.fail, self.nan = effects, set(fail), set(nan)
        self.calls: list[list[Candidate]] = []

    def __call__(self, cands: list[Candidate]) -> list[Result]:
        self.calls.append(list(cands))
        out = []
        for c in cands:
            if self.fail & set(c.policy) or (not c.policy and c.seed == 0 and "baseline" in self.fail):
                out.append(Result(c, None))
            elif self.nan & set(c.policy):
                out.append(Result(c, math.nan, run_id="diverged"))
            else:
                loss = BASE + sum(self.effects.get(item, 0.0) for item in c.policy) + SEED_OFFSET[c.seed]
                out.append(Result(c, loss, run_id=f"run{sum(map(len, self.calls))}-{len(out)}", full_epochs=0.25))
        return out

    @property
    def evaluated(self) -> list[Candidate]:
        return [c for batch in self.calls for c in batch]


def search(order, space, n_rungs=1, **kw) -> StagedSearch:
    return StagedSearch(order, space, n_rungs, log=lambda msg: None, **kw)


ONE = {"m": [0.5]}


@pytest.mark.parametrize("settings, kept", [
    ({"noise_seeds": 2}, ["a"]),  # noise 0.1: a gains 0.15 -> kept; b gains 0.05 -> within the noise
    ({"noise_seeds": 2, "noise_factor": 2.0}, []),  # threshold 0.2: a's 0.15 no longer counts
    ({"noise_seeds": 1, "min_improvement": 0.2}, []),  # no noise measured: the floor decides
    ({"noise_seeds": 1}, ["a", "b"]),  # threshold 0: any gain counts
])
def test_a_value_is_kept_only_beyond_the_noise_threshold(settings, kept):
    fake = Fake({("a", "m", 0.5): -0.15, ("b", "m", 0.5): -0.05, ("c", "m", 0.5): +0.5})
    out = search(["a", "b", "c"], {"a": ONE, "b": ONE, "c": ONE}, **settings).run(fake)
    assert out.kept == kept
    assert out.rejected["c"] == "hurts"  # worse than the incumbent by more than the threshold
    for tech in {"a", "b"} - set(kept):
        assert out.rejected[tech] == "no gain beyond noise"
    assert out.policy == tuple((t, "m", 0.5) for t in kept)
    assert [s.verdict for s in out.stages if s.technique in kept] == ["kept"] * len(kept)
    if settings["noise_seeds"] == 2:
        assert out.noise == pytest.approx(0.1)
    assert out.threshold == pytest.approx(max(settings.get("noise_factor", 1.0) * out.noise,
                                              settings.get("min_improvement", 0.0)))
    # Each stage compares with the incumbent: a kept value raises the bar for the next stage.
    if kept[:1] == ["a"]:
        assert out.stages[1].incumbent_loss == pytest.approx(BASE - 0.15)
        assert out.incumbent.val_loss == pytest.approx(BASE - 0.15 - (0.05 if "b" in kept else 0.0))


def test_a_harmful_technique_is_rejected_as_hurts_and_not_kept():
    fake = Fake({("blur", "m", 0.5): 0.5})
    out = search(["blur"], {"blur": ONE}, noise_seeds=2).run(fake)
    assert out.kept == [] and out.policy == ()
    assert out.rejected == {"blur": "hurts"}
    assert out.incumbent is out.screen_baseline  # nothing kept: the no-policy run stays the incumbent


@pytest.mark.parametrize("n, eta, n_rungs, per_rung", [
    (5, 2, 3, [5, 3, 2]),
    (6, 3, 2, [6, 2]),
    (9, 3, 3, [9, 3, 1]),
])
def test_successive_halving_promotes_ceil_n_over_eta_per_rung(n, eta, n_rungs, per_rung):
    values = [round(0.1 * (i + 1), 1) for i in range(n)]
    fake = Fake({("a", "m", v): -v for v in values})  # the larger m, the better
    out = search(["a"], {"a": {"m": values}}, n_rungs=n_rungs, eta=eta, noise_seeds=1).run(fake)
    stage = [c for c in fake.evaluated if c.technique == "a"]
    assert [sum(c.rung == r for c in stage) for r in range(n_rungs)] == per_rung
    for r in range(1, n_rungs):  # the promoted are the best of the rung below
        promoted = sorted(c.policy[0][2] for c in stage if c.rung == r)
        assert promoted == sorted(values)[-per_rung[r]:]
    # The baseline is screened at the top rung, where every comparison is made.
    assert {c.rung for c in fake.evaluated if not c.policy} == {n_rungs - 1}
    assert out.stages[0].best.candidate.rung == n_rungs - 1
    assert out.policy == (("a", "m", max(values)),)


def test_a_stage_with_fewer_than_eta_values_goes_straight_to_the_top_rung():
    fake = Fake({("a", "m", 1.0): -0.3})
    out = search(["a"], {"a": {"m": [0.5, 1.0]}}, n_rungs=2, eta=3, noise_seeds=1).run(fake)
    assert {c.rung for c in fake.evaluated} == {1}  # nothing to halve: no rung-0 screening
    assert out.kept == ["a"]


def test_failing_candidates_do_not_stop_the_search():
    fake = Fake({("a", "m", 1.0): -0.3, ("c", "m", 0.5): -0.3},
                fail=[("a", "m", 0.5), ("b", "m", 0.5)], nan=[("b", "m", 1.0)])
    space = {"a": {"m": [0.5, 1.0]}, "b": {"m": [0.5, 1.0]}, "c": ONE}
    out = search(["a", "b", "c"], space, noise_seeds=2).run(fake)
    assert out.kept == ["a", "c"]  # a's failing value did not sink the stage; c still ran after b
    assert out.rejected == {"b": "all candidates failed"}  # one failed, one diverged (NaN)
    assert out.stages[1].best is None
    assert out.policy == (("a", "m", 1.0), ("c", "m", 0.5))
    assert sum(1 for r in out.results if not r.ok) == 3


def test_budget_exhaustion_marks_the_remaining_stages_not_searched():
    fake = Fake({("a", "m", 0.5): -0.3})
    budget = lambda: len(fake.evaluated) < 3
    out = search(["a", "b", "c"], {"a": ONE, "b": ONE, "c": ONE}, noise_seeds=2, budget_left=budget).run(fake)
    assert out.kept == ["a"]
    assert out.rejected == {"b": "not searched (budget)", "c": "not searched (budget)"}
    assert [s.verdict for s in out.stages] == ["kept", "not searched (budget)", "not searched (budget)"]
    assert {c.technique for c in fake.evaluated} == {"none", "a"}  # nothing of b or c was run


def test_search_fails_when_the_no_policy_screening_run_fails():
    with pytest.raises(SearchFailed, match="no-policy screening run failed"):
        search(["a"], {"a": ONE}, noise_seeds=2).run(Fake({}, fail=["baseline"]))


def test_a_technique_without_values_is_refused_up_front():
    with pytest.raises(ValueError, match="no values for"):
        search(["a", "b"], {"a": ONE})


def test_optuna_backend_finds_the_helpful_technique_and_leaves_the_harmful_one_out():
    fake = Fake({("a", "m", 0.5): -0.3, ("b", "m", 0.5): 0.4})
    out = OptunaSearch(["a", "b"], {"a": ONE, "b": ONE}, 1, trials=8, batch=2, noise_seeds=2,
                       log=lambda msg: None).run(fake)
    assert out.kept == ["a"] and out.policy == (("a", "m", 0.5),)
    assert out.rejected == {"b": "not chosen by TPE"}
    assert len(fake.evaluated) == 2 + 8  # noise seeds, then every trial on the top rung


def test_optuna_backend_keeps_no_policy_when_nothing_beats_the_noise():
    fake = Fake({("a", "m", 0.5): 0.2})
    out = OptunaSearch(["a"], {"a": ONE}, 1, trials=3, noise_seeds=2, log=lambda msg: None).run(fake)
    assert out.policy == () and out.kept == [] and out.incumbent is out.screen_baseline


def test_on_off_techniques_fix_m_and_the_policy_maps_to_augment_overrides():
    from hydra_plugins.mfexp_sweeper.sweeper import PolicySweeper

    overrides = PolicySweeper()._policy_overrides((("flip", "rr", 0.5), ("cutout", "m", 1.0), ("cutout", "rr", 0.5)))
    assert overrides == ["augment=policy", "augment.techniques.flip.rr=0.5", "augment.techniques.flip.m=1.0",
                         "augment.techniques.cutout.m=1.0", "augment.techniques.cutout.rr=0.5"]


# -- end to end --------------------------------------------------------------------------------------

def _args(store: MlflowStore, tmp: Path, *extra: str) -> list[str]:
    return [*SWEEP, *store.overrides, f"hydra.sweep.dir={tmp / 'multirun'}", *extra]


def _by_role(runs) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in runs:
        out.setdefault(r.data.tags.get(ROLE), []).append(r)
    return out


def _assert_well_formed(runs, output: str) -> tuple:
    """The checks every sweep passes: one FINISHED parent, every other run its child, none left RUNNING,
    each candidate key finished once, test metrics on full-budget runs only, the summary printed."""
    roles = _by_role(runs)
    assert len(roles.get("sweep", [])) == 1, output[-3000:]
    parent = roles["sweep"][0]
    assert parent.info.status == "FINISHED", parent.data.tags.get("mfexp.error")
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    children = [r for r in runs if r is not parent]
    assert all(r.data.tags.get(PARENT) == parent.info.run_id for r in children)
    finished_keys = [r.data.tags[CAND] for r in children if r.info.status == "FINISHED"]
    assert len(finished_keys) == len(set(finished_keys))
    assert len(roles["baseline"]) == 1 and roles["baseline"][0].info.status == "FINISHED"
    assert parent.data.tags["mfexp.baseline_run_id"] == roles["baseline"][0].info.run_id
    assert parent.data.tags["mfexp.best_run_id"] in {r.info.run_id for r in children}
    for r in roles.get("candidate", []):  # selection never touches the test split
        assert not [k for k in r.data.metrics if k.startswith("test_")], r.data.metrics
        assert r.data.params["trainer.evaluate_test"] == "False"
        for tag in ("mfexp.stage", "mfexp.technique", "mfexp.fidelity", "mfexp.policy", CAND):
            assert r.data.tags.get(tag), (tag, r.data.tags)
    for role in ("baseline", "final", "reference"):
        for r in roles.get(role, []):
            assert "test_error_rate" in r.data.metrics, role
            assert r.data.params["trainer.log_model"] == "False"  # the command line's choice is honoured
    for k in ("search.cost_multiple", "search.candidate_epochs", "search.candidates", "search.noise", "check.rank_pairs"):
        assert k in parent.data.metrics, k
    assert " is delivered" in parent.data.tags.get("mfexp.ranking_verdict", ""), parent.data.tags
    assert parent.data.tags["mfexp.delivery_rule"] == "paired"
    assert f"mfexp sweep {parent.info.run_id} finished" in output
    for line in ("test error  baseline", "delivered:", "rejected:", "why: ", "screening vs full budget: ",
                 "search cost:", "MLflow UI:"):
        assert line in output, line
    return parent, roles


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mlflow_store_factory):
    """flip, then cutout forced to fail (m=2.0 is outside [0, 1]), with the reference. One noise seed: the
    noise is 0, so flip is kept when its screening loss is lower at all; with data.seed=3 it is (1.5994
    against the baseline's 1.6010 on this CPU), so the full-budget final run exists."""
    tmp = tmp_path_factory.mktemp("sweep")
    store = mlflow_store_factory(tmp / "mlruns")
    proc = mfexp_cli(_args(store, tmp, "search.order=[flip,cutout]", "search.space.cutout.m=[2.0]",
                           "search.noise_seeds=1", "data.seed=3"),
                     tmp, ENV, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    return store.runs(), output


@pytest.mark.slow
def test_sweep_records_a_well_formed_mlflow_tree(sweep):
    runs, output = sweep
    parent, roles = _assert_well_formed(runs, output)
    assert sorted(roles) == ["baseline", "candidate", "final", "reference", "sweep"]
    assert len(roles["final"]) == 1 and len(roles["reference"]) == 1
    tags = parent.data.tags
    assert tags["mfexp.kept"] == "flip" and tags["mfexp.rejected"] == "cutout"
    assert json.loads(tags["mfexp.rejected_reasons"]) == {"cutout": "all candidates failed"}
    assert tags["mfexp.stage.1.verdict"] == "flip: kept"
    assert tags["mfexp.stage.2.verdict"] == "cutout: all candidates failed"
    assert tags["mfexp.reference_run_id"] == roles["reference"][0].info.run_id
    assert tags["mfexp.best_role"] in {"baseline", "final", "reference"}
    assert parent.data.metrics["search.candidate_epochs"] > 0
    # search.cost_multiple: the screening compute over one full training as the baseline ran it (fit + refit)
    import mlflow

    base = roles["baseline"][0]
    counts = mlflow.artifacts.load_dict(f"{base.info.artifact_uri}/dataset.json")["counts"]
    n_train, n_val = sum(counts["train"].values()), sum(counts["val"].values())
    unit = base.data.metrics["epochs_run"] + base.data.metrics["refit_epochs"] * (n_train + n_val) / n_train
    assert parent.data.metrics["search.cost_multiple"] == pytest.approx(parent.data.metrics["search.candidate_epochs"] / unit)
    assert parent.data.params["search.order"] == "flip,cutout"


@pytest.mark.slow
def test_screening_candidates_are_tagged_and_the_winner_is_trained_at_full_budget(sweep):
    parent, roles = _assert_well_formed(*sweep)
    cands = {r.data.tags["mfexp.technique"]: r for r in roles["candidate"]}
    assert sorted(cands) == ["flip", "none"]  # cutout's job failed before its MLflow run started
    none, flip = cands["none"], cands["flip"]
    assert (none.data.tags["mfexp.stage"], flip.data.tags["mfexp.stage"]) == ("0", "1")
    subset = flip.data.params["data.subset"]  # the screening rung's share of the training split
    assert float(subset) < 1.0 and none.data.params["data.subset"] == subset
    assert flip.data.tags["mfexp.fidelity"] == none.data.tags["mfexp.fidelity"] == f"e1-s{subset}"
    assert flip.data.params["augment.techniques.flip.rr"] == "0.5"
    assert flip.data.tags["mfexp.stage_winner"] == "true"
    assert parent.data.tags["mfexp.stage.1.best_run_id"] == flip.info.run_id
    final = roles["final"][0]
    assert final.data.tags["mfexp.policy"] == flip.data.tags["mfexp.policy"]
    delivered = next(r for rs in roles.values() for r in rs if r.info.run_id == parent.data.tags["mfexp.best_run_id"])
    assert parent.data.tags["mfexp.policy"] == delivered.data.tags["mfexp.policy"]  # the sweep names what it delivers
    assert final.data.params["data.subset"] == "1.0"
    assert roles["baseline"][0].data.tags["mfexp.policy"] == none.data.tags["mfexp.policy"]


@pytest.mark.slow
def test_a_failing_candidate_rejects_its_stage_and_the_sweep_goes_on(sweep):
    runs, output = sweep
    assert "m=2.0 is outside [0, 1]" in output
    assert "stage 2/2 cutout" in output and "all candidates failed" in output
    assert "rejected: cutout (all candidates failed)" in output
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
def test_a_failing_baseline_fails_the_sweep_with_one_clear_line(tmp_path, mlflow_store):
    proc = mfexp_cli(_args(mlflow_store, tmp_path, "model.name=no_such_model"), tmp_path, ENV)
    assert proc.returncode != 0
    assert "mfexp: error: the full-budget baseline failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    runs = mlflow_store.runs()
    roles = _by_role(runs)
    assert [r.info.status for r in roles["sweep"]] == ["FAILED"]
    assert "baseline failed" in roles["sweep"][0].data.tags["mfexp.error"]
    assert not roles.get("candidate") and all(r.info.status != "RUNNING" for r in runs)


@pytest.mark.slow
def test_unusable_data_fails_the_sweep_before_any_run(tmp_path, mlflow_store):
    (tmp_path / "empty").mkdir()
    args = [a for a in _args(mlflow_store, tmp_path) if not a.startswith("data.demo_per_class")]
    proc = mfexp_cli([*args, "data=folder", f"data.root={tmp_path / 'empty'}"], tmp_path, ENV)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "mfexp: error: data.root=" in proc.stderr and "Traceback" not in proc.stderr
    assert mlflow_store.runs() == []


def test_a_sweep_over_values_is_refused_with_the_way_to_grid_search(tmp_path, mlflow_store):
    proc = mfexp_cli(["-m", "augment=none,trivial", *mlflow_store.overrides, f"hydra.sweep.dir={tmp_path}/m"],
                     tmp_path, ENV)
    assert proc.returncode == 2
    assert "hydra/sweeper=basic" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_rerunning_finished_candidates(tmp_path, mlflow_store):
    args = _args(mlflow_store, tmp_path, "search.order=[flip,cutout]", "search.noise_seeds=2",
                 "search.space.cutout.m=[0.5,1.0]", "search.reference=false")
    client = mlflow_store.client()
    log1 = tmp_path / "first.log"
    with open(log1, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mfexp", *args], cwd=tmp_path, env={**os.environ, **ENV},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, seen_two = time.monotonic() + 600, None
        while True:
            assert proc.poll() is None, "the sweep ended before it could be killed:\n" + log1.read_text()[-3000:]
            assert time.monotonic() < deadline, log1.read_text()[-3000:]
            runs = mlflow_store.runs()
            done = [r for r in runs if r.data.tags.get(ROLE) == "candidate" and r.info.status == "FINISHED"]
            if len(done) >= 2:
                seen_two = seen_two or time.monotonic()
                # Best: kill while a child trains, to see it closed KILLED; give up waiting after a while.
                if any(r.info.status == "RUNNING" and r.data.tags.get(PARENT) for r in runs) \
                        or time.monotonic() - seen_two > 5:
                    break
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone: the assertion above says why
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {r.info.run_id: r for r in mlflow_store.runs()}
    finished_before = {r.data.tags[CAND] for r in before.values()
                       if r.data.tags.get(CAND) and r.info.status == "FINISHED"}
    running_before = [i for i, r in before.items() if r.info.status == "RUNNING" and r.data.tags.get(ROLE) != "sweep"]
    (sweep_before,) = [r for r in before.values() if r.data.tags.get(ROLE) == "sweep"]
    assert sweep_before.info.status == "RUNNING"  # SIGKILL: nothing could close it
    assert len(finished_before) >= 3  # the baseline and two screening runs

    proc2 = mfexp_cli(args, tmp_path, ENV, timeout=900)
    output = proc2.stdout + proc2.stderr
    assert proc2.returncode == 0, output[-5000:]
    assert "resuming sweep" in output
    runs = mlflow_store.runs()
    parent, roles = _assert_well_formed(runs, output)  # among others: no candidate key FINISHED twice
    assert parent.info.run_id == sweep_before.info.run_id
    for run_id in running_before:  # what the kill interrupted is closed, not left RUNNING
        assert client.get_run(run_id).info.status == "KILLED"
    launched = [line for line in output.splitlines() if "tracking.tags.candidate=" in line and "\t#" in line]
    assert launched, output[-3000:]
    assert not [key for key in finished_before if any(f"tracking.tags.candidate={key} " in line for line in launched)]
    # The search itself finished: both stages have a verdict, the screening runs of the first try were reused.
    assert {"mfexp.stage.1.verdict", "mfexp.stage.2.verdict"} <= set(parent.data.tags)
    assert len([r for r in roles["candidate"] if r.info.status == "FINISHED"]) == 5  # 2 noise seeds, flip, cutout x2


@pytest.mark.slow
def test_joblib_launcher_runs_candidates_in_parallel_processes(tmp_path, mlflow_store):
    args = _args(mlflow_store, tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 "search.order=[cutout]", "search.space.cutout.m=[0.5,1.0]",
                 "search.noise_seeds=2", "search.reference=false")
    proc = mfexp_cli(args, tmp_path, ENV, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    assert "Joblib.Parallel(n_jobs=2" in output
    assert "database is locked" not in output
    _, roles = _assert_well_formed(mlflow_store.runs(), output)
    cands = roles["candidate"]
    assert len(cands) == 4 and all(r.info.status == "FINISHED" for r in cands)  # 2 noise seeds + cutout m=0.5, 1.0


@pytest.mark.slow
def test_hydra_basic_sweeper_still_runs_grids(tmp_path, mlflow_store):
    proc = mfexp_cli(["-m", "hydra/sweeper=basic", "augment=none,trivial", *TINY_DEMO, *TINY_TRAIN,
                      *mlflow_store.overrides, f"hydra.sweep.dir={tmp_path / 'multirun'}"], tmp_path, ENV)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    runs = mlflow_store.runs()
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert len({r.data.tags["mfexp.policy"] for r in runs}) == 2
    assert all(PARENT not in r.data.tags for r in runs)


# -- plugin discovery ------------------------------------------------------------------------------

DISCOVER = ("import inspect; from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper\n"
            "for c in Plugins.instance().discover(Sweeper):\n"
            "    print('SWEEPER', c.__module__, c.__name__, inspect.getfile(c))")


def _fresh_venv(path: Path) -> tuple[Path, Path]:
    """A new virtualenv without the project: (its python, its site-packages). The project venv's packages
    (torch, hydra, ...) are reachable through a plain path entry, which does not run that venv's .pth
    files (its editable mfexp)."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, site


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def _assert_policy_sweeper_found(python: Path, cwd: Path, expected_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    info = subprocess.run([str(python), "-m", "mfexp", "--info", "plugins"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert info.returncode == 0, info.stderr[-3000:]
    section = info.stdout.split("Sweeper:", 1)[1].split("\n\n", 1)[0]
    assert "PolicySweeper" in section, info.stdout
    found = subprocess.run([str(python), "-c", DISCOVER], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=300, check=False)
    assert found.returncode == 0, found.stderr[-3000:]
    (line,) = [x for x in found.stdout.splitlines() if " PolicySweeper " in x]
    _, module, _, file = line.split(" ", 3)
    assert module == "hydra_plugins.mfexp_sweeper.sweeper"
    assert Path(file).resolve().is_relative_to(expected_dir.resolve()), file


@pytest.mark.slow
def test_policy_sweeper_is_discovered_from_a_wheel_and_from_an_editable_install(tmp_path):
    # Non-editable: build the wheel, install it alone into a fresh venv, run from outside the checkout.
    _pip("wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT))
    (wheel,) = (tmp_path / "dist").glob("mfexp-*.whl")
    python, site = _fresh_venv(tmp_path / "wheel-venv")
    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel))
    _assert_policy_sweeper_found(python, tmp_path, site)
    # Editable, as the README installs it (pip install -e .), into another fresh venv.
    python, _ = _fresh_venv(tmp_path / "editable-venv")
    _pip("--python", str(python), "install", "--no-deps", "-q", "-e", str(ROOT))
    _assert_policy_sweeper_found(python, tmp_path, ROOT / "plugins")
