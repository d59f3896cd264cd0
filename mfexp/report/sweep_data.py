"""What the report shows, as data: a sweep's runs as plain copies (`RunInfo`, `Evaluated`), waterfall steps, `SweepData`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from mlflow.entities import Run

from mfexp import keys
from mfexp.names import class_key

FULL_ROLES = ("baseline", "final", "reference")
ROLE_LABELS = {"baseline": "baseline (no policy)", "final": "searched policy", "reference": "TrivialAugment reference"}


# ------------------------------------------------------------------------------------------ runs
@dataclass(frozen=True)
class RunInfo:
    """One MLflow run as the report needs it (a plain copy of MLflow's entity)."""

    run_id: str
    name: str
    status: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]

    @classmethod
    def of(cls, run: Run) -> RunInfo:
        return cls(run.info.run_id, run.info.run_name or "", run.info.status, run.info.start_time or 0,
                   dict(run.data.tags), dict(run.data.params), dict(run.data.metrics))

    @property
    def role(self) -> str:
        return self.tags.get(keys.TAG_ROLE, "")

    @property
    def policy(self) -> str:
        return self.tags.get(keys.TAG_POLICY, "")

    @property
    def fingerprint(self) -> str:
        return self.tags.get(keys.TAG_FINGERPRINT, "")

    @property
    def stage(self) -> int | None:
        try:
            return int(self.tags[keys.TAG_STAGE])
        except (KeyError, ValueError):
            return None

    @property
    def technique(self) -> str:
        return self.tags.get(keys.TAG_TECHNIQUE, "")

    @property
    def stage_winner(self) -> bool:
        return self.tags.get(keys.TAG_STAGE_WINNER, "").lower() == "true"

    @property
    def fidelity(self) -> str:
        return self.tags.get(keys.TAG_FIDELITY, "")

    def axis_value(self, axis: str) -> float:
        """The value of search axis ``axis`` (``rotate.m``) in this run; 0 (identity) when not logged."""
        try:
            value = float(self.params[f"policy.{axis}"])
        except (KeyError, ValueError):
            return 0.0
        return value if math.isfinite(value) else 0.0


@dataclass(frozen=True)
class Evaluated:
    """A full-budget run with its logged test predictions and dataset description."""

    run: RunInfo
    y_true: np.ndarray
    y_pred: np.ndarray
    prob: np.ndarray
    classes: list[str]
    dataset: dict  # dataset.json: classes, good_class, fingerprint, image_size, channels, counts
    policy: dict  # policy.json: mode, canonical (identity-free settings), name, ...

    def metric(self, key: str) -> float:
        return float(self.run.metrics[key])

    @property
    def role(self) -> str:
        return self.run.role

    def settings(self, order: list[str] | None = None) -> dict[str, dict[str, float]]:
        """The policy's non-identity settings (policy.json's canonical form plus synthetic data), in search order."""
        canonical = {k: dict(v) for k, v in (self.policy.get("canonical") or {}).items() if isinstance(v, dict)}
        r = self.run.axis_value("synthetic.r")
        if r > 0:
            canonical["synthetic"] = {"r": r}
        techniques = [a.rpartition(".")[0] for a in order or []]
        rank = {t: i for i, t in enumerate(dict.fromkeys(techniques))}
        return dict(sorted(canonical.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))

    @property
    def mode(self) -> str:
        return str(self.policy.get("mode", self.run.params.get("augment.mode", "all")))


@dataclass(frozen=True)
class Step:
    """One bar of the waterfall: a kept technique's stage winner against the previous winner."""

    technique: str
    stage: int
    run_id: str
    before: float
    after: float

    @property
    def gain(self) -> float:
        return self.before - self.after


@dataclass(frozen=True)
class PolicyLine:
    """One distinct policy of the sweep, as the parallel-coordinates chart draws it and report.json lists it."""

    name: str  # the three-word policy name (tag mfexp.policy)
    label: str  # what it was in the sweep: baseline, reference, final, a proposal (nested-1, diverse), a stage's technique
    role: str  # the run's mfexp.role
    run_id: str
    fidelity: str  # "full budget" or the screening fidelity (e<epochs>-s<subset>)
    mode: str  # all | trivial (trivial: m is the cap of a random magnitude, rr switches a technique in)
    values: tuple[float, ...]  # one per SweepData.axes
    val_loss: float | None
    val_error: float | None  # share of the validation images misclassified (before any refit)
    delivered: bool


@dataclass
class SweepData:
    tracking_uri: str
    experiment_id: str
    experiment_name: str
    sweep: RunInfo
    axes: list[str]
    candidates: list[RunInfo]  # finished candidate runs
    full: dict[str, Evaluated]  # role -> run; baseline always, final / reference when present
    best_role: str
    searched: RunInfo  # the sweep's winning searched policy: final run, else the baseline (nothing kept)
    kept: list[str]
    rejected: list[str]
    screen_start: RunInfo | None  # where the per-technique chart starts: the stage-0 screening run, or the baseline
    steps: list[Step]
    notes: list[str] = field(default_factory=list)
    step_fidelity: str = "screening"  # of the per-technique steps: "screening" (staged) or "full budget" (density)
    policies: list[PolicyLine] = field(default_factory=list)  # every distinct policy trained, for parallel coordinates
    density: dict | None = None  # the baseline's density.json (density matching's probe scores)
    density_keep: float | None = None  # the share of learned knowledge a magnitude had to retain
    delivery: dict | None = None  # the sweep's delivery decision (tag mfexp.delivery), None for older sweeps
    proposals: list[dict] = field(default_factory=list)  # density: every proposal, trained or not (tag mfexp.proposals)

    @property
    def baseline(self) -> Evaluated:
        return self.full["baseline"]

    @property
    def best(self) -> Evaluated:
        return self.full[self.best_role]

    @property
    def classes(self) -> list[str]:
        return self.baseline.classes

    def class_key(self, metric: str, cls: str) -> str:
        """The MLflow key of a per-class test metric, ``test_<metric>/<class>`` as `mfexp.names` makes class names safe."""
        return class_key(f"test_{metric}/", cls, self.classes)

    @property
    def engine_version(self) -> str:
        return self.sweep.tags.get(keys.TAG_ENGINE) or self.best.run.tags.get(keys.TAG_ENGINE, "?")

    def sweep_metric(self, key: str) -> float | None:
        v = self.sweep.metrics.get(key)
        return float(v) if v is not None else None
