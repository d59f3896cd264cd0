"""The report's charts: one PNG each, seaborn on matplotlib's Agg backend.

Every value drawn comes from `SweepData` (MLflow metrics and artifacts) or the bootstrap.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from mfexp import keys
from mfexp.metrics import confusion_figure
from mfexp.report.stats import Bootstrap
from mfexp.report.sweep_data import ROLE_LABELS, SweepData

BASE = "#8d99a6"  # baseline: neutral grey-blue
GOOD = "#2e9e4f"  # optimal / improvement: green
BAD = "#d1495b"  # rejected policies / regressions: red
FLAT = "#b8b8b8"
DPI = 130

FILES = {
    "class_distribution": "class_distribution.png",
    "parallel_coordinates": "parallel_coordinates.png",
    "density_scores": "density_scores.png",
    "val_loss_waterfall": "val_loss_waterfall.png",
    "recall": "recall.png",
    "precision": "precision.png",
    "error_rate": "error_rate.png",
    "confusion_matrices": "confusion_matrices.png",
}


def _theme() -> None:
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _byline(data: SweepData) -> str:
    return f"Policy: {data.best.run.policy or '?'}    Policy engine: {data.engine_version}"


def optimal_label(data: SweepData) -> str:
    return "optimal (= baseline)" if data.best_role == "baseline" else f"optimal ({ROLE_LABELS[data.best_role]})"


def axis_label(axis: str) -> str:
    technique, _, kind = axis.rpartition(".")
    return f"{technique or axis} ({kind})" if kind in ("m", "rr", "r") else axis


def _pct(ax, axis: str = "y") -> None:
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0, decimals=None))  # None: as many decimals as the range needs


# ------------------------------------------------------------------------------ dataset
def class_distribution(data: SweepData, path: Path) -> Path:
    _theme()
    ds = data.baseline.dataset
    counts = ds.get("counts") or {"test": {c: int((data.baseline.y_true == i).sum()) for i, c in enumerate(data.classes)}}
    good = ds.get("good_class")
    rows = [{"class": c + ("\n(defect-free)" if c == good else ""), "split": split, "images": int(n)}
            for split, per in counts.items() for c, n in per.items()]
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(data.classes) + 2), 4.2))
    sns.barplot(df, x="class", y="images", hue="split", palette="Blues_d", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fontsize=8, padding=2)
    total = {s: sum(per.values()) for s, per in counts.items()}
    ax.set_title("Class distribution (" + ", ".join(f"{s} {n}" for s, n in total.items()) + " images)")
    ax.set_xlabel("")
    ax.set_ylabel("images")
    ax.margins(y=0.12)
    ax.legend(title="split", frameon=False)
    return _save(fig, path)


# ---------------------------------------------------------------------- parallel coordinates
def parallel_coordinates(data: SweepData, path: Path) -> Path:
    """Every distinct policy the sweep trained (`SweepData.policies`), one line each: the delivered one green."""
    _theme()
    axes, lines = data.axes, data.policies
    fig, ax = plt.subplots(figsize=(max(7.5, 0.85 * len(axes) + 2.5), 5.0))
    if not axes:
        ax.text(0.5, 0.5, f"{len(lines)} polic{'y' if len(lines) == 1 else 'ies'} trained, none with an augmentation "
                "setting:\nthere is no axis to draw.", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    tops = [max([1.0, *(line.values[i] for line in lines)]) for i in range(len(axes))]
    x = np.arange(len(axes))
    for xi, top in zip(x, tops):
        ax.axvline(xi, color="#444444", lw=0.8, zorder=1)
        ax.text(xi, -0.04, "0", ha="center", va="top", fontsize=7, color="#555555")
        ax.text(xi, 1.03, f"{top:g}", ha="center", va="bottom", fontsize=7, color="#555555")
    for line in sorted(lines, key=lambda line: line.delivered):  # the delivered one on top
        y = np.array(line.values) / np.array(tops)
        style = {"ls": "--"} if line.mode == "trivial" else {}
        if line.delivered:
            ax.plot(x, y, color=GOOD, lw=3.2, marker="o", ms=6, zorder=3, **style)
            for xi, yi, v in zip(x, y, line.values):
                if v:
                    ax.annotate(f"{v:g}", (xi, yi), xytext=(6, 4), textcoords="offset points", fontsize=8, color=GOOD,
                                fontweight="bold", zorder=4)
        else:
            ax.plot(x, y, color=BAD, alpha=0.55, lw=1.3, marker="o", ms=3, zorder=2, **style)
    ends: dict[float, list] = {}  # lines ending at the same height share one label
    for line, top in ((line, tops[-1]) for line in lines):
        ends.setdefault(round(line.values[-1] / top, 3), []).append(line)
    for y_end, group in ends.items():
        ax.annotate(", ".join(line.label for line in group), (x[-1], y_end), xytext=(8, 0), textcoords="offset points",
                    fontsize=7, va="center", color=GOOD if any(line.delivered for line in group) else "#7b2030")
    ax.set_xticks(x, [axis_label(a) for a in axes], rotation=40, ha="right")
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    ax.set_xlim(-0.4, len(axes) - 0.6 + 0.12 * len(axes) + 0.6)
    ax.grid(False)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    from matplotlib.lines import Line2D

    delivered = next((line for line in lines if line.delivered), None)
    handles = [Line2D([], [], color=GOOD, lw=3.2, label=f"delivered: {delivered.name if delivered else '?'}"),
               Line2D([], [], color=BAD, lw=1.3, alpha=0.7, label=f"trained, not delivered ({len(lines) - 1})")]
    if any(line.mode == "trivial" for line in lines):
        handles.append(Line2D([], [], color="#555555", lw=1.3, ls="--", label="trivial mode: m is the cap"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.32 if len(axes) > 6 else -0.25),
              ncol=len(handles), frameon=False)
    full = sum(line.fidelity == "full budget" for line in lines)
    ax.set_title(f"Policies trained ({len(lines)} distinct, {full} at full budget)\n"
                 f"Policy: {data.best.run.policy or '?'}    Policy engine: {data.engine_version}", fontsize=10.5)
    return _save(fig, path)


# ------------------------------------------------------------------------------- density scores
def density_scores(data: SweepData, path: Path) -> Path:
    """Density matching's probe scores: technique x magnitude, the share of learned knowledge retained."""
    _theme()
    probes = (data.density or {}).get("probes") or []
    df = pd.DataFrame(probes)
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * max(1, df["technique"].nunique() if len(df) else 1) + 2.2))
    if df.empty:
        ax.text(0.5, 0.5, "No density scores: the baseline run has no density.json.", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    order = list(dict.fromkeys(df["technique"]))
    grid = df.pivot_table(index="technique", columns="m", values="retained").reindex(order)
    keep = data.density_keep if data.density_keep is not None else 0.8
    sns.heatmap(grid, annot=grid.map(lambda v: "" if pd.isna(v) else f"{v:.0%}"), fmt="", cmap="RdYlGn", vmin=0,
                vmax=1, center=keep, cbar_kws={"label": "share of learned knowledge retained"}, ax=ax,
                linewidths=0.5, linecolor="white", annot_kws={"fontsize": 8})
    kept = set(data.kept)
    for i, t in enumerate(grid.index):
        row = grid.loc[t]
        admitted = [m for m, v in row.items() if pd.notna(v) and v >= keep]
        if admitted:  # the magnitude density matching admits: the strongest retaining >= keep
            j = list(grid.columns).index(max(admitted))
            ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, ec="#111111", lw=2.2 if t in kept else 1.2,
                                       ls="-" if t in kept else ":"))
    clean, prior = (data.density or {}).get("clean_loss"), (data.density or {}).get("prior_loss")
    ax.set_xlabel(f"magnitude m        (clean val loss {clean:.3f}, class prior {prior:.3f}; blank: not probed)", fontsize=9)
    ax.set_ylabel("")
    ax.set_facecolor("#f3f4f6")
    ax.grid(False)
    ax.set_xticklabels([f"{float(c.get_text()):g}" for c in ax.get_xticklabels()])
    ax.set_title(f"What the baseline's model still reads in augmented validation images\n"
                 f"boxed: the strongest magnitude retaining >= {keep:.0%} (solid: a kept technique)", fontsize=9.5)
    return _save(fig, path)


