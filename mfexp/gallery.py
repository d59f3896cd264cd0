"""The gallery of mistakes: the test images a model gets wrong, worst first, as a picture and as data (matplotlib).

Every tested run logs ``mistakes.png`` (the picture) and ``mistakes.npz`` (the same mistakes as data, so
the report can redraw and compare them from MLflow alone). A mistake is a test image whose argmax class
(the ``y_pred`` of ``test_predictions.csv``) is not its true class. Worst first: with a good class,
escapes (a defective part called good) before false rejects (a good part called defective) before a
defect given the wrong defect class (still rejected); within each kind, the most confident wrong answer
first (confidence = the predicted class's probability). At most ``inspection.gallery_size`` mistakes are
kept; the picture's title says how many there were.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mfexp import keys

THUMB = 96  # thumbnails are at most this many pixels a side (the npz stays small at any image size)
COLS = 8
ESCAPE, FALSE_REJECT, WRONG_DEFECT, WRONG_CLASS = "escape", "false reject", "wrong defect class", "wrong class"
RANK = {ESCAPE: 0, FALSE_REJECT: 1, WRONG_DEFECT: 2, WRONG_CLASS: 2}
COLOURS = {ESCAPE: "#d1495b", FALSE_REJECT: "#e08a1e", WRONG_DEFECT: "#5b6b7d", WRONG_CLASS: "#5b6b7d"}


@dataclass(frozen=True)
class Mistakes:
    """The mistakes kept, worst first: (M,) arrays; ``total`` counts every mistake before the cap."""

    index: np.ndarray  # rows of the test split (= rows of test_predictions.csv)
    y_true: np.ndarray
    y_pred: np.ndarray
    confidence: np.ndarray  # probability of the (wrong) predicted class
    kind: np.ndarray  # ESCAPE | FALSE_REJECT | WRONG_DEFECT (with a good class) | WRONG_CLASS (without)
    total: int

    def __len__(self) -> int:
        return len(self.index)


def kinds(y_true: np.ndarray, y_pred: np.ndarray, good: int | None) -> np.ndarray:
    """(N,) kind of each (wrong) prediction: escape, false reject, wrong defect class; wrong class without a good class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if good is None:
        return np.full(len(y_true), WRONG_CLASS)
    return np.where(y_pred == good, ESCAPE, np.where(y_true == good, FALSE_REJECT, WRONG_DEFECT))


def find_mistakes(y_true: np.ndarray, prob: np.ndarray, good: int | None, limit: int) -> Mistakes:
    """The test images predicted wrong (argmax), worst first (see the module docstring), at most ``limit``."""
    y_true, prob = np.asarray(y_true, dtype=np.int64), np.asarray(prob, dtype=np.float64)
    y_pred = prob.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    kind = kinds(y_true[wrong], y_pred[wrong], good)
    confidence = prob[wrong, y_pred[wrong]]
    rank = np.array([RANK[k] for k in kind], dtype=np.int64)
    order = np.lexsort((wrong, -confidence, rank))[:max(limit, 0)]  # last key first: kind, confidence, row
    keep = wrong[order]
    return Mistakes(keep, y_true[keep], y_pred[keep], confidence[order], kind[order], len(wrong))


def thumbnails(images: np.ndarray, size: int = THUMB) -> np.ndarray:
    """uint8 (N, h, w, C) copies of (N, H, W, C) images, downsized (PIL, bilinear) when larger than ``size``."""
    from PIL import Image

    images = np.asarray(images, dtype=np.uint8)
    if images.shape[1] <= size and images.shape[2] <= size:
        return images.copy()
    out = []
    for im in images:
        pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im)
        pil.thumbnail((size, size), Image.BILINEAR)
        arr = np.asarray(pil, dtype=np.uint8)
        out.append(arr[..., None] if arr.ndim == 2 else arr)
    return np.stack(out) if out else np.zeros((0, size, size, images.shape[-1]), np.uint8)


