"""Image folders -> uint8 arrays, stratified splits, a dataset fingerprint, and the checks on them (tiny classes, copies).

Images are decoded and resized once per process (``load_splits`` memoises on its arguments):
a sweep's candidates and every epoch reuse the same arrays. Which files are read is
`mfexp.intake`'s rule, how each is decoded `mfexp.decode`'s.
"""
from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from mfexp.decode import DEFAULT_MAX_PIXELS, decode
from mfexp.errors import ConfigError, DataError
from mfexp.intake import Skipped, class_folders, hidden, walk

DUPLICATES = ("warn", "refuse")  # data.duplicates: byte-identical files across splits
log = logging.getLogger("mfexp")


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8 (N, H, W, C), C in {1, 3}
    labels: np.ndarray  # int64 (N,)
    classes: tuple[str, ...]
    paths: tuple[str, ...] = ()  # each image's file, relative to the data folder (posix); () when unknown


    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        binc = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, binc)}

    def take(self, idx: np.ndarray) -> "ImageSet":
        paths = tuple(self.paths[i] for i in np.asarray(idx, dtype=np.int64)) if self.paths else ()
        return replace(self, images=self.images[idx], labels=self.labels[idx], paths=paths)


@dataclass(frozen=True)
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    good_class: str | None
    fingerprint: str  # sha256 of relative paths, labels and file bytes (before splitting)
    intake: dict = field(default_factory=dict)  # what was skipped and which files are copies across splits (dataset.json)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


@dataclass
class _Read:
    """The images of one split folder, in file order, with their relative paths and sha256 digests."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)


def _classes(split_dir: Path, base: Path, known: list[str] | None, skipped: Skipped) -> list[Path]:
    """The class folders of a split folder; at least two in train/, none unknown to train/ in test/."""
    folders = class_folders(split_dir, base, skipped)
    found = [p.name for p in folders]
    if known is None and len(found) < 2:
        raise DataError(f"{split_dir}: found {len(found)} class folder(s) {found}; need at least two classes")
    unknown = sorted(set(found) - set(known or found))
    if unknown:
        raise DataError(f"{split_dir}: class folder(s) {unknown} do not exist in train/")
    return folders


def _read(folders: list[Path], base: Path, classes: list[str], image_size: int, channels: int | None,
          max_pixels: int, skipped: Skipped) -> _Read:
    """Decode every file below each class folder; non-images go to ``skipped``, a folder without images is refused."""
    out = _Read()
    for d in folders:
        files, n = walk(d, base, skipped), len(out.labels)
        for f in files:
            rel = f.relative_to(base).as_posix()
            arr = decode(f, image_size, channels, max_pixels)
            if arr is None:
                skipped.not_images.append(rel)
                continue
            out.images.append(arr)
            out.labels.append(classes.index(d.name))
            out.paths.append(rel)
            out.digests.append(hashlib.sha256(f.read_bytes()).digest())
        if len(out.labels) == n:
            raise DataError(f"{d}: class folder holds no images ({len(files)} file(s), none an image Pillow can read)")
    return out


def _stack(images: list[np.ndarray], channels: int, image_size: int) -> np.ndarray:
    """One (N, H, W, C) array; the list is emptied as it goes, so the images are held once, not twice."""
    out = np.empty((len(images), image_size, image_size, channels), dtype=np.uint8)
    for i in range(len(images)):
        out[i], images[i] = images[i], None  # a gray (H, W, 1) image broadcasts to 3 equal channels
    return out


def _stratified(labels: np.ndarray, fraction: float, seed: int, min_out: int = 1,
                min_keep: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): ``fraction`` of each class held out (scikit-learn's stratified split).

    Then each class is topped up to at least ``min_out`` held-out and ``min_keep`` kept images,
    moving images of that class chosen at random (``seed``); the caller has checked that every class
    has ``min_out + min_keep``. A class of one image (only with ``min_out=0``) is kept whole."""
    idx = np.arange(len(labels))
    counts = np.bincount(labels)
    split = counts[labels] >= 2  # scikit-learn stratifies classes of two images or more
    part, n_classes = idx[split], int((counts >= 2).sum())
    out = idx[:0]
    if len(part):  # without classes of one image: exactly the split mfexp always made
        n_out = max(n_classes, int(round(fraction * len(part))))
        if n_out >= len(part) - n_classes + 1:
            raise DataError(f"too few images ({len(labels)}) to hold out {fraction:.0%} per class across {len(counts)} classes")
        out = train_test_split(part, test_size=n_out, stratify=labels[part], random_state=seed)[1]
    held = np.zeros(len(labels), dtype=bool)
    held[out] = True
    rng = np.random.default_rng(seed)
    n_held = np.bincount(labels[held], minlength=len(counts))
    for c in np.flatnonzero(counts):
        if counts[c] < min_out + min_keep:
            raise DataError(f"class {c} has {counts[c]} image(s): too few to keep {min_keep} and hold out {min_out}")
        if n_held[c] < min_out:  # move to the held-out part
            held[rng.choice(np.flatnonzero((labels == c) & ~held), min_out - n_held[c], replace=False)] = True
        elif counts[c] - n_held[c] < min_keep:  # move back to the kept part
            held[rng.choice(np.flatnonzero((labels == c) & held), min_keep - counts[c] + n_held[c], replace=False)] = False
    return np.flatnonzero(~held), np.flatnonzero(held)


def _check_class_sizes(counts: np.ndarray, classes: list[str], split_dir: Path, test_dir: Path | None) -> None:
    """Every class needs an image in each split: at least 3 in train/ without test/, 2 with (and 1 in test/)."""
    need = 2 if test_dir is not None else 3
    for c, n in zip(classes, counts):
        if n < need:
            what = "training and validation (test/ holds the test split)" if need == 2 else \
                "training, validation and test (there is no test/ folder)"
            raise DataError(f"{split_dir / c}: class '{c}' has {n} image(s); it needs at least {need}, one each for {what}")


