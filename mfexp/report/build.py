"""Everything the report shows, read back from MLflow (never from the sweeper's memory).

`collect` takes a sweep (parent) run id and returns a `SweepData` (mfexp/report/sweep_data.py): the sweep's settings and
outcome tags, its finished candidates, the full-budget runs (baseline, final, reference) with
their logged test predictions and dataset description, the best run by the issue's rule, and
the per-technique validation-loss steps of the waterfall.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mfexp import keys
from mfexp.errors import MfexpError
from mfexp.metrics import classification_metrics, frame_to_arrays
from mfexp.report.search_data import nested_steps, policy_axes, policy_lines
from mfexp.report.sweep_data import FULL_ROLES, Evaluated, RunInfo, Step, SweepData


class ReportError(MfexpError):
    """The report cannot be made from what MLflow holds."""


class UnknownRunError(ReportError):
    """A run id or experiment that the tracking store does not know."""


class NotASweepError(ReportError):
    """The run exists but is not a sweep (parent) run."""


class IncompleteSweepError(ReportError):
    """The sweep lacks what the report needs: a finished candidate, a baseline, test predictions."""


# ------------------------------------------------------------------------------------- lookups
def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str, order_by: list[str] | None = None) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def get_run(client: MlflowClient, run_id: str, what: str = "run") -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as e:
        if getattr(e, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND") or \
                "not found" in str(e).lower() or "does not exist" in str(e).lower():
            raise UnknownRunError(f"{what} {run_id} does not exist in the tracking store {client.tracking_uri}") from None
        raise


def latest_sweep(client: MlflowClient, experiment: str) -> str:
    """The run id of the most recently started sweep of ``experiment``."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UnknownRunError(f"experiment '{experiment}' does not exist in the tracking store {client.tracking_uri}")
    runs = client.search_runs([exp.experiment_id], f"tags.`{keys.TAG_ROLE}` = 'sweep'",
                              max_results=1, order_by=["attributes.start_time DESC"])
    if not runs:
        raise IncompleteSweepError(f"experiment '{experiment}' has no sweep run (tag {keys.TAG_ROLE}=sweep): "
                                   f"run a policy search first (python -m mfexp -m)")
    return runs[0].info.run_id


def _download(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path | None:
    import mlflow.artifacts

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst),
                                                        tracking_uri=client.tracking_uri))
    except (MlflowException, OSError):
        return None


def _evaluated(client: MlflowClient, run: RunInfo, tmp: Path) -> Evaluated:
    label = f"{run.role} run {run.run_id}"
    missing = [k for k in (keys.BEST_VAL_LOSS, keys.TEST_ERROR_RATE, keys.TEST_ACCURACY) if k not in run.metrics]
    if missing:
        raise IncompleteSweepError(f"{label} has no metric {', '.join(missing)}: it did not finish its test evaluation")
    folder = tmp / run.run_id
    folder.mkdir(parents=True, exist_ok=True)
    csv = _download(client, run.run_id, "test_predictions.csv", folder)
    if csv is None:
        raise IncompleteSweepError(f"{label} has no artifact test_predictions.csv")
    df = pd.read_csv(csv)
    y_true, prob, classes = frame_to_arrays(df)
    y_pred = df["y_pred"].to_numpy(np.int64) if "y_pred" in df else prob.argmax(1)
    ds_path = _download(client, run.run_id, "dataset.json", folder)
    dataset = json.loads(ds_path.read_text()) if ds_path is not None else {}
    pol_path = _download(client, run.run_id, "policy.json", folder)
    policy = json.loads(pol_path.read_text()) if pol_path is not None else {}
    if dataset.get("classes") and list(dataset["classes"]) != classes:
        raise IncompleteSweepError(f"{label}: dataset.json classes {dataset['classes']} differ from test_predictions.csv {classes}")
    return Evaluated(run, y_true, y_pred, prob, classes, dataset, policy)


def _pick(children: Iterable[RunInfo], role: str, preferred: str | None) -> RunInfo | None:
    finished = [r for r in children if r.role == role and r.status == "FINISHED"]
    if preferred:
        for r in finished:
            if r.run_id == preferred:
                return r
    return max(finished, key=lambda r: r.start_time) if finished else None


