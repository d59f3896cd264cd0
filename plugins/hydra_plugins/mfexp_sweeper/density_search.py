"""The density-matching backend (``search.backend=density``, preset ``search=density``), free of Hydra and MLflow.

No screening trainings: the full-budget baseline's job scores every probe (one technique at one
magnitude) with its model fitted on the training split (`mfexp.density.score`, before the refit),
and this backend turns those scores into one policy (`mfexp.density.choose`). The final
full-budget run then tests that policy against the baseline and the trivial reference, as with
the other backends.
"""
from collections.abc import Callable, Mapping, Sequence

from .search import Outcome, PolicySpec, Result


class DensitySearch:
    def __init__(self, order: Sequence[str], keep: float, top: int, rr: float,
                 log: Callable[[str], None] = print):
        self.order, self.keep, self.top, self.rr, self.log = list(order), keep, top, rr, log

    @staticmethod
    def probes(order: Sequence[str], magnitudes: Sequence[float], continuous: Mapping[str, bool]) -> dict[str, list[float]]:
        """technique -> m values to score: ``magnitudes`` for techniques with a strength, m = 1 for on/off ones (flips)."""
        return {t: ([float(m) for m in magnitudes] if continuous.get(t, True) else [1.0]) for t in order}

    def run(self, scores: Mapping, baseline: Result) -> Outcome:
        """The policy from the baseline's ``density.json`` (`mfexp.density.Scores.to_dict`); ``note`` says why."""
        from mfexp.density import Scores, choose

        parsed = Scores.from_dict(scores)
        choice = choose(parsed, self.keep, self.top)
        policy: PolicySpec = tuple(x for t, m in choice.policy for x in ((t, "m", m), (t, "rr", self.rr)))
        kept = [t for t, _ in choice.policy]
        rejected = {t: choice.rejected.get(t, "not scored") for t in self.order if t not in kept}
        self.log(choice.reason)
        # No screening run: the "screened" no-policy loss is the baseline fit's own validation loss.
        screened = Result(baseline.candidate, parsed.clean_loss)
        return Outcome(policy, kept, rejected, [], 0.0, 0.0, screened, screened, [], note=choice.reason)