def _copies(parts: list[tuple[list[str], list[bytes]]]) -> tuple[int, list[str]]:
    """How many files of a later split (validation, test) are byte-identical to one of an earlier split, and one pair."""
    first: dict[bytes, str] = {}
    n, example = 0, []
    for paths, digests in parts:
        here: dict[bytes, str] = {}
        for p, d in zip(paths, digests):
            if d in first:
                n += 1
                example = example or [first[d], p]
            else:
                here.setdefault(d, p)
        for d, p in here.items():
            first.setdefault(d, p)
    return n, example


@functools.lru_cache(maxsize=4)
def load_splits(
    root: str,
    image_size: int,
    channels: int | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    good_class: str | None = None,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    duplicates: str = "warn",
) -> Splits:
    """Read ``root/train/<class>/**`` (and ``root/test/<class>/**`` if present) into stratified splits.

    Logs one warning line for whatever under ``root`` was not read, and one when files of the
    validation or test split are byte-identical to files of an earlier split (``duplicates="refuse"``
    raises DataError instead). Raises DataError / ConfigError for unusable data or settings."""
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise DataError(f"data.root={root}: folder does not exist")
    train_dir = base / "train"
    if not train_dir.is_dir():
        raise DataError(f"data.root={root}: expected class folders under {train_dir}")
    if image_size < 8:
        raise ConfigError(f"data.image_size={image_size}: must be at least 8 pixels")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"data.val_fraction={val_fraction}: must be in (0, 1)")
    if channels not in (None, 1, 3):
        raise ConfigError(f"data.channels={channels}: must be 1 or 3")
    if duplicates not in DUPLICATES:
        raise ConfigError(f"data.duplicates={duplicates}: use {' or '.join(DUPLICATES)}")
    if max_image_pixels < 1:
        raise ConfigError(f"data.max_image_pixels={max_image_pixels}: must be a positive number of pixels")
    test_dir = base / "test" if (base / "test").is_dir() else None
    if test_dir is None and not 0 < test_fraction < 1:
        raise ConfigError(f"data.test_fraction={test_fraction}: must be in (0, 1) when {base} has no test/ folder")
    skipped = Skipped(outside=sorted(p.name + ("/" if p.is_dir() else "") for p in base.iterdir()
                                     if p.name not in ("train", "test") and not hidden(p.name)))
    folders = _classes(train_dir, base, None, skipped)
    classes = [p.name for p in folders]
    if good_class is not None and good_class not in classes:
        raise ConfigError(f"data.good_class={good_class}: not one of the classes {classes}")
    test_folders = _classes(test_dir, base, classes, skipped) if test_dir else []
    tr = _read(folders, base, classes, image_size, channels, max_image_pixels, skipped)
    y = np.array(tr.labels, dtype=np.int64)
    _check_class_sizes(np.bincount(y, minlength=len(classes)), classes, train_dir, test_dir)
    te = _read(test_folders, base, classes, image_size, channels, max_image_pixels, skipped)
    if test_dir is not None:
        missing = [c for i, c in enumerate(classes) if i not in set(te.labels)]
        if missing:
            raise DataError(f"{test_dir}: no test images of class(es) {missing}; every class needs at least one")
    if channels is None:
        channels = 3 if any(a.shape[2] == 3 for a in tr.images + te.images) else 1
    line = skipped.line(str(base), "outside train/<class>/ and test/<class>/")
    if line:
        log.warning("%s", line)

    h = hashlib.sha256(f"{image_size}\0{'L' if channels == 1 else 'RGB'}\0".encode())
    for part in (tr, te):
        for rel, label, digest in zip(part.paths, part.labels, part.digests):
            h.update(f"{rel}\0{label}\0".encode())
            h.update(digest)
    names, digests = tuple(classes), tr.digests
    full = ImageSet(_stack(tr.images, channels, image_size), y, names, tuple(tr.paths))
    if test_dir is not None:
        test = ImageSet(_stack(te.images, channels, image_size), np.array(te.labels, dtype=np.int64), names, tuple(te.paths))
        test_digests = te.digests
    else:
        keep, out = _stratified(y, test_fraction, seed, min_out=1, min_keep=2)
        full, test = full.take(keep), full.take(out)
        digests, test_digests = [tr.digests[i] for i in keep], [tr.digests[i] for i in out]
    keep, val = _stratified(full.labels, val_fraction, seed)
    train, validation = full.take(keep), full.take(val)
    n, pair = _copies([(train.paths, [digests[i] for i in keep]), (validation.paths, [digests[i] for i in val]),
                       (test.paths, test_digests)])
    if n:
        msg = (f"{n} file(s) of the validation or test split are byte-identical to a file of an earlier split "
               f"(e.g. {pair[1]} = {pair[0]}): their scores do not measure generalisation; remove the copies")
        if duplicates == "refuse":
            raise DataError(f"{base}: {msg} (data.duplicates=refuse)")
        log.warning("%s: %s (data.duplicates=refuse stops the run)", base, msg)
    intake = {"skipped": skipped.as_dict(), "copies_across_splits": n, "copy_example": pair}
    return Splits(train, validation, test, good_class, h.hexdigest()[:16], intake)


def subset(train: ImageSet, fraction: float, seed: int) -> ImageSet:
    """A stratified share of the training split: the cheap fidelity used for screening."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"data.subset={fraction}: must be in (0, 1]")
    if fraction == 1:
        return train
    keep, _ = _stratified(train.labels, 1 - fraction, seed, min_out=0, min_keep=1)
    return train.take(keep)
