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
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

import mfexp
from mfexp import keys

from .delivery import Decision
from .search import Outcome, RankAgreement, Result, rank_agreement, rank_pairs

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
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the sweep reads a few small artifacts
        self.experiment_id = tracking.setup(t.uri, t.store_dir, t.experiment)
        self.client = MlflowClient()
        splits = load_data(job_cfg.data)  # decoded once here; also warms the demo cache for the jobs
        self.fingerprint = splits.fingerprint
        self.train_images, self.val_images = len(splits.train), len(splits.val)
        self.baseline_id: str | None = None  # set once the baseline finished: the unit of search.cost_multiple
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
                      **{f"search.{k}": (",".join(map(str, s[k])) if isinstance(s[k], list) else s[k])
                         for k in ("density_magnitudes", "density_keep", "density_top", "density_rr", "density_proposals",
                                   "max_cost", "delivery_rule", "delivery_level", "delivery_correct") if k in s},
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

    def training_compute(self, run_id: str) -> float:
        """A run's training compute in image-epochs: its fit on the training split plus its refit on train + validation."""
        r = self.client.get_run(run_id)
        n = self.train_images * float(r.data.params.get("data.subset", 1.0))
        m = r.data.metrics
        return m.get(keys.EPOCHS_RUN, 0.0) * n + m.get("refit_epochs", 0.0) * (n + self.val_images)

    def cost(self, full_epochs: int, wall_seconds: float) -> dict[str, float]:
        """Search compute so far: candidate runs, in full-training-set epochs (epochs run x data.subset), and as a
        multiple of one full training as the baseline ran it (fit + refit; per fit before the baseline exists)."""
        spent, n = 0.0, 0
        for r in self._children(f"tags.`{keys.TAG_ROLE}` = 'candidate'"):
            n += 1
            spent += r.data.metrics.get(keys.EPOCHS_RUN, 0.0) * float(r.data.params.get("data.subset", 1.0))
        unit = self.training_compute(self.baseline_id) / self.train_images if self.baseline_id else 0.0
        return {"candidates": n, "full_epochs": spent, "cost_multiple": spent / (unit or max(full_epochs, 1)),
                "wall_seconds": wall_seconds}

    def val_outcomes(self, name: str, run_id: str | None):
        """A run's validation outcome (`delivery.Outcomes`) from its val_predictions.csv; None when it has none."""
        import mlflow
        import pandas as pd

        from mfexp.metrics import frame_to_arrays

        from .delivery import Outcomes

        if not run_id:
            return None
        try:
            text = mlflow.artifacts.load_text(f"runs:/{run_id}/{keys.VAL_PREDICTIONS}")
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            log.warning("run %s (%s) has no %s: left out of the delivery decision", run_id, name, keys.VAL_PREDICTIONS)
            return None
        import io

        y, prob, _ = frame_to_arrays(pd.read_csv(io.StringIO(text)))
        return Outcomes.of(name, y, prob)

    def decide(self, baseline: Result, challengers: dict[str, Result], rule: str, level: float, correct: bool) -> Decision:
        """The delivery decision (`delivery.decide`) over the runs' validation predictions, read back from MLflow."""
        from mfexp.errors import SearchFailed

        from .delivery import decide

        base = self.val_outcomes("baseline", baseline.run_id)
        if base is None:
            raise SearchFailed(f"the baseline run {baseline.run_id} has no {keys.VAL_PREDICTIONS}: nothing to compare with")
        others = [o for name, r in challengers.items() if (o := self.val_outcomes(name, r.run_id)) is not None]
        self.delivery_runs = {"baseline": baseline.run_id, **{name: r.run_id for name, r in challengers.items()}}
        return decide(base, others, rule, level, correct)

    # -- the end -----------------------------------------------------------------------------
    def _kept_lines(self, outcome) -> list[str]:
        """The console's technique lines: a staged search keeps or rejects; density matching ranks for the nested
        candidates, while ``diverse`` samples every admitted technique."""
        why = ", ".join(f"{t} ({r})" for t, r in outcome.rejected.items()) or "none"
        if self.settings["backend"] != "density":
            return [f"  kept: {', '.join(outcome.kept) or 'none'}", f"  rejected: {why}"]
        return [f"  nested sequence: {', '.join(outcome.kept) or 'none'}"
                + ("; diverse samples every admitted technique" if any(p["kind"] == "diverse" for p in outcome.proposals) else ""),
                f"  not in the nested sequence: {why}"]

    def finish(self, outcome: Outcome, baseline: Result, final: Result | None, reference: Result | None,
               decision: Decision, cost: dict, report: Callable[..., Any] | None, model_name: str | None) -> None:
        """Tag what is delivered and why, log the outcome and the cost on the sweep run, call the report, print the summary.

        ``decision`` (`delivery.decide`) names the delivered policy: ``baseline``, ``reference``, or the policy
        whose refit is the ``final`` run. ``report`` is the ``report`` config group's object (None: no report),
        called as ``report(sweep_run_id=..., out_dir=..., model_name=...)`` while the sweep run is still open."""
        c = self.client
        full = {"baseline": baseline, "final": final, "reference": reference}
        runs = {role: c.get_run(r.run_id) for role, r in full.items() if r is not None and r.run_id and r.ok}
        best_role = decision.delivered if decision.delivered in ("baseline", "reference") else "final"
        winners = [outcome.screen_baseline.run_id] + [s.best.run_id for s in outcome.stages if s.verdict == "kept"]
        for run_id in filter(None, winners):
            if run_id != runs["baseline"].info.run_id:
                c.set_tag(run_id, keys.TAG_STAGE_WINNER, "true")
        delivery = {"rule": decision.rule, "level": decision.level, "n": decision.n, "delivered": decision.delivered,
                    "baseline": {"run_id": self.delivery_runs.get("baseline"), "val_loss": decision.baseline_loss,
                                 "val_errors": decision.baseline_errors},
                    "challengers": [{**vars(x), "run_id": self.delivery_runs.get(x.name)} for x in decision.comparisons]}
        tags = {keys.TAG_BASELINE_RUN: runs["baseline"].info.run_id, keys.TAG_BEST_RUN: runs[best_role].info.run_id,
                keys.TAG_BEST_ROLE: best_role, keys.TAG_KEPT: ",".join(outcome.kept),
                keys.TAG_REJECTED: ",".join(outcome.rejected), keys.TAG_REJECTED_REASONS: json.dumps(outcome.rejected),
                keys.TAG_POLICY: runs[best_role].data.tags.get(keys.TAG_POLICY, ""),
                keys.TAG_DELIVERY_RULE: decision.rule, keys.TAG_DELIVERED: decision.delivered,
                keys.TAG_DELIVERY: json.dumps(delivery), keys.TAG_RANKING_VERDICT: decision.reason}
        if outcome.note:
            tags[keys.TAG_SEARCH_NOTE] = outcome.note
        if outcome.proposals:
            tags[keys.TAG_PROPOSALS] = json.dumps(outcome.proposals)
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
        screened = not outcome.proposals  # the staged and optuna backends screen; density trains at full budget
        if "final" in runs and screened:
            # Does the screening ranking hold at full budget? Both must say the policy beats no policy.
            full_gain = (runs["baseline"].data.metrics.get(keys.BEST_VAL_LOSS, float("inf"))
                         - runs["final"].data.metrics.get(keys.BEST_VAL_LOSS, float("inf")))
            metrics[keys.CHECK_SCREEN_GAIN] = outcome.screen_baseline.val_loss - outcome.incumbent.val_loss
            metrics[keys.CHECK_FULL_GAIN] = full_gain
            tags[keys.TAG_RANKING_HELD] = str(full_gain > 0).lower()
        agreement = self.rank_agreement(runs) if screened else None
        if agreement is not None:
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
        self._summary(runs, best_role, outcome, cost, report_path, decision, agreement)

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
                 decision: Decision, agreement: RankAgreement | None) -> None:
        def err(role):
            v = runs[role].data.metrics.get("test_error_rate") if role in runs else None
            return f"{v:.2%}" if v is not None else "-"

        from mfexp import tracking

        uri = tracking.resolve_uri(self.cfg.tracking.uri, self.cfg.tracking.store_dir)
        delivered = decision.delivered if best_role == "final" and decision.delivered != "final" else best_role
        trained = [f"{x.name} {x.loss:.4f} / {x.errors} errors" for x in decision.comparisons]
        lines = [
            "",
            "=" * 72,
            f"mfexp sweep {self.run_id} finished",
            f"  test error  baseline {err('baseline')} | delivered policy {err(best_role)} | trivial reference {err('reference')}",
            f"  delivered: {runs[best_role].data.tags.get(keys.TAG_POLICY)} ({delivered}, run {runs[best_role].info.run_id})",
            f"  why: {decision.reason}",
            f"  validation (val loss / errors of {decision.n}): baseline {decision.baseline_loss:.4f} / "
            f"{decision.baseline_errors} errors" + (f"; {'; '.join(trained)}" if trained else ""),
            *self._kept_lines(outcome),
            *([f"  search: {outcome.note}"] if outcome.note else []),
            *([f"  screening vs full budget: {agreement.text}"] if agreement is not None else []),
            f"  search cost: {cost['candidates']} candidates, {cost['full_epochs']:.1f} full-data epochs = "
            f"{cost['cost_multiple']:.2f}x one full training (fit + refit), {cost['wall_seconds'] / 60:.1f} min",
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