# ------------------------------------------------------------------------------- waterfall
def val_loss_waterfall(data: SweepData, path: Path) -> Path:
    _theme()
    fig, ax = plt.subplots(figsize=(max(6.5, 1.25 * (len(data.steps) + 2) + 2), 4.6))
    start = data.screen_start
    if start is None:
        ax.text(0.5, 0.5, "No per-technique record in this sweep (no screening baseline, no nested candidate).",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    first = start.metrics[keys.BEST_VAL_LOSS]
    last = data.steps[-1].after if data.steps else first
    ends = (["baseline\n(no policy)", "all nested\ntechniques"] if data.step_fidelity == "full budget" else
            ["screening\nbaseline", "optimal\n(screening)"])
    labels = [ends[0]] + [f"+ {s.technique}" for s in data.steps] + [ends[1]]
    values = [first, *[s.after for s in data.steps], last]
    noise = data.sweep_metric(keys.SEARCH_NOISE)
    band = [first - noise, first + noise] if noise else []
    lo_v, hi_v = min(values + band), max(values + band)
    span = hi_v - lo_v
    bottom = max(0.0, lo_v - 0.6 * span) if span > 0 else 0.0
    top = hi_v + 0.3 * span if span > 0 else max(values) * 1.1
    visible = (top - bottom) * 0.012  # a zero or tiny step still shows as a sliver
    if noise:
        ax.axhspan(first - noise, first + noise, color="#9aa5b1", alpha=0.18, lw=0,
                   label=f"seed noise ±{noise:.4f} around the screening baseline")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False, fontsize=8)
    ax.bar(0, first - bottom, bottom=bottom, color=BASE, width=0.6)
    ax.text(0, first, f"{first:.4f}", ha="center", va="bottom", fontsize=9)
    for i, s in enumerate(data.steps, start=1):
        lo, hi = sorted((s.before, s.after))
        colour = GOOD if s.gain > 0 else BAD if s.gain < 0 else FLAT
        ax.bar(i, max(hi - lo, visible), bottom=lo, color=colour, width=0.6)
        ax.text(i, hi, f"{-s.gain:+.4f}", ha="center", va="bottom", fontsize=9)
        ax.plot([i - 1 - 0.3, i + 0.3], [s.before, s.before], color="#666666", lw=0.8, ls=":")
    n = len(data.steps) + 1
    ax.plot([n - 1 - 0.3, n + 0.3], [last, last], color="#666666", lw=0.8, ls=":")
    ax.bar(n, last - bottom, bottom=bottom, color=GOOD if last < first else BASE, width=0.6)
    ax.text(n, last, f"{last:.4f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(bottom, top)
    ax.set_ylabel("best validation loss" + (f"  (axis from {bottom:.3f})" if bottom > 0 else ""))
    if data.step_fidelity == "full budget":
        sub = "at full budget: each bar adds one technique of density matching's ranking (the nested candidates)"
    else:
        sub = (f"at screening fidelity {start.fidelity or 'screening'} (the search's data subset and epochs), "
               "not at full budget")
    if not data.steps:
        sub += "; no technique was kept"
    ax.set_title(f"Validation-loss improvement per technique\n{sub}", fontsize=10.5)
    return _save(fig, path)


# ----------------------------------------------------------------------------- per class
def per_class(data: SweepData, boot: Bootstrap, metric: str, path: Path) -> Path:
    """``metric`` is "recall" or "precision": bars baseline vs optimal, then deltas with intervals."""
    _theme()
    classes = data.classes
    base = [data.baseline.metric(data.class_key(metric, c)) for c in classes]
    best = [data.best.metric(data.class_key(metric, c)) for c in classes]
    ci = boot.recall_delta if metric == "recall" else boot.precision_delta
    delta = np.array(best) - np.array(base)
    width = max(7.0, 1.2 * len(classes) + 2)
    fig, (top, bot) = plt.subplots(2, 1, figsize=(width, 6.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    df = pd.DataFrame({"class": classes * 2, "value": base + best,
                       "model": ["baseline"] * len(classes) + [optimal_label(data)] * len(classes)})
    sns.barplot(df, x="class", y="value", hue="model", palette=[BASE, GOOD], ax=top)
    for container in top.containers:
        top.bar_label(container, labels=[f"{v:.0%}" for v in container.datavalues], fontsize=8, padding=2)
    top.set_ylim(0, 1.15)
    _pct(top)
    top.set_ylabel(metric)
    top.set_xlabel("")
    top.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8.5)
    title = "Recall per class (TP / (TP + FN))" if metric == "recall" else "Precision per class (TP / (TP + FP))"
    top.set_title(f"{title}\n{_byline(data)}", fontsize=10.5)

    low = np.array([ci[c].low for c in classes])
    high = np.array([ci[c].high for c in classes])
    colours = [GOOD if ci[c].low > 0 else BAD if ci[c].high < 0 else (FLAT if d == 0 else ("#9ccfa9" if d > 0 else "#e8a3ac"))
               for c, d in zip(classes, delta)]
    xs = np.arange(len(classes))
    bot.bar(xs, delta, color=colours, width=0.55)
    bot.errorbar(xs, delta, yerr=[delta - low, high - delta], fmt="none", ecolor="#333333", capsize=4, lw=1)
    bot.axhline(0, color="#333333", lw=0.8)
    lim = max(0.05, np.abs(np.concatenate([low, high, delta])).max() * 1.3)
    for xi, d, h in zip(xs, delta, high):
        bot.text(xi, max(h, d, 0.0) + lim * 0.04, f"{100 * d:+.1f} pp", va="bottom", ha="center", fontsize=8,
                 bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    bot.set_ylim(-lim, lim)
    _pct(bot)
    bot.set_ylabel(f"Δ {metric} (optimal − baseline)")
    bot.set_xticks(xs, classes)
    bot.set_xlabel(f"bars: difference; whiskers: paired-bootstrap {boot.level:.0%} interval ({boot.samples} resamples "
                   f"of {boot.n} test images); dark = interval excludes 0", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------ error rate
def error_rate(data: SweepData, boot: Bootstrap, path: Path) -> Path:
    _theme()
    e0, e1 = data.baseline.metric(keys.TEST_ERROR_RATE), data.best.metric(keys.TEST_ERROR_RATE)
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    xs = [0, 1]
    ax.bar(xs, [e0, e1], color=[BASE, GOOD], width=0.55)
    cis = [boot.error_baseline, boot.error_best]
    ax.errorbar(xs, [e0, e1], yerr=[[e0 - cis[0].low, e1 - cis[1].low], [cis[0].high - e0, cis[1].high - e1]],
                fmt="none", ecolor="#333333", capsize=5, lw=1)
    for x, e in zip(xs, [e0, e1]):
        ax.text(x + 0.3, e, f"{e:.1%}", va="center", ha="left", fontsize=10, fontweight="bold")
    ax.set_xticks(xs, ["baseline", optimal_label(data)])
    _pct(ax)
    ax.set_ylim(0, max(e0, e1, cis[0].high, cis[1].high, 0.01) * 1.3)
    ax.set_ylabel("test error rate (1 − accuracy)")
    rel = (e0 - e1) / e0 if e0 > 0 else float("nan")
    rr = boot.relative_reduction
    lines = [f"relative reduction: {rel:.1%}" if np.isfinite(rel) else "relative reduction: n/a (baseline error 0)"]
    if rr is not None:
        lines.append(f"{boot.level:.0%} interval: {rr.low:.1%} … {rr.high:.1%}")
    er = boot.error_reduction
    lines.append(f"absolute: {100 * (e0 - e1):+.1f} pp  [{100 * er.low:+.1f}, {100 * er.high:+.1f}]")
    ax.text(0.98, 0.97, "\n".join(lines), transform=ax.transAxes, ha="right", va="top", fontsize=9,
            bbox={"boxstyle": "round", "fc": "white", "ec": "#cccccc"})
    ax.set_title(f"Error rate reduction\n{_byline(data)}", fontsize=10.5)
    ax.set_xlabel(f"whiskers: paired-bootstrap {boot.level:.0%} intervals over {boot.n} test images", fontsize=8)
    return _save(fig, path)


# ------------------------------------------------------------------------- confusion matrices
def confusion_matrices(data: SweepData, path: Path) -> Path:
    _theme()
    k = len(data.classes)
    side = 1.6 + 0.6 * k
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 2, side + 0.6))
    base, best = data.baseline, data.best
    confusion_figure(base.y_true, base.y_pred, data.classes, title=f"baseline: {base.run.policy}", ax=axes[0])
    confusion_figure(best.y_true, best.y_pred, data.classes, title=f"{optimal_label(data)}: {best.run.policy}", ax=axes[1])
    for ax in axes:
        ax.title.set_fontsize(9.5)
        ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    return _save(fig, path)


def all_charts(data: SweepData, boot: Bootstrap, out: Path) -> dict[str, Path]:
    from mfexp.report import gallery, inspection  # sections 7-8 (they import this module)

    out.mkdir(parents=True, exist_ok=True)
    return {
        "class_distribution": class_distribution(data, out / FILES["class_distribution"]),
        "parallel_coordinates": parallel_coordinates(data, out / FILES["parallel_coordinates"]),
        "val_loss_waterfall": val_loss_waterfall(data, out / FILES["val_loss_waterfall"]),
        **({"density_scores": density_scores(data, out / FILES["density_scores"])} if data.density else {}),
        "recall": per_class(data, boot, "recall", out / FILES["recall"]),
        "precision": per_class(data, boot, "precision", out / FILES["precision"]),
        "error_rate": error_rate(data, boot, out / FILES["error_rate"]),
        "confusion_matrices": confusion_matrices(data, out / FILES["confusion_matrices"]),
        **inspection.charts(data, out), **gallery.charts(data, out),
    }
