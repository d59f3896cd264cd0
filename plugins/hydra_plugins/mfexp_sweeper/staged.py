"""The search itself, free of Hydra and MLflow: staged, successive halving, noise-aware.

Stages follow the technique order. Each stage tries the values of one technique's axes with the
earlier winners fixed; candidates run on the cheapest rung first and the best 1/eta climb to the
next; every stage ends on the top rung, where the winner is compared with the incumbent policy at
the same rung and seed (a paired comparison). A value is kept only if it lowers validation loss
by more than the noise measured from the no-policy run at several seeds; a technique whose best
value is worse by more than that noise is rejected as harmful, otherwise as no measurable gain.
"""

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from mfexp.errors import SearchFailed  # noqa: F401 - re-exported for the sweeper and tests

Policy = tuple[tuple[str, str, float], ...]  # ((technique, axis, value), ...) in search order


@dataclass(frozen=True)
class Candidate:
    policy: Policy
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
    policy: Policy
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


class StagedSearch:
    def __init__(self, order: Sequence[str], space: Mapping[str, Mapping[str, Sequence[float]]], n_rungs: int,
                 eta: int = 3, noise_seeds: int = 2, noise_factor: float = 1.0, min_improvement: float = 0.0,
                 budget_left: Callable[[], bool] = lambda: True, log: Callable[[str], None] = print):
        missing = [t for t in order if t not in space or not space[t]]
        if missing:
            raise ValueError(f"search.space has no values for {missing}")
        self.order, self.space, self.top = list(order), space, n_rungs - 1
        self.eta, self.noise_seeds, self.noise_factor, self.min_improvement = max(2, eta), max(1, noise_seeds), noise_factor, min_improvement
        self.budget_left, self.log = budget_left, log

    def run(self, evaluate: Callable[[list[Candidate]], list[Result]]) -> Outcome:
        cache: dict[Candidate, Result] = {}
        results: list[Result] = []

        def ev(cands: list[Candidate]) -> list[Result]:
            todo = [c for c in dict.fromkeys(cands) if c not in cache]
            for r in evaluate(todo) if todo else []:
                cache[r.candidate] = r
                results.append(r)
            return [cache[c] for c in cands]

        base = ev([Candidate((), self.top, seed=s) for s in range(self.noise_seeds)])
        ok = [r.val_loss for r in base if r.ok]
        if not base[0].ok:
            raise SearchFailed("the no-policy screening run failed: nothing to compare candidates with")
        noise = (max(ok) - min(ok)) if len(ok) > 1 else 0.0
        threshold = max(self.noise_factor * noise, self.min_improvement)
        self.log(f"baseline screening val_loss {base[0].val_loss:.4f}; noise {noise:.4f} -> a kept value must gain > {threshold:.4f}")

        policy: Policy = ()
        incumbent = base[0]
        kept, rejected, stages = [], {}, []
        for si, tech in enumerate(self.order, 1):
            if not self.budget_left():
                rejected[tech] = "not searched (budget)"
                stages.append(StageRecord(si, tech, incumbent.val_loss, None, rejected[tech]))
                continue
            alive = [policy + tuple((tech, a, v) for a, v in vals) for vals in stage_values(self.space[tech])]
            best: Result | None = None
            # Halving needs at least eta candidates to drop one; smaller stages go straight to the top rung.
            first = 0 if len(alive) >= self.eta else self.top
            for rung in range(first, self.top + 1):
                rs = [r for r in ev([Candidate(p, rung, 0, si, tech) for p in alive]) if r.ok]
                if not rs:
                    break
                rs.sort(key=lambda r: r.val_loss)
                best = rs[0]
                alive = [r.candidate.policy for r in rs[: math.ceil(len(rs) / self.eta)]]
            gain = incumbent.val_loss - best.val_loss if best is not None else -math.inf
            if best is None:
                verdict = "all candidates failed"
            elif best.candidate.rung != self.top:
                verdict, best = "all candidates failed", None  # none survived to the comparison rung
            elif gain > threshold:
                verdict = "kept"
            else:
                verdict = "hurts" if gain < -threshold else "no gain beyond noise"
            stages.append(StageRecord(si, tech, incumbent.val_loss, best, verdict))
            if verdict == "kept":
                policy, incumbent = best.candidate.policy, best
                kept.append(tech)
            else:
                rejected[tech] = verdict
            shown = ", ".join(f"{a}={v}" for t, a, v in best.candidate.policy if t == tech) if best else "-"
            self.log(f"stage {si}/{len(self.order)} {tech}: best {shown} val_loss "
                     f"{best.val_loss if best else float('nan'):.4f} vs {stages[-1].incumbent_loss:.4f} -> {verdict}")
        return Outcome(policy, kept, rejected, stages, noise, threshold, base[0], incumbent, results)