def best_role(full: dict[str, Evaluated]) -> str:
    """The issue's rule: lowest best_val_loss among the full-budget runs; ties broken by test_error_rate."""
    order = {role: i for i, role in enumerate(FULL_ROLES)}  # a full tie keeps the simpler policy
    return min(full, key=lambda role: (full[role].metric(keys.BEST_VAL_LOSS), full[role].metric(keys.TEST_ERROR_RATE), order[role]))


def _waterfall(candidates: list[RunInfo], kept: list[str], notes: list[str]) -> tuple[RunInfo | None, list[Step]]:
    winners = sorted((r for r in candidates if r.stage_winner and r.stage is not None and keys.BEST_VAL_LOSS in r.metrics),
                     key=lambda r: (r.stage, -r.start_time))
    start = next((r for r in winners if r.stage == 0), None)
    if start is None:
        notes.append(f"No stage-0 screening baseline (candidate with {keys.TAG_STAGE}=0 and {keys.TAG_STAGE_WINNER}=true) "
                     "was found, so the validation-loss waterfall is empty.")
        return None, []
    by_technique: dict[str, RunInfo] = {}
    for r in winners:
        if r.stage and r.technique in kept and r.technique not in by_technique:
            by_technique[r.technique] = r
    steps: list[Step] = []
    previous = start
    for r in sorted(by_technique.values(), key=lambda r: r.stage):
        steps.append(Step(r.technique, int(r.stage), r.run_id, previous.metrics[keys.BEST_VAL_LOSS], r.metrics[keys.BEST_VAL_LOSS]))
        previous = r
    lost = [t for t in kept if t not in by_technique]
    if lost:
        notes.append(f"Kept technique(s) {', '.join(lost)} have no stage-winner candidate run, so no waterfall bar.")
    return start, steps