def figure(images: np.ndarray, captions: Sequence[str], colours: Sequence[str], title: str, empty: str = ""):
    """A grid of (N, h, w, C) uint8 images, each framed in its colour with its caption; ``empty`` when N is 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    if n == 0:
        fig, ax = plt.subplots(figsize=(9.0, 1.8))
        ax.text(0.5, 0.5, empty or "no mistake", ha="center", va="center", fontsize=10)
        ax.set_axis_off()
        ax.set_title(title, fontsize=10)
        return fig
    cols = min(COLS, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(9.0, 1.45 * cols + 0.3), 1.75 * rows + 0.9), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, im, caption, colour in zip(axes.flat, images, captions, colours):
        ax.set_axis_on()
        if im.shape[-1] == 1:
            ax.imshow(im[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(im)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)
        ax.set_title(caption, fontsize=7, color=colour, pad=3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def caption(classes: Sequence[str], y_true: int, y_pred: int, confidence: float) -> str:
    """``crack → good`` and the predicted class's probability."""
    return f"{classes[y_true]} → {classes[y_pred]}\n{confidence:.0%}"


def legend(good_class: str | None) -> str:
    if good_class is None:
        return "most confident first (no good class: every mistake is a wrong class)"
    return (f"red: escape (defective called '{good_class}'), orange: false reject ('{good_class}' flagged), "
            "grey: wrong defect class (still rejected); most confident first")


def run_figure(m: Mistakes, thumbs: np.ndarray, classes: Sequence[str], good_class: str | None, title: str):
    """The run's own picture: its mistakes, worst first, with the count and the cap in the title."""
    shown = f"all {m.total}" if len(m) == m.total else f"the worst {len(m)} of {m.total} (inspection.gallery_size)"
    head = f"{title}: {shown} test mistakes, true → predicted, confidence\n{legend(good_class)}"
    return figure(thumbs, [caption(classes, t, p, c) for t, p, c in zip(m.y_true, m.y_pred, m.confidence)],
                  [COLOURS[k] for k in m.kind], head, empty="no test image is predicted wrong")


def save(path: Path, m: Mistakes, thumbs: np.ndarray, classes: Sequence[str], good_class: str | None) -> None:
    np.savez_compressed(path, index=m.index, images=thumbs, y_true=m.y_true, y_pred=m.y_pred, confidence=m.confidence,
                        kind=m.kind.astype(str), total=np.int64(m.total), classes=np.array(list(classes), dtype=str),
                        good_class=np.array(good_class or "", dtype=str))


def load(path: Path) -> tuple[Mistakes, np.ndarray]:
    """What `save` wrote: the mistakes and their thumbnails (no pickled objects)."""
    with np.load(path, allow_pickle=False) as z:
        m = Mistakes(z["index"], z["y_true"], z["y_pred"], z["confidence"], z["kind"], int(z["total"]))
        return m, z["images"]


def log_gallery(images: np.ndarray, y_true: np.ndarray, prob: np.ndarray, classes: Sequence[str],
                good_class: str | None, limit: int, title: str) -> Mistakes:
    """Log ``mistakes.png`` and ``mistakes.npz`` of these test images to the active MLflow run."""
    import matplotlib.pyplot as plt
    import mlflow

    from mfexp.inspection import good_index

    m = find_mistakes(y_true, prob, good_index(classes, good_class), limit)
    thumbs = thumbnails(np.asarray(images)[m.index])
    fig = run_figure(m, thumbs, classes, good_class, title)
    mlflow.log_figure(fig, keys.MISTAKES_PNG)
    plt.close(fig)
    with tempfile.TemporaryDirectory() as tmp:
        save(Path(tmp) / keys.MISTAKES_NPZ, m, thumbs, classes, good_class)
        mlflow.log_artifact(str(Path(tmp) / keys.MISTAKES_NPZ))
    return m
