"""Report section 7: escapes and false rejects of defect vs good, baseline against optimal, with ROC and PR curves.

Read from MLflow only: each run's ``test_predictions.csv`` (defect score ``1 - P(good)``), its metric
``defect_threshold`` (chosen on validation when it trained) and its inspection metrics (`mfexp.inspection`),
the good class from ``dataset.json``. Intervals: a paired bootstrap over the test images, drawn the way
`mfexp.report.stats` draws them (same samples and seed as the rest of the report).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from mfexp import inspection as insp
from mfexp import keys
from mfexp.report.charts import BASE, GOOD, _byline, _save, _theme, optimal_label
from mfexp.report.page import Page, img, pp
from mfexp.report.stats import Interval, _interval, _rates, resamples
from mfexp.report.sweep_data import Evaluated, SweepData


CHART = "inspection_curves"
RATES = (keys.ESCAPE_RATE, keys.FALSE_REJECT_RATE)
RATE_LABELS = {keys.ESCAPE_RATE: "escape rate", keys.FALSE_REJECT_RATE: "false-reject rate"}


@dataclass(frozen=True)
class Side:
    """One model's defect-vs-good decisions on the test split."""

    ev: Evaluated
    scores: np.ndarray  # (N,) defect scores 1 - P(good)
    flags: dict[str, np.ndarray]  # "argmax" and, when the run logged a threshold, "threshold": (N,) bool
    threshold: float | None
    curves: insp.Curves | None


@dataclass(frozen=True)
class View:
    good_class: str
    defective: np.ndarray  # (N,) bool, the test truth
    base: Side
    best: Side


def _side(ev: Evaluated, good: int, defective: np.ndarray) -> Side:
    scores = insp.defect_scores(ev.prob, good)
    t = ev.run.metrics.get(keys.DEFECT_THRESHOLD)
    flags = {"argmax": insp.argmax_flags(ev.prob, good)}
    if t is not None:
        flags["threshold"] = insp.threshold_flags(scores, t)
    return Side(ev, scores, flags, t, insp.curves(defective, scores))


def view(data: SweepData) -> View | None:
    """Both models' decisions; None when the data has no good class."""
    good_class = data.baseline.dataset.get("good_class")
    if not good_class or good_class not in data.classes:
        return None
    good = data.classes.index(good_class)
    d = insp.defective(data.baseline.y_true, good)
    return View(good_class, d, _side(data.baseline, good, d), _side(data.best, good, d))


def paired_rates(defective: np.ndarray, decisions: dict[str, np.ndarray], pairs: list[tuple[str, str]],
                 samples: int, seed: int, level: float) -> dict[str, Interval]:
    """Percentile intervals of escape and false-reject rates over paired resamples of the test parts.

    ``decisions`` maps a name to (N,) bool flags; the result has ``<name>/escape_rate``,
    ``<name>/false_reject_rate`` and, per ``(a, b)`` in ``pairs``, ``<b>-<a>/<rate>`` (b minus a).
    Every decision is scored on the same resamples; a resample without defective (good) parts has no
    escape (false-reject) rate and is left out of that interval."""
    d = np.asarray(defective, dtype=bool)
    names = list(decisions)
    hits = np.stack([c for n in names for c in (d & ~decisions[n], ~d & decisions[n])], axis=1).astype(np.float64)
    totals = np.stack([c for _ in names for c in (d, ~d)], axis=1).astype(np.float64)
    r = np.concatenate([_rates(w, hits, totals, empty=np.nan) for w in resamples(len(d), samples, seed)])
    col = {f"{name}/{rate}": r[:, 2 * i + j] for i, name in enumerate(names) for j, rate in enumerate(RATES)}
    diffs = {f"{b}-{a}/{rate}": col[f"{b}/{rate}"] - col[f"{a}/{rate}"] for a, b in pairs for rate in RATES}
    return {k: _interval(v, level) for k, v in {**col, **diffs}.items() if np.isfinite(v).any()}


def _decisions(v: View) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    decisions, pairs = {}, []
    for kind in ("argmax", "threshold"):
        if kind in v.base.flags:
            decisions[f"baseline/{kind}"] = v.base.flags[kind]
        if kind in v.best.flags:
            decisions[f"optimal/{kind}"] = v.best.flags[kind]
        if kind in v.base.flags and kind in v.best.flags:
            pairs.append((f"baseline/{kind}", f"optimal/{kind}"))
    return decisions, pairs


