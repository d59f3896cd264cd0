"""The default search backend, free of Hydra and MLflow: staged, successive halving, noise-aware.

Stages follow the technique order. Each stage tries the values of one technique's axes with the
earlier winners fixed; candidates run on the cheapest rung first and the best 1/eta climb to the
next; every stage ends on the top rung, where the winner is compared with the incumbent policy at
the same rung and seed (a paired comparison). A value is kept only if it lowers validation loss
by more than the noise measured from the no-policy run at several seeds; a technique whose best
value is worse by more than that noise is rejected as harmful, otherwise as no measurable gain.
"""

import math
from collections.abc import Callable, Mapping, Sequence

from .search import (
    Candidate,
    Outcome,
    PolicySpec,
    Result,
    StageRecord,
    noise_threshold,
    stage_values,
)


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
        noise, threshold = noise_threshold(base, self.noise_factor, self.min_improvement)
        self.log(f"baseline screening val_loss {base[0].val_loss:.4f}; noise {noise:.4f} -> a kept value must gain > {threshold:.4f}")

        policy: PolicySpec = ()
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