@contextlib.contextmanager
def _no_progress_bars():
    """MLflow draws a progress bar per artifact download; a report downloads a handful."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _json_tag(tags: dict[str, str], key: str, default):
    try:
        return json.loads(tags[key]) if key in tags else default
    except ValueError:
        return default


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _split(tag: str | None) -> list[str]:
    return [t.strip() for t in (tag or "").split(",") if t.strip()]


def collect(client: MlflowClient, sweep_run_id: str) -> SweepData:
    """Read a sweep and everything the report needs from MLflow."""
    sweep = RunInfo.of(get_run(client, sweep_run_id, "sweep run"))
    if sweep.role != "sweep":
        raise NotASweepError(f"run {sweep_run_id} is not a sweep run (tag {keys.TAG_ROLE}={sweep.role or 'unset'}); "
                             "give the parent run of a policy search")
    exp_id = get_run(client, sweep_run_id).info.experiment_id
    experiment = client.get_experiment(exp_id)
    children = [RunInfo.of(r) for r in search_all(client, [exp_id], f"tags.`{keys.TAG_PARENT}` = {_quote(sweep_run_id)}")]
    notes: list[str] = []

    candidates = sorted((r for r in children if r.role == "candidate" and r.status == "FINISHED" and keys.BEST_VAL_LOSS in r.metrics),
                        key=lambda r: (r.stage if r.stage is not None else 10**9, r.start_time))
    density = sweep.params.get("search.backend") == "density"
    if not candidates and not density:
        raise IncompleteSweepError(f"sweep {sweep_run_id} has no finished candidate run: nothing was searched "
                                   f"({len(children)} child run(s))")

    tags = sweep.tags
    preferred = {"baseline": tags.get(keys.TAG_BASELINE_RUN), "reference": tags.get(keys.TAG_REFERENCE_RUN),
                 "final": tags.get(keys.TAG_BEST_RUN)}
    picked = {role: _pick(children, role, preferred[role]) for role in FULL_ROLES}
    if picked["baseline"] is None:
        raise IncompleteSweepError(f"sweep {sweep_run_id} has no finished baseline run (child run with "
                                   f"{keys.TAG_ROLE}=baseline): the no-policy model to compare against is missing")
    with tempfile.TemporaryDirectory(prefix="mfexp-report-") as tmp, _no_progress_bars():
        full = {role: _evaluated(client, run, Path(tmp)) for role, run in picked.items() if run is not None}
        (Path(tmp) / "density").mkdir()
        scores = _download(client, picked["baseline"].run_id, keys.DENSITY_ARTIFACT, Path(tmp) / "density")
        density_scores = json.loads(scores.read_text()) if scores is not None else None
    base = full["baseline"]
    for role, ev in full.items():
        if role == "baseline":
            continue
        if ev.run.fingerprint != base.run.fingerprint or ev.classes != base.classes or not np.array_equal(ev.y_true, base.y_true):
            raise IncompleteSweepError(f"{role} run {ev.run.run_id} was tested on other data than baseline run "
                                       f"{base.run.run_id} (fingerprint or test labels differ): the comparison is not paired")

    for role, ev in full.items():  # the logged metrics must be what the logged predictions say
        again = classification_metrics(ev.y_true, ev.prob, ev.classes, prefix="test_")
        off = [k for k, v in again.items() if k != "test_loss" and k in ev.run.metrics and abs(ev.run.metrics[k] - v) > 1e-6]
        if off:
            notes.append(f"The {role} run's logged metrics {', '.join(off[:4])} differ from a recomputation from its "
                         "test_predictions.csv; the report shows the logged metrics.")

    delivery = _json_tag(tags, keys.TAG_DELIVERY, None)
    if delivery is not None and tags.get(keys.TAG_BEST_ROLE) in full:
        role = tags[keys.TAG_BEST_ROLE]  # the sweep's delivery rule decided (docs/search.md, "Delivery")
    else:  # a sweep made before the delivery rule: lowest validation loss
        role = best_role(full)
    if tags.get(keys.TAG_BEST_RUN) and tags[keys.TAG_BEST_RUN] != full[role].run.run_id:
        notes.append(f"The sweep's tag {keys.TAG_BEST_RUN} ({tags[keys.TAG_BEST_RUN]}) differs from the best run by the "
                     f"report's rule ({full[role].run.run_id}); the report follows the rule.")
    if role == "baseline":
        notes.append("No policy was shown to beat the baseline, so the baseline is what this sweep delivers and every "
                     "'optimal vs baseline' difference below is zero." + (f" Why: {tags[keys.TAG_RANKING_VERDICT]}."
                                                                         if delivery and keys.TAG_RANKING_VERDICT in tags else ""))
    elif role == "reference":
        notes.append("The delivered run is the zero-search TrivialAugment-style reference, not a searched policy.")

    order = _split(sweep.params.get("search.order"))
    axes = policy_axes([r for r in children if r.status == "FINISHED"], order, _split(sweep.params.get(keys.PARAM_SEARCH_AXES)))
    kept, rejected = _split(tags.get(keys.TAG_KEPT)), _split(tags.get(keys.TAG_REJECTED))
    if keys.TAG_KEPT not in tags:
        notes.append(f"The sweep has no {keys.TAG_KEPT} tag (it may not have finished); no technique is counted as kept.")
    proposals = _json_tag(tags, keys.TAG_PROPOSALS, [])
    if proposals or (density and not candidates):  # full-budget candidates (or none at all): no screening
        start, fidelity = base.run, "full budget"
        steps = nested_steps(base.run, proposals, {r.run_id: r for r in children}, notes)
    else:
        (start, steps), fidelity = _waterfall(candidates, kept, notes), "screening"
    searched = full["final"].run if "final" in full else base.run
    return SweepData(tracking_uri=client.tracking_uri, experiment_id=exp_id, experiment_name=experiment.name,
                     sweep=sweep, axes=axes, candidates=candidates, full=full, best_role=role, searched=searched,
                     kept=kept, rejected=rejected, screen_start=start, steps=steps, notes=notes, step_fidelity=fidelity,
                     policies=policy_lines(children, axes, full[role].run.run_id, delivery), density=density_scores,
                     density_keep=_float(sweep.params.get("search.density_keep")), delivery=delivery, proposals=proposals)