# ------------------------------------------------------------------------------------ chart
def _point(side: Side, kind: str, defective: np.ndarray) -> tuple[float, float, float] | None:
    """(false-reject rate, detection rate = 1 - escape rate, precision) of one decision."""
    if kind not in side.flags:
        return None
    f = side.flags[kind]
    r = insp.rates(defective, f)
    precision = (f & defective).sum() / f.sum() if f.sum() else math.nan
    return r.false_reject_rate, 1 - r.escape_rate, float(precision)


def curves_chart(data: SweepData, v: View, path: Path) -> Path:
    """ROC (false-reject rate vs detection rate) and precision-recall of both models, operating points marked."""
    import matplotlib.pyplot as plt

    _theme()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(11.5, 5.0))
    sides = [("baseline", v.base, BASE)] + ([] if data.best_role == "baseline" else [(optimal_label(data), v.best, GOOD)])
    for label, side, colour in sides:
        c = side.curves
        if c is None:
            continue
        roc.plot(c.false_reject_rate, c.detection_rate, color=colour, lw=2, label=f"{label}: AUROC {c.auroc:.3f}")
        pr.plot(c.recall, c.precision, color=colour, lw=2, drawstyle="steps-post", label=f"{label}: AP {c.average_precision:.3f}")
        for kind, marker, name in (("argmax", "o", "argmax"), ("threshold", "*", f"threshold {side.threshold or 0:.3g}")):
            p = _point(side, kind, v.defective)
            if p is None:
                continue
            size = 150 if marker == "*" else 60
            roc.scatter([p[0]], [p[1]], marker=marker, s=size, color=colour, edgecolor="black", zorder=5, label=f"{label}: {name}")
            pr.scatter([p[1]], [p[2]], marker=marker, s=size, color=colour, edgecolor="black", zorder=5)
    roc.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.8, ls=":")
    roc.set_xlabel("false-reject rate (good parts flagged)")
    roc.set_ylabel("detection rate = 1 − escape rate")
    roc.set_title("ROC, defect vs good", fontsize=10.5)
    pr.set_xlabel("recall = 1 − escape rate")
    pr.set_ylabel("precision (flagged parts that are defective)")
    pr.set_title("Precision-recall, defect vs good", fontsize=10.5)
    for ax in (roc, pr):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7.5, loc="lower right" if ax is roc else "lower left", frameon=True)
    fig.suptitle(f"Defect score 1 − P({v.good_class}) on {len(v.defective)} test parts; ● argmax decision, "
                 f"★ threshold chosen on validation\n{_byline(data)}", fontsize=10.5)
    fig.tight_layout()
    return _save(fig, path)


def charts(data: SweepData, out: Path) -> dict[str, Path]:
    """The section's PNG; none without a good class."""
    v = view(data)
    return {} if v is None else {CHART: curves_chart(data, v, out / f"{CHART}.png")}


# ---------------------------------------------------------------------------------- section
def _ci(i: Interval | None) -> str:
    return "–" if i is None else f"{100 * i.low:.1f} … {100 * i.high:.1f} %"


def _ci_pp(i: Interval | None) -> str:
    return "–" if i is None else f"[{100 * i.low:+.1f}, {100 * i.high:+.1f}] pp"


