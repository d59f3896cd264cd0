"""Report section 8: the optimal model's test mistakes (is each new?) and the baseline's mistakes it fixed, as pictures.

Each tested run logged ``mistakes.npz`` (`mfexp.gallery`: its worst mistakes, thumbnails and test rows);
the report reads both runs' files back from MLflow and each run's ``test_predictions.csv`` (already in
`SweepData`) to say, per picture, what the other model answered. Counts come from the predictions, so
they cover every mistake, not just the pictured ones.
"""
from __future__ import annotations

import tempfile
from html import escape
from pathlib import Path

import numpy as np

from mfexp import gallery, keys
from mfexp.inspection import good_index
from mfexp.report.charts import _save
from mfexp.report.page import Page, img
from mfexp.report.sweep_data import Evaluated, SweepData


OPTIMAL, FIXED = "mistakes_optimal", "mistakes_fixed"


def _load(data: SweepData, ev: Evaluated, folder: Path) -> tuple[gallery.Mistakes, np.ndarray] | None:
    """The run's logged mistakes, or None when it logged none (a run made before the gallery existed)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from mfexp.report.build import _no_progress_bars

    try:
        with _no_progress_bars():
            path = mlflow.artifacts.download_artifacts(run_id=ev.run.run_id, artifact_path=keys.MISTAKES_NPZ,
                                                       dst_path=str(folder / ev.run.run_id), tracking_uri=data.tracking_uri)
    except (MlflowException, OSError):
        return None
    return gallery.load(Path(path))


def _good(data: SweepData) -> tuple[str | None, int | None]:
    g = data.baseline.dataset.get("good_class") or None
    return (g, good_index(data.classes, g)) if g in data.classes else (None, None)


def optimal_figure(data: SweepData, m: gallery.Mistakes, thumbs: np.ndarray):
    """The optimal model's pictured mistakes, each marked with the baseline's answer on the same image."""
    good_class, _ = _good(data)
    same = data.best_role == "baseline"
    base_pred = data.baseline.y_pred
    captions = []
    for i, t, p, c in zip(m.index, m.y_true, m.y_pred, m.confidence):
        note = "" if same else ("\nNEW: baseline right" if base_pred[i] == t else "\nbaseline wrong too")
        captions.append(gallery.caption(data.classes, t, p, c) + note)
    shown = f"all {m.total}" if len(m) == m.total else f"the worst {len(m)} of {m.total}"
    head = (f"Optimal model ({data.best.run.policy}): {shown} test mistakes, true → predicted, confidence"
            f"{'' if same else '; NEW = the baseline got it right'}\n{gallery.legend(good_class)}")
    return gallery.figure(thumbs, captions, [gallery.COLOURS[k] for k in m.kind], head,
                          empty="the optimal model predicts every test image right")


def fixed_figure(data: SweepData, m: gallery.Mistakes, thumbs: np.ndarray):
    """The baseline's pictured mistakes that the optimal model gets right."""
    good_class, _ = _good(data)
    keep = np.flatnonzero(data.best.y_pred[m.index] == m.y_true) if data.best_role != "baseline" else np.array([], int)
    captions = [gallery.caption(data.classes, t, p, c) + f"\nnow: {data.classes[t]}"
                for t, p, c in zip(m.y_true[keep], m.y_pred[keep], m.confidence[keep])]
    total = int(((data.baseline.y_pred != data.baseline.y_true) & (data.best.y_pred == data.best.y_true)).sum())
    head = (f"Baseline mistakes that the optimal model fixed: {len(keep)} pictured of {total} "
            f"(from the baseline's worst {len(m)} of {m.total} mistakes)\nbaseline's answer, true → predicted, confidence; "
            f"{gallery.legend(good_class)}")
    empty = ("the optimal model is the baseline itself: nothing to fix" if data.best_role == "baseline"
             else "the optimal model fixes none of the baseline's mistakes")
    return gallery.figure(thumbs[keep], captions, [gallery.COLOURS[k] for k in m.kind[keep]], head, empty=empty)


def charts(data: SweepData, out: Path) -> dict[str, Path]:
    """Both pictures, from the runs' ``mistakes.npz``; a run that logged none gets no picture."""
    pngs: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="mfexp-gallery-") as tmp:
        best = _load(data, data.best, Path(tmp))
        base = best if data.best_role == "baseline" else _load(data, data.baseline, Path(tmp))
    if best is not None:
        pngs[OPTIMAL] = _save(optimal_figure(data, *best), out / f"{OPTIMAL}.png")
    if base is not None:
        pngs[FIXED] = _save(fixed_figure(data, *base), out / f"{FIXED}.png")
    return pngs


def section(pg: Page) -> None:
    """8. Mistakes: counts from the predictions, then the two pictures."""
    add, data = pg.out.append, pg.data
    y, base, best = data.baseline.y_true, data.baseline.y_pred, data.best.y_pred
    b_wrong, o_wrong = base != y, best != y
    new, fixed = int((o_wrong & ~b_wrong).sum()), int((b_wrong & ~o_wrong).sum())
    add("<h2>8. Mistakes</h2>")
    if data.best_role == "baseline":
        add(f"<p>The optimal model is the baseline: it gets {int(b_wrong.sum())} of {len(y)} test images wrong.</p>")
    else:
        add(f"<p>The optimal model gets {int(o_wrong.sum())} of {len(y)} test images wrong, the baseline "
            f"{int(b_wrong.sum())}: the optimal model fixed {fixed} of the baseline's mistakes and made {new} new "
            f"mistake(s) on images the baseline got right; {int((o_wrong & b_wrong).sum())} are wrong for both.</p>")
    pg.gallery = {"optimal_wrong": int(o_wrong.sum()), "baseline_wrong": int(b_wrong.sum()), "fixed": fixed, "new": new}
    captions = {OPTIMAL: "The optimal model's mistakes, worst first: escapes, then false rejects, then a defect given "
                         "the wrong defect class; within each, the most confident first. <b>NEW</b> marks an image "
                         "the baseline got right. Each run pictures at most <code>inspection.gallery_size</code> "
                         "mistakes (its <code>mistakes.npz</code>).",
                FIXED: "The baseline's mistakes that the optimal model gets right, from the mistakes the baseline "
                       "run pictured (its worst, up to <code>inspection.gallery_size</code>)."}
    for name, alt in ((OPTIMAL, "the optimal model's test mistakes"), (FIXED, "baseline mistakes fixed by the optimal model")):
        if name in pg.charts:
            add(img(pg.charts[name], alt, captions[name]))
        else:
            add(f'<p class="muted">No picture of {escape(alt)}: the run logged no <code>{keys.MISTAKES_NPZ}</code> '
                "(made before the gallery existed, or with <code>inspection.gallery_size=0</code>).</p>")