class OptunaSearch:
    """The optional backend: Optuna TPE (ask/tell) over the same space, every trial on the top rung.

    Each technique is off or one of its stage values; trials run in batches of `batch` so a parallel
    launcher stays busy. The best trial is kept only if it beats the no-policy run by the same
    noise threshold the staged search uses.
    """

    def __init__(self, order: Sequence[str], space: Mapping[str, Mapping[str, Sequence[float]]], n_rungs: int,
                 trials: int, batch: int = 1, noise_seeds: int = 2, noise_factor: float = 1.0,
                 min_improvement: float = 0.0, seed: int = 0, budget_left: Callable[[], bool] = lambda: True,
                 log: Callable[[str], None] = print):
        self.order, self.top, self.trials, self.batch = list(order), n_rungs - 1, trials, max(1, batch)
        self.choices = {t: [()] + [tuple((t, a, v) for a, v in vals) for vals in stage_values(space[t])] for t in order}
        self.noise_seeds, self.noise_factor, self.min_improvement = max(1, noise_seeds), noise_factor, min_improvement
        self.seed, self.budget_left, self.log = seed, budget_left, log

    def run(self, evaluate: Callable[[list[Candidate]], list[Result]]) -> Outcome:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        base = evaluate([Candidate((), self.top, seed=s) for s in range(self.noise_seeds)])
        if not base[0].ok:
            raise SearchFailed("the no-policy screening run failed: nothing to compare candidates with")
        ok = [r.val_loss for r in base if r.ok]
        noise = (max(ok) - min(ok)) if len(ok) > 1 else 0.0
        threshold = max(self.noise_factor * noise, self.min_improvement)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=self.seed))
        results, done = list(base), 0
        while done < self.trials and self.budget_left():
            trials = [study.ask() for _ in range(min(self.batch, self.trials - done))]
            policies = [tuple(itertools.chain(*(self.choices[t][tr.suggest_categorical(t, list(range(len(self.choices[t]))))]
                                                for t in self.order))) for tr in trials]
            rs = evaluate([Candidate(p, self.top, 0, i + done + 1, "optuna") for i, p in enumerate(policies)])
            for tr, r in zip(trials, rs):
                study.tell(tr, r.val_loss if r.ok else None,
                           state=optuna.trial.TrialState.COMPLETE if r.ok else optuna.trial.TrialState.FAIL)
            results += rs
            done += len(trials)
        best = min((r for r in results[len(base):] if r.ok), key=lambda r: r.val_loss, default=None)
        gain = base[0].val_loss - best.val_loss if best else -math.inf
        self.log(f"optuna: {done} trials, best val_loss {best.val_loss if best else float('nan'):.4f} "
                 f"vs no policy {base[0].val_loss:.4f} (threshold {threshold:.4f})")
        if best is None or gain <= threshold:
            return Outcome((), [], {t: "not in a policy that beat no policy" for t in self.order}, [], noise, threshold,
                           base[0], base[0], results)
        kept = [t for t in self.order if any(x[0] == t for x in best.candidate.policy)]
        return Outcome(best.candidate.policy, kept, {t: "not chosen by TPE" for t in self.order if t not in kept},
                       [], noise, threshold, base[0], best, results)