def section(pg: Page) -> None:
    """7. Inspection: escape and false-reject rates, AUROC / AP, the threshold, both curves."""
    add, w, data = pg.out.append, pg.w, pg.data
    add("<h2>7. Inspection: escapes and false rejects</h2>")
    v = view(data)
    if v is None:
        add('<p class="muted">No good (defect-free) class is known for this data, so there are no escape or false-reject '
            "rates. Name it with <code>data.good_class=&lt;class&gt;</code> (folder data; the demo's is "
            "<code>good</code>) and run the search again.</p>")
        return
    g = escape(v.good_class)
    n_def, n_good = int(v.defective.sum()), int((~v.defective).sum())
    target = data.best.run.params.get("inspection.target_escape_rate")
    share = f"{100 * float(target):g} %" if target else "the target share"
    add(f"<p>A part is <b>defective</b> when its true class is not <code>{g}</code>; its defect score is "
        f"1 − P({g}). <b>Escape rate</b>: share of the {n_def} defective test parts called good (the costly "
        f"error); <b>false-reject rate</b>: share of the {n_good} good test parts flagged defective. At the argmax "
        "decision a part is flagged when its most probable class is a defect; at the threshold, when its defect score "
        "is at least the threshold. Each run chose its threshold on the validation predictions of its first fit "
        f"(before the refit on train + validation) as the highest one that lets at most {escape(share)} of "
        "validation's defective parts escape (<code>inspection.target_escape_rate</code>), and applies it unchanged "
        "on test.</p>")
    if data.best_role == "baseline":
        add('<p class="muted">The sweep delivered the baseline itself, so the optimal column repeats it and every '
            "difference is zero.</p>")
    decisions, pairs = _decisions(v)
    ci = paired_rates(v.defective, decisions, pairs, pg.boot.samples, pg.boot.seed, pg.boot.level)
    pg.inspection = {"good_class": v.good_class, "defective": n_def, "good": n_good,
                     "intervals": {k: i.as_dict() for k, i in ci.items()}}
    b_id, o_id = pg.b_id, pg.o_id
    add(f'<table><tr><th>test split</th><th class="num">baseline</th><th class="num">{pg.boot.level:.0%} CI</th>'
        f'<th class="num">optimal</th><th class="num">{pg.boot.level:.0%} CI</th><th class="num">Δ</th>'
        f'<th class="num">{pg.boot.level:.0%} CI of Δ</th></tr>')
    for kind, suffix, label in (("argmax", "", "at argmax"), ("threshold", keys.AT_THRESHOLD, "at the threshold")):
        if kind == "threshold":
            add(f"<tr><td>defect threshold (chosen on validation)</td>"
                f"{w.metric(b_id, keys.DEFECT_THRESHOLD, lambda x: f'{x:.4g}')}<td></td>"
                f"{w.metric(o_id, keys.DEFECT_THRESHOLD, lambda x: f'{x:.4g}')}<td></td><td></td><td></td></tr>")
        for rate in RATES:
            key = f"test_{rate}{suffix}"
            base, best = pg.base.run.metrics.get(key), pg.best.run.metrics.get(key)
            delta = ci.get(f"optimal/{kind}-baseline/{kind}/{rate}")
            cls = "good" if delta and delta.high < 0 else "bad" if delta and delta.low > 0 else ""
            d = (w.derived(f"delta/{key}", best - base, pp(best - base), "num " + cls)
                 if base is not None and best is not None else '<td class="num muted">n/a</td>')
            add(f"<tr><td>{RATE_LABELS[rate]} {label}</td>{w.metric(b_id, key)}"
                f'<td class="num">{_ci(ci.get(f"baseline/{kind}/{rate}"))}</td>{w.metric(o_id, key)}'
                f'<td class="num">{_ci(ci.get(f"optimal/{kind}/{rate}"))}</td>{d}<td class="num">{_ci_pp(delta)}</td></tr>')
    for key, label in ((keys.DEFECT_AUROC, "AUROC"), (keys.DEFECT_AVERAGE_PRECISION, "average precision")):
        add(f"<tr><td>{label} (defect vs good)</td>{w.metric(b_id, f'test_{key}', lambda x: f'{x:.4f}')}<td></td>"
            f"{w.metric(o_id, f'test_{key}', lambda x: f'{x:.4f}')}<td></td><td></td><td></td></tr>")
    add("</table>")
    _say_target(pg, target)
    if CHART in pg.charts:
        add(img(pg.charts[CHART], "ROC and precision-recall curves, defect vs good",
                 "Left: ROC of the defect score, false-reject rate against detection rate (1 − escape rate); right: "
                 "precision against recall. Circles: the argmax decision; stars: each run's threshold. AUROC and "
                 "average precision: scikit-learn, defective parts as the positive class. Lower rates are better; "
                 "Δ = optimal − baseline, green when its paired-bootstrap interval lies below zero."))


def _say_target(pg: Page, target: str | None) -> None:
    """One sentence when the optimal model's test escape rate at its threshold misses the validation target."""
    esc = pg.best.run.metrics.get(f"test_{keys.ESCAPE_RATE}{keys.AT_THRESHOLD}")
    if target is None or esc is None or esc <= float(target):
        return
    val = pg.ds.get("counts", {}).get("val", {})
    good = pg.ds.get("good_class")
    n_val = sum(n for c, n in val.items() if c != good)
    allowed = math.floor(float(target) * n_val + 1e-9)
    add = pg.out.append
    add(f"<p>On test the optimal model's escape rate at its threshold, {100 * esc:.1f} %, is above the "
        f"{100 * float(target):g} % target met on validation"
        + (f", whose {n_val} defective parts allow {allowed} escape(s): a threshold fitted to so few parts is only as "
           "precise as they are. More defective validation images pin it down better." if n_val else ".") + "</p>")
