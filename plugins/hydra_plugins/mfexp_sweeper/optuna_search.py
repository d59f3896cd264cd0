"""The optional search backend (``search.backend=optuna``): Optuna TPE over the staged search's space."""

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

from .search import Candidate, Outcome, Result, noise_threshold, stage_values


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
        noise, threshold = noise_threshold(base, self.noise_factor, self.min_improvement)
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
