"""The density-matching backend (``search.backend=density``, the default): density proposes, full training disposes.

No screening trainings on data shares: the full-budget baseline's job scores every probe (one
technique at one magnitude) with its model fitted on the training split (`mfexp.density.score`,
before the refit). From those scores this backend builds a handful of candidate policies
(`mfexp.density.propose`: the nested sequence of the best techniques, a TrivialAugment-style policy
over the admitted ones, ...) and has each trained at the full budget without refit, as one batch
of Hydra's launcher (``evaluate``). Which of them, if any, is delivered is the delivery rule's
call (`delivery.decide`, in the sweeper), on the same footing as the baseline and the reference.
Free of Hydra and MLflow.
"""
from collections.abc import Callable, Mapping, Sequence

from .search import Candidate, Outcome, PolicySpec, Result, StageRecord


def spec(techniques: Sequence[tuple[str, float, float]]) -> PolicySpec:
    """(technique, m, rr) triples as the sweeper's policy form ((technique, axis, value), ...)."""
    return tuple(x for t, m, rr in techniques for x in ((t, "m", float(m)), (t, "rr", float(rr))))


class DensitySearch:
    def __init__(self, order: Sequence[str], keep: float, top: int, rr: float, kinds: Sequence[str] = ("nested", "diverse"),
                 log: Callable[[str], None] = print):
        self.order, self.keep, self.top, self.rr, self.kinds, self.log = list(order), keep, top, rr, list(kinds), log

    @staticmethod
    def probes(order: Sequence[str], magnitudes: Sequence[float], continuous: Mapping[str, bool]) -> dict[str, list[float]]:
        """technique -> m values to score: ``magnitudes`` for techniques with a strength, m = 1 for on/off ones (flips)."""
        return {t: ([float(m) for m in magnitudes] if continuous.get(t, True) else [1.0]) for t in order}

    def run(self, scores: Mapping, baseline: Result, evaluate: Callable[[list[Candidate]], list[Result]],
            max_candidates: int) -> Outcome:
        """Propose from the baseline's ``density.json`` (`mfexp.density.Scores.to_dict`), train the first
        ``max_candidates`` proposals at full budget (``evaluate``), and return them as the outcome's results.

        The outcome's ``policy`` is empty: the sweeper's delivery rule picks among the trained candidates.
        ``proposals`` (one dict per proposal, trained or not) is what the report shows."""
        from mfexp.density import Scores, propose

        parsed = Scores.from_dict(scores)
        choice, proposals = propose(parsed, self.keep, self.top, self.rr, self.kinds)
        self.log(choice.reason)
        kept = [t for t, _ in choice.policy]
        rejected = {t: choice.rejected.get(t, "not scored") for t in self.order if t not in kept}
        trained = proposals[:max(0, max_candidates)]
        cands = [Candidate(spec(p.techniques), -1, 0, i + 1, p.adds or p.name, mode=p.mode, name=p.name)
                 for i, p in enumerate(trained)]
        results = evaluate(cands) if cands else []
        records, info, previous = [], [], baseline
        for i, p in enumerate(proposals):
            r = results[i] if i < len(results) else None
            entry = {"name": p.name, "kind": p.kind, "mode": p.mode, "adds": p.adds,
                     "techniques": [list(x) for x in p.techniques], "run_id": r.run_id if r else None,
                     "val_loss": r.val_loss if r and r.ok else None,
                     "status": ("trained" if r.ok else "failed") if r else "not trained: over search.max_cost"}
            info.append(entry)
            if p.kind == "nested" and r is not None:
                before = previous.val_loss if previous is not None and previous.ok else float("nan")
                verdict = "trained" if r.ok else "all candidates failed"
                records.append(StageRecord(i + 1, p.adds, before, r if r.ok else None, verdict))
                previous = r if r.ok else None
        for p in proposals[len(trained):]:
            self.log(f"proposal {p.name} not trained: the search budget (search.max_cost) allows {len(trained)} candidates")
        ok = [r for r in results if r.ok]
        best = min(ok, key=lambda r: r.val_loss, default=baseline)
        note = choice.reason + (f"; trained at full budget: {', '.join(p.name for p in trained)}" if trained else
                                "; no candidate to train")
        return Outcome((), kept, rejected, records, 0.0, 0.0, baseline, best, results, note=note, proposals=info)
