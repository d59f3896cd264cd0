"""The MLflow side of a policy sweep: one parent run, created or resumed before any job starts.

The parent is found again by a key (sweeper settings + command-line overrides + data fingerprint),
so rerunning the same command after a crash continues the same sweep; its finished children are
reused by their candidate key and any child left RUNNING by a killed process is closed as KILLED.
Hydra's plugin scan imports this module with every app start: MLflow and the data loader are
imported only when a sweep opens its run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

import mfexp
from mfexp import keys

from .search import Outcome, RankAgreement, Result, rank_agreement, rank_pairs, ranking_verdict

log = logging.getLogger("mfexp.sweep")


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class SweepRun:
    """The sweep's parent run: opened (or resumed) on enter, ended FINISHED / FAILED / KILLED on exit."""

    def __init__(self, job_cfg: DictConfig, settings: dict, arguments: Sequence[str], sweep_dir: Path):
        from mlflow import MlflowClient

        from mfexp import tracking
        from mfexp.job import load_data

        self.cfg, self.settings, self.sweep_dir = job_cfg, settings, sweep_dir
        t = job_cfg.tracking
        self.experiment_id = tracking.setup(t.uri, t.store_dir, t.experiment)
        self.client = MlflowClient()
        splits = load_data(job_cfg.data)  # decoded once here; also warms the demo cache for the jobs
        self.fingerprint = splits.fingerprint
        self.key = _sha([settings, sorted(arguments), self.fingerprint, mfexp.__version__])
        self.arguments = list(arguments)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> SweepRun:
        previous = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{keys.TAG_ROLE}` = 'sweep' and tags.`{keys.TAG_SWEEP_KEY}` = '{self.key}' and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if previous:
            self.run_id = previous[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            for ghost in self._children("attributes.status = 'RUNNING'"):
                self.client.set_terminated(ghost.info.run_id, "KILLED")  # its process died with the last sweep
            log.info("resuming sweep %s (MLflow run %s)", self.key, self.run_id)
        else:
            run = self.client.create_run(self.experiment_id, run_name=f"sweep-{self.key[:8]}", tags={
                keys.TAG_ROLE: "sweep", keys.TAG_SWEEP_KEY: self.key, keys.TAG_FINGERPRINT: self.fingerprint,
                keys.TAG_ENGINE: mfexp.__version__, keys.TAG_SWEEP_DIR: str(self.sweep_dir.resolve())})
            self.run_id = run.info.run_id
            s = self.settings
            axes = [f"{t}.{a}" for t in s["order"] for a in sorted(s["space"].get(t, {}))]
            params = {"search.backend": s["backend"], "search.order": ",".join(s["order"]), keys.PARAM_SEARCH_AXES: ",".join(axes),
                      "search.rungs": json.dumps(s["rungs"]), "search.eta": s["eta"], "search.noise_seeds": s["noise_seeds"],
                      "search.noise_factor": s["noise_factor"], "search.min_improvement": s["min_improvement"],
                      "search.max_candidates": s["max_candidates"], "search.max_full_epochs": s["max_full_epochs"],
                      "search.max_minutes": s["max_minutes"], "search.space": json.dumps(s["space"])[:6000],
                      "search.full_epochs": self.cfg.trainer.epochs, "search.arguments": " ".join(self.arguments)[:6000],
                      "engine_version": mfexp.__version__}
            self.client.log_batch(self.run_id, params=[_param(k, v) for k, v in params.items()])
            log.info("sweep %s: MLflow run %s in experiment %s", self.key, self.run_id, self.experiment_id)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
            self.client.set_tag(self.run_id, keys.TAG_ERROR, f"{exc_type.__name__}: {exc}"[:5000])
        self.client.set_terminated(self.run_id, status)

    # -- children ----------------------------------------------------------------------------
    def _children(self, extra: str = "") -> list:
        flt = f"tags.`{keys.TAG_PARENT}` = '{self.run_id}'" + (f" and {extra}" if extra else "")
        return self.client.search_runs([self.experiment_id], flt, max_results=5000)

    def candidate_key(self, defining: Sequence[str]) -> str:
        return _sha([list(defining), self.fingerprint])

    def finished(self, key: str) -> tuple[float, str] | None:
        """(objective, run id) of a FINISHED child with this key, if the sweep has one."""
        runs = self._children(f"tags.`{keys.TAG_CANDIDATE}` = '{key}' and attributes.status = 'FINISHED'")
        runs = [r for r in runs if keys.BEST_VAL_LOSS in r.data.metrics]
        if not runs:
            return None
        r = min(runs, key=lambda r: r.info.start_time)
        return r.data.metrics[keys.BEST_VAL_LOSS], r.info.run_id

    def latest(self, key: str) -> str | None:
        runs = self._children(f"tags.`{keys.TAG_CANDIDATE}` = '{key}'")
        return max(runs, key=lambda r: r.info.start_time).info.run_id if runs else None

    def artifact_dict(self, run_id: str, path: str) -> dict | None:
        """A JSON artifact of a child run, or None when it has none."""
        import mlflow

        try:
            return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            return None

    def cost(self, full_epochs: int, wall_seconds: float) -> dict[str, float]:
        """Screening compute so far, in full-training-set epochs (epochs run x data.subset)."""
        spent, n = 0.0, 0
        for r in self._children(f"tags.`{keys.TAG_ROLE}` = 'candidate'"):
            n += 1
            spent += r.data.metrics.get(keys.EPOCHS_RUN, 0.0) * float(r.data.params.get("data.subset", 1.0))
        return {"candidates": n, "full_epochs": spent, "cost_multiple": spent / max(full_epochs, 1),
                "wall_seconds": wall_seconds}

    # -- the end -----------------------------------------------------------------------------
    def finish(self, outcome: Outcome, baseline: Result, final: Result | None, reference: Result | None, cost: dict,
               report: Callable[..., Any] | None, model_name: str | None) -> None:
        """Tag the winners, log the outcome and the cost on the sweep run, call the report, print the summary.

        ``report`` is the ``report`` config group's object (None: no report), called as
        ``report(sweep_run_id=..., out_dir=..., model_name=...)`` while the sweep run is still open."""
        c = self.client
        full = {"baseline": baseline, "final": final, "reference": reference}
        runs = {role: c.get_run(r.run_id) for role, r in full.items() if r is not None and r.run_id}

        def rank(role: str):
            m = runs[role].data.metrics
            return (m.get(keys.BEST_VAL_LOSS, float("inf")), m.get(keys.TEST_ERROR_RATE, float("inf")))

        best_role = min(runs, key=rank)
        winners = [outcome.screen_baseline.run_id] + [s.best.run_id for s in outcome.stages if s.verdict == "kept"]
        for run_id in filter(None, winners):
            c.set_tag(run_id, keys.TAG_STAGE_WINNER, "true")
        tags = {keys.TAG_BASELINE_RUN: runs["baseline"].info.run_id, keys.TAG_BEST_RUN: runs[best_role].info.run_id,
                keys.TAG_BEST_ROLE: best_role, keys.TAG_KEPT: ",".join(outcome.kept),
                keys.TAG_REJECTED: ",".join(outcome.rejected), keys.TAG_REJECTED_REASONS: json.dumps(outcome.rejected),
                keys.TAG_POLICY: runs["final"].data.tags.get(keys.TAG_POLICY, "") if "final" in runs else
                runs["baseline"].data.tags.get(keys.TAG_POLICY, "")}
        if outcome.note:
            tags[keys.TAG_SEARCH_NOTE] = outcome.note
        if "reference" in runs:
            tags[keys.TAG_REFERENCE_RUN] = runs["reference"].info.run_id
        for s in outcome.stages:
            if s.best is not None and s.best.run_id:
                tags[keys.stage_best_run_tag(s.stage)] = s.best.run_id
            tags[keys.stage_verdict_tag(s.stage)] = f"{s.technique}: {s.verdict}"
        metrics = {keys.SEARCH_CANDIDATE_EPOCHS: cost["full_epochs"], keys.SEARCH_CANDIDATES: cost["candidates"],
                   keys.SEARCH_COST_MULTIPLE: cost["cost_multiple"], keys.SEARCH_WALL_SECONDS: cost["wall_seconds"],
                   keys.SEARCH_NOISE: outcome.noise, keys.SEARCH_THRESHOLD: outcome.threshold,
                   keys.SCREEN_BASELINE_VAL_LOSS: outcome.screen_baseline.val_loss,
                   keys.SCREEN_BEST_VAL_LOSS: outcome.incumbent.val_loss}
        if "final" in runs:
            # Does the screening ranking hold at full budget? Both must say the policy beats no policy.
            full_gain = rank("baseline")[0] - rank("final")[0]
            metrics[keys.CHECK_SCREEN_GAIN] = outcome.screen_baseline.val_loss - outcome.incumbent.val_loss
            metrics[keys.CHECK_FULL_GAIN] = full_gain
            tags[keys.TAG_RANKING_HELD] = str(full_gain > 0).lower()
        # The ranking check acts: say which run is kept and why, and how well screening ranked the policies.
        verdict = ranking_verdict({role: rank(role)[0] for role in runs}, best_role)
        agreement = self.rank_agreement(runs)
        tags[keys.TAG_RANKING_VERDICT] = verdict
        tags[keys.TAG_RANKING_AGREEMENT] = agreement.text
        tags[keys.TAG_RANKING_PAIRS] = json.dumps([vars(p) for p in agreement.pairs])
        metrics[keys.CHECK_RANK_PAIRS] = len(agreement.pairs)
        if agreement.rho is not None:
            metrics[keys.CHECK_SPEARMAN_RHO] = agreement.rho
        for role, r in runs.items():
            for k in (keys.BEST_VAL_LOSS, keys.TEST_ERROR_RATE):
                if k in r.data.metrics:
                    metrics[f"{role}.{k}"] = r.data.metrics[k]
        c.log_batch(self.run_id, metrics=[_metric(k, v) for k, v in metrics.items()],
                    tags=[_tag(k, v) for k, v in tags.items()])
        report_path = self._report(report, model_name) if report is not None else None
        self._summary(runs, best_role, outcome, cost, report_path, verdict, agreement)

    def rank_agreement(self, runs: dict) -> RankAgreement:
        """Spearman's rho of screening vs full-budget val loss over the policies trained at both (matched by mfexp.policy)."""
        full = {role: (r.data.tags.get(keys.TAG_POLICY, ""), r.info.run_id, r.data.metrics.get(keys.BEST_VAL_LOSS, float("nan")))
                for role, r in runs.items()}
        screening = []
        candidates = self._children(f"tags.`{keys.TAG_ROLE}` = 'candidate' and attributes.status = 'FINISHED'")
        for r in sorted(candidates, key=lambda r: r.info.start_time):
            if keys.BEST_VAL_LOSS in r.data.metrics:
                try:
                    rung = int(r.data.tags.get(keys.TAG_RUNG, 0))
                except ValueError:
                    rung = 0
                screening.append((r.data.tags.get(keys.TAG_POLICY, ""), rung, r.info.run_id, r.data.metrics[keys.BEST_VAL_LOSS]))
        return rank_agreement(*rank_pairs(full, screening))

    def _report(self, report: Callable[..., Any], model_name: str | None) -> Path | None:
        try:
            return report(sweep_run_id=self.run_id, out_dir=self.sweep_dir / "report", model_name=model_name)
        except Exception as e:  # noqa: BLE001 - a report failure must not lose the finished sweep
            log.error("report failed: %s (rerun: python -m mfexp.report --sweep-id %s)", e, self.run_id)
            return None

    def _summary(self, runs: dict, best_role: str, outcome: Outcome, cost: dict, report_path: Path | None,
                 verdict: str, agreement: RankAgreement) -> None:
        def err(role):
            v = runs[role].data.metrics.get("test_error_rate") if role in runs else None
            return f"{v:.2%}" if v is not None else "-"

        from mfexp import tracking

        uri = tracking.resolve_uri(self.cfg.tracking.uri, self.cfg.tracking.store_dir)
        lines = [
            "",
            "=" * 72,
            f"mfexp sweep {self.run_id} finished",
            f"  test error  baseline {err('baseline')} | searched policy {err('final')} | trivial reference {err('reference')}",
            f"  winning policy: {runs[best_role].data.tags.get(keys.TAG_POLICY)} ({best_role}); kept: "
            f"{', '.join(outcome.kept) or 'none'}",
            f"  rejected: {', '.join(f'{t} ({why})' for t, why in outcome.rejected.items()) or 'none'}",
            *([f"  search: {outcome.note}"] if outcome.note else []),
            f"  ranking check: {verdict}",
            f"  screening vs full budget: {agreement.text}",
            f"  search cost: {cost['candidates']} candidates, {cost['full_epochs']:.1f} full-data epochs = "
            f"{cost['cost_multiple']:.2f}x one full training, {cost['wall_seconds'] / 60:.1f} min",
            f"  report: {report_path or '(none)'}",
            f"  MLflow UI: mlflow ui --backend-store-uri {uri}",
            "=" * 72,
        ]
        print("\n".join(lines), flush=True)


def _param(k, v):
    from mlflow.entities import Param

    return Param(k, str(v))


def _metric(k, v):
    from mlflow.entities import Metric

    return Metric(k, float(v), int(time.time() * 1000), 0)


def _tag(k, v):
    from mlflow.entities import RunTag

    return RunTag(k, str(v)[:5000])
