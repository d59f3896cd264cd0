"""What the two search backends share: candidates, their results, the outcome, the noise threshold, the ranking check.

Free of Hydra and MLflow. The sweeper turns a `Candidate` into a job and the job's objective into a
`Result`; a backend (`staged.StagedSearch`, `optuna_search.OptunaSearch`) returns an `Outcome`,
which `sweep_run.SweepRun` records in MLflow, with the ranking check (`rank_agreement`) of the full-budget
runs against the screening; what is delivered is `delivery.decide`'s call.
"""

import itertools
import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mfexp.errors import SearchFailed

# A policy as the search sees it: ((technique, axis, value), ...) in search order. The sweeper maps
# it to ``augment.techniques.<technique>.<axis>=<value>`` overrides (mfexp.policy.Policy is the built object).
PolicySpec = tuple[tuple[str, str, float], ...]


@dataclass(frozen=True)
class Candidate:
    policy: PolicySpec
    rung: int  # index into search.rungs; -1: the full budget (all epochs, the whole training split)
    seed: int = 0
    stage: int = 0
    technique: str = "none"
    mode: str = "all"  # mfexp.policy.Policy's mode: all | trivial
    name: str = ""  # the density backend's proposal name (nested-1, diverse, ...)


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
    note: str = ""  # one line from the backend on how it chose (density matching's reason)
    proposals: list[dict] = field(default_factory=list)  # density: every proposal, trained or not, with its run


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


# ------------------------------------------------------------------ the ranking check (full budget vs screening)
ROLE_WORDS = {"baseline": "baseline", "final": "searched policy", "reference": "trivial reference"}


@dataclass(frozen=True)
class RankPair:
    """One policy trained at both fidelities: its full-budget run and its screening runs at the top rung."""

    policy: str  # the three-word policy name (tag mfexp.policy), the same at every fidelity
    role: str  # the full-budget run's role: baseline | final | reference
    full_run_id: str
    full_loss: float
    screen_run_ids: tuple[str, ...]
    screen_loss: float  # mean best val loss of the screening runs (several seeds for the no-policy runs)


@dataclass(frozen=True)
class RankAgreement:
    pairs: tuple[RankPair, ...]
    unscreened: tuple[str, ...]  # full-budget roles whose policy has no screening run at the top rung
    rho: float | None  # Spearman's rho; None when undefined
    text: str  # one line: the value, or why it is undefined


def rank_pairs(full: Mapping[str, tuple[str, str, float]],
               screening: Sequence[tuple[str, int, str, float]]) -> tuple[list[RankPair], list[str]]:
    """Match full-budget runs with screening runs of the same policy at the top screening rung.

    ``full``: role -> (policy name, run id, best val loss); ``screening``: (policy name, rung, run id,
    best val loss) of the finished candidates. Returns the pairs and the roles left unmatched. Only the
    top rung counts: lower rungs are another fidelity, and mixing them would rank the fidelities too."""
    screening = [s for s in screening if s[0] and math.isfinite(s[3])]
    top = max((s[1] for s in screening), default=0)
    at_top: dict[str, list[tuple[str, float]]] = {}
    for name, rung, run_id, loss in screening:
        if rung == top:
            at_top.setdefault(name, []).append((run_id, loss))
    pairs, unscreened = [], []
    for role, (name, run_id, loss) in full.items():
        runs = at_top.get(name)
        if not runs or not math.isfinite(loss):
            unscreened.append(role)
            continue
        pairs.append(RankPair(name, role, run_id, float(loss), tuple(r for r, _ in runs),
                              statistics.fmean(v for _, v in runs)))
    return pairs, unscreened


def rank_agreement(pairs: Sequence[RankPair], unscreened: Sequence[str] = ()) -> RankAgreement:
    """Spearman's rho between the screening and the full-budget validation losses of the same policies.

    Defined from 3 pairs on (2 points always correlate perfectly); undefined, with the reason, below
    that or when one side has no spread at all."""
    n = len(pairs)
    names = ", ".join(f"{ROLE_WORDS[p.role]} {p.policy}" for p in pairs) or "none"
    missing = f"; not screened: {', '.join(ROLE_WORDS.get(r, r) for r in unscreened)}" if unscreened else ""
    if n < 3:
        order = ""
        if n == 2:
            a, b = pairs
            same = (a.screen_loss - b.screen_loss) * (a.full_loss - b.full_loss) > 0
            order = f"; the two {'agree' if same else 'disagree'} on their order"
        return RankAgreement(tuple(pairs), tuple(unscreened), None,
                             f"Spearman's rho undefined: {n} polic{'y' if n == 1 else 'ies'} trained at both fidelities "
                             f"({names}), it needs at least 3{order}{missing}")
    from scipy.stats import spearmanr  # scikit-learn's dependency; imported here, not at Hydra's plugin scan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: rho is nan, said below
        rho = float(spearmanr([p.screen_loss for p in pairs], [p.full_loss for p in pairs])[0])
    if not math.isfinite(rho):
        return RankAgreement(tuple(pairs), tuple(unscreened), None,
                             f"Spearman's rho undefined: the {n} policies trained at both fidelities ({names}) have "
                             f"equal validation losses at one fidelity{missing}")
    return RankAgreement(tuple(pairs), tuple(unscreened), rho,
                         f"Spearman's rho {rho:+.2f} between screening and full-budget val loss over {n} policies "
                         f"({names}){missing}")
