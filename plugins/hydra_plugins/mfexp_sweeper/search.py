"""What the two search backends share: candidates, their results, the outcome, and the noise threshold.

Free of Hydra and MLflow. The sweeper turns a `Candidate` into a job and the job's objective into a
`Result`; a backend (`staged.StagedSearch`, `optuna_search.OptunaSearch`) returns an `Outcome`,
which `sweep_run.SweepRun` records in MLflow.
"""

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mfexp.errors import SearchFailed

# A policy as the search sees it: ((technique, axis, value), ...) in search order. The sweeper maps
# it to ``augment.techniques.<technique>.<axis>=<value>`` overrides (mfexp.policy.Policy is the built object).
PolicySpec = tuple[tuple[str, str, float], ...]


@dataclass(frozen=True)
class Candidate:
    policy: PolicySpec
    rung: int
    seed: int = 0
    stage: int = 0
    technique: str = "none"


@dataclass
class Result:
    candidate: Candidate
    val_loss: float | None  # None: the job failed or diverged
    run_id: str | None = None
    full_epochs: float = 0.0  # compute in full-training-set epochs (epochs run x subset)

    @property
    def ok(self) -> bool:
        return self.val_loss is not None and math.isfinite(self.val_loss)


@dataclass
class StageRecord:
    stage: int
    technique: str
    incumbent_loss: float
    best: Result | None
    verdict: str  # kept | no gain beyond noise | hurts | all candidates failed | not searched (budget)


@dataclass
class Outcome:
    policy: PolicySpec
    kept: list[str]
    rejected: dict[str, str]
    stages: list[StageRecord]
    noise: float
    threshold: float
    screen_baseline: Result
    incumbent: Result  # the winning policy at the top rung
    results: list[Result] = field(default_factory=list)


def stage_values(space: Mapping[str, Sequence[float]]) -> list[tuple[tuple[str, float], ...]]:
    axes = sorted(space)  # m before r before rr: stable regardless of YAML order
    return [tuple(zip(axes, vals)) for vals in itertools.product(*(space[a] for a in axes))]


def noise_threshold(base: Sequence[Result], noise_factor: float, min_improvement: float) -> tuple[float, float]:
    """(noise, threshold) from the no-policy screening runs at several seeds; a kept value must gain more than the threshold."""
    if not base[0].ok:
        raise SearchFailed("the no-policy screening run failed: nothing to compare candidates with")
    ok = [r.val_loss for r in base if r.ok]
    noise = (max(ok) - min(ok)) if len(ok) > 1 else 0.0
    return noise, max(noise_factor * noise, min_improvement)
