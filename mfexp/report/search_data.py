"""What the search trained, read back from a sweep's runs: the policies for parallel coordinates and the per-technique steps.

Called by `mfexp.report.build.collect`. Every value comes from the runs' params, metrics and tags
and the sweep run's ``mfexp.delivery`` / ``mfexp.proposals`` tags; nothing from the sweeper's memory.
"""
from __future__ import annotations

from collections.abc import Iterable

from mfexp import keys
from mfexp.report.sweep_data import PolicyLine, RunInfo, Step

TRAINED_ROLES = ("baseline", "candidate", "final", "reference")
AXIS_KINDS = ("m", "rr", "r")


def _label(r: RunInfo, proposal_of: dict[str, str]) -> str:
    if r.role == "candidate":
        if r.tags.get(keys.TAG_PROPOSAL):
            return r.tags[keys.TAG_PROPOSAL]
        return f"stage {r.stage}: {r.technique}" if r.stage else "screening, no policy"
    if r.role == "final" and r.tags.get(keys.TAG_FROM_CANDIDATE) in proposal_of:
        return f"final ({proposal_of[r.tags[keys.TAG_FROM_CANDIDATE]]})"
    return r.role


def _full(r: RunInfo) -> bool:
    return r.role != "candidate" or r.fidelity == "full"


def policy_axes(runs: Iterable[RunInfo], order: list[str], declared: list[str]) -> list[str]:
    """The parallel-coordinates axes: the search's, in search order: ``declared`` (the staged search's
    ``search.axes``) and every ``technique.m|rr`` or ``synthetic.r`` that a searched policy (a candidate or
    the final run) sets. The baseline and the reference are drawn on these axes, not given their own.

    An ``m`` axis whose every non-zero value is 1 is left out (on/off techniques such as flips: their
    ``rr`` axis says it all)."""
    seen: dict[str, set[float]] = {}
    for r in runs:
        if r.role not in ("candidate", "final"):
            continue
        for k, v in r.params.items():
            if k.startswith("policy.") and k.rpartition(".")[2] in AXIS_KINDS:
                axis = k[len("policy."):]
                value = r.axis_value(axis)
                if value:
                    seen.setdefault(axis, set()).add(value)
    keep = set(declared) | {a for a, vs in seen.items() if not (a.endswith(".m") and vs <= {1.0})}
    rank = {t: i for i, t in enumerate(dict.fromkeys([*(a.rpartition(".")[0] for a in declared), *order]))}

    def where(axis: str) -> tuple:
        technique, _, kind = axis.rpartition(".")
        return (rank.get(technique, len(rank)), technique, AXIS_KINDS.index(kind) if kind in AXIS_KINDS else 9)

    return sorted(keep, key=where)


def policy_lines(children: list[RunInfo], axes: list[str], delivered_run: str, delivery: dict | None) -> list[PolicyLine]:
    """One line per distinct policy (tag mfexp.policy) of the finished runs; a full-budget run stands for its
    policy over a screening one, the delivered run over any other. Validation error from the delivery decision
    when it has the run, else 1 - the run's last val_accuracy."""
    errors: dict[str, float] = {}
    if delivery and delivery.get("n"):
        n = float(delivery["n"])
        base = delivery.get("baseline") or {}
        if base.get("run_id"):
            errors[base["run_id"]] = base["val_errors"] / n
        errors.update({c["run_id"]: c["errors"] / n for c in delivery.get("challengers", []) if c.get("run_id")})
    runs = [r for r in children if r.role in TRAINED_ROLES and r.status == "FINISHED" and keys.BEST_VAL_LOSS in r.metrics]
    proposal_of = {r.run_id: r.tags[keys.TAG_PROPOSAL] for r in runs if r.tags.get(keys.TAG_PROPOSAL)}
    by_policy: dict[str, RunInfo] = {}
    for r in sorted(runs, key=lambda r: (r.run_id == delivered_run, _full(r), -r.start_time)):
        by_policy[r.policy or r.run_id] = r  # the last written wins: the delivered, else a full-budget, else the first
    lines = []
    for r in sorted(by_policy.values(), key=lambda r: r.start_time):
        err = errors.get(r.run_id)
        if err is None and r.tags.get(keys.TAG_FROM_CANDIDATE) in errors:
            err = errors[r.tags[keys.TAG_FROM_CANDIDATE]]
        if err is None and "val_accuracy" in r.metrics:
            err = 1.0 - r.metrics["val_accuracy"]
        lines.append(PolicyLine(r.policy, _label(r, proposal_of), r.role, r.run_id,
                                "full budget" if _full(r) else r.fidelity or "screening", r.params.get("augment.mode", "all"),
                                tuple(r.axis_value(a) for a in axes), r.metrics.get(keys.BEST_VAL_LOSS), err,
                                r.run_id == delivered_run))
    return lines


def nested_steps(baseline: RunInfo, proposals: list[dict], by_id: dict[str, RunInfo], notes: list[str]) -> list[Step]:
    """Density backend: bar i is the full-budget validation-loss change from adding the nested sequence's i-th technique."""
    steps, previous = [], baseline
    for i, p in enumerate((p for p in proposals if p.get("kind") == "nested"), start=1):
        r = by_id.get(p.get("run_id") or "")
        if r is None or keys.BEST_VAL_LOSS not in r.metrics:
            notes.append(f"The nested candidate {p.get('name')} (+ {p.get('adds')}) has no finished run "
                         f"({p.get('status', 'not trained')}), so the per-technique chart stops before it.")
            break
        steps.append(Step(str(p.get("adds")), i, r.run_id, previous.metrics[keys.BEST_VAL_LOSS], r.metrics[keys.BEST_VAL_LOSS]))
        previous = r
    return steps
