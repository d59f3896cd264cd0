"""The MLflow side of a policy sweep: one parent run, created or resumed before any job starts.

The parent is found again by a key (sweeper settings + command-line overrides + data fingerprint),
so rerunning the same command after a crash continues the same sweep; its finished children are
reused by their candidate key and any child left RUNNING by a killed process is closed as KILLED.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from mlflow import MlflowClient
from omegaconf import DictConfig

import mfexp
from mfexp import tracking
from mfexp.job import load_data

log = logging.getLogger("mfexp.sweep")

T_SWEEP_KEY = "mfexp.sweep_key"


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class SweepRun:
    def __init__(self, job_cfg: DictConfig, settings: dict, arguments: Sequence[str], sweep_dir: Path):
        self.cfg, self.settings, self.sweep_dir = job_cfg, settings, sweep_dir
        t = job_cfg.tracking
        self.experiment_id = tracking.setup(t.uri, t.store_dir, t.experiment)
        self.client = MlflowClient()
        splits = load_data(job_cfg.data)  # decoded once here; also warms the demo cache for the jobs
        self.fingerprint = splits.fingerprint
        self.key = _sha([settings, sorted(arguments), self.fingerprint, mfexp.__version__])
        self.arguments = list(arguments)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "SweepRun":
        previous = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{tracking.TAG_ROLE}` = 'sweep' and tags.`{T_SWEEP_KEY}` = '{self.key}' and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if previous:
            self.run_id = previous[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            for ghost in self._children("attributes.status = 'RUNNING'"):
                self.client.set_terminated(ghost.info.run_id, "KILLED")  # its process died with the last sweep
            log.info("resuming sweep %s (MLflow run %s)", self.key, self.run_id)
        else:
            run = self.client.create_run(self.experiment_id, run_name=f"sweep-{self.key[:8]}", tags={
                tracking.TAG_ROLE: "sweep", T_SWEEP_KEY: self.key, tracking.TAG_FINGERPRINT: self.fingerprint,
                tracking.TAG_ENGINE: mfexp.__version__, "mfexp.sweep_dir": str(self.sweep_dir.resolve())})
            self.run_id = run.info.run_id
            s = self.settings
            axes = [f"{t}.{a}" for t in s["order"] for a in sorted(s["space"][t])]
            params = {"search.backend": s["backend"], "search.order": ",".join(s["order"]), "search.axes": ",".join(axes),
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
            self.client.set_tag(self.run_id, "mfexp.error", f"{exc_type.__name__}: {exc}"[:5000])
        self.client.set_terminated(self.run_id, status)

    # -- children ----------------------------------------------------------------------------
    def _children(self, extra: str = "") -> list:
        flt = f"tags.`mlflow.parentRunId` = '{self.run_id}'" + (f" and {extra}" if extra else "")
        return self.client.search_runs([self.experiment_id], flt, max_results=5000)

    def candidate_key(self, defining: Sequence[str]) -> str:
        return _sha([list(defining), self.fingerprint])

    def finished(self, key: str) -> tuple[float, str] | None:
        """(objective, run id) of a FINISHED child with this key, if the sweep has one."""
        runs = self._children(f"tags.`{tracking.TAG_CANDIDATE}` = '{key}' and attributes.status = 'FINISHED'")
        runs = [r for r in runs if "best_val_loss" in r.data.metrics]
        if not runs:
            return None
        r = min(runs, key=lambda r: r.info.start_time)
        return r.data.metrics["best_val_loss"], r.info.run_id

    def latest(self, key: str) -> str | None:
        runs = self._children(f"tags.`{tracking.TAG_CANDIDATE}` = '{key}'")
        return max(runs, key=lambda r: r.info.start_time).info.run_id if runs else None

    def cost(self, full_epochs: int, wall_seconds: float) -> dict[str, float]:
        """Screening compute so far, in full-training-set epochs (epochs run x data.subset)."""
        spent, n = 0.0, 0
        for r in self._children(f"tags.`{tracking.TAG_ROLE}` = 'candidate'"):
            n += 1
            spent += r.data.metrics.get("epochs_run", 0.0) * float(r.data.params.get("data.subset", 1.0))
        return {"candidates": n, "full_epochs": spent, "cost_multiple": spent / max(full_epochs, 1),
                "wall_seconds": wall_seconds}

    # -- the end -----------------------------------------------------------------------------
    def finish(self, outcome, baseline, final, reference, cost: dict, report: bool, model_name: str | None) -> None:
        c = self.client
        full = {"baseline": baseline, "final": final, "reference": reference}
        runs = {role: c.get_run(r.run_id) for role, r in full.items() if r is not None and r.run_id}

        def rank(role: str):
            m = runs[role].data.metrics
            return (m.get("best_val_loss", float("inf")), m.get("test_error_rate", float("inf")))

        best_role = min(runs, key=rank)
        winners = [outcome.screen_baseline.run_id] + [s.best.run_id for s in outcome.stages if s.verdict == "kept"]
        for run_id in filter(None, winners):
            c.set_tag(run_id, "mfexp.stage_winner", "true")
        tags = {"mfexp.baseline_run_id": runs["baseline"].info.run_id, "mfexp.best_run_id": runs[best_role].info.run_id,
                "mfexp.best_role": best_role, "mfexp.kept": ",".join(outcome.kept),
                "mfexp.rejected": ",".join(outcome.rejected), "mfexp.rejected_reasons": json.dumps(outcome.rejected),
                "mfexp.policy": runs["final"].data.tags.get(tracking.TAG_POLICY, "") if "final" in runs else
                runs["baseline"].data.tags.get(tracking.TAG_POLICY, "")}
        if "reference" in runs:
            tags["mfexp.reference_run_id"] = runs["reference"].info.run_id
        for s in outcome.stages:
            if s.best is not None and s.best.run_id:
                tags[f"mfexp.stage.{s.stage}.best_run_id"] = s.best.run_id
            tags[f"mfexp.stage.{s.stage}.verdict"] = f"{s.technique}: {s.verdict}"
        metrics = {"search.candidate_epochs": cost["full_epochs"], "search.candidates": cost["candidates"],
                   "search.cost_multiple": cost["cost_multiple"], "search.wall_seconds": cost["wall_seconds"],
                   "search.noise": outcome.noise, "search.threshold": outcome.threshold,
                   "screen.baseline_val_loss": outcome.screen_baseline.val_loss,
                   "screen.best_val_loss": outcome.incumbent.val_loss}
        if "final" in runs:
            # Does the screening ranking hold at full budget? Both must say the policy beats no policy.
            full_gain = rank("baseline")[0] - rank("final")[0]
            metrics["check.screen_gain"] = outcome.screen_baseline.val_loss - outcome.incumbent.val_loss
            metrics["check.full_gain"] = full_gain
            tags["mfexp.ranking_held"] = str(full_gain > 0).lower()
        for role, r in runs.items():
            for k in ("best_val_loss", "test_error_rate"):
                if k in r.data.metrics:
                    metrics[f"{role}.{k}"] = r.data.metrics[k]
        c.log_batch(self.run_id, metrics=[_metric(k, v) for k, v in metrics.items()],
                    tags=[_tag(k, v) for k, v in tags.items()])
        report_path = self._report(model_name) if report else None
        self._summary(runs, best_role, outcome, cost, report_path)

    def _report(self, model_name: str | None) -> Path | None:
        try:
            from mfexp.report import make_report
        except ImportError:  # the report plugin is not installed
            return None
        try:
            return make_report(self.run_id, self.sweep_dir / "report", model_name=model_name)
        except Exception as e:  # noqa: BLE001 - a report failure must not lose the finished sweep
            log.error("report failed: %s (rerun: python -m mfexp.report --sweep-id %s)", e, self.run_id)
            return None

    def _summary(self, runs: dict, best_role: str, outcome, cost: dict, report_path: Path | None) -> None:
        def err(role):
            v = runs[role].data.metrics.get("test_error_rate") if role in runs else None
            return f"{v:.2%}" if v is not None else "-"

        uri = tracking.resolve_uri(self.cfg.tracking.uri, self.cfg.tracking.store_dir)
        lines = [
            "",
            "=" * 72,
            f"mfexp sweep {self.run_id} finished",
            f"  test error  baseline {err('baseline')} | searched policy {err('final')} | trivial reference {err('reference')}",
            f"  winning policy: {runs[best_role].data.tags.get(tracking.TAG_POLICY)} ({best_role}); kept: "
            f"{', '.join(outcome.kept) or 'none'}",
            f"  rejected: {', '.join(f'{t} ({why})' for t, why in outcome.rejected.items()) or 'none'}",
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
