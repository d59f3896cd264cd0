"""Image folders -> uint8 arrays, stratified splits and a dataset fingerprint.

Images are decoded and resized once per process (``load_splits`` memoises on its arguments):
a sweep's candidates and every epoch reuse the same arrays.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split

from mfexp.errors import ConfigError, DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8 (N, H, W, C), C in {1, 3}
    labels: np.ndarray  # int64 (N,)
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        binc = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, binc)}

    def take(self, idx: np.ndarray) -> "ImageSet":
        return replace(self, images=self.images[idx], labels=self.labels[idx])


@dataclass(frozen=True)
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    good_class: str | None
    fingerprint: str  # sha256 of relative paths, labels and file bytes (before splitting)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _scan(split_dir: Path, classes: list[str] | None) -> tuple[list[str], list[tuple[Path, int]]]:
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = [p.name for p in class_dirs]
    if classes is None:
        classes = found
        if len(classes) < 2:
            raise DataError(f"{split_dir}: found {len(classes)} class folder(s) {found}; need at least two classes")
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"{split_dir}: class folder(s) {unknown} do not exist in train/")
    items: list[tuple[Path, int]] = []
    for d in class_dirs:
        files = _image_files(d)
        if not files:
            raise DataError(f"{d}: class folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        items += [(f, classes.index(d.name)) for f in files]
    return classes, items


def _decode(path: Path, image_size: int, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable or corrupt image ({type(e).__name__}: {e})") from None
    if im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _is_gray(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            return im.mode in ("L", "I", "I;16", "1", "LA")
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: unreadable or corrupt image ({type(e).__name__}: {e})") from None


def _load(items: list[tuple[Path, int]], root: Path, image_size: int, mode: str, h: "hashlib._Hash") -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((len(items), image_size, image_size, 1 if mode == "L" else 3), dtype=np.uint8)
    for i, (path, label) in enumerate(items):
        images[i] = _decode(path, image_size, mode)
        h.update(f"{path.relative_to(root).as_posix()}\0{label}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return images, np.array([lab for _, lab in items], dtype=np.int64)


def _stratified(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): `fraction` of each class held out, at least one per class where possible."""
    idx = np.arange(len(labels))
    n_classes = len(np.unique(labels))
    n_out = max(n_classes, int(round(fraction * len(labels))))
    if n_out >= len(labels) - n_classes + 1:
        raise DataError(f"too few images ({len(labels)}) to hold out {fraction:.0%} per class across {n_classes} classes")
    keep, out = train_test_split(idx, test_size=n_out, stratify=labels, random_state=seed)
    return np.sort(keep), np.sort(out)


@functools.lru_cache(maxsize=4)
def load_splits(
    root: str,
    image_size: int,
    channels: int | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    good_class: str | None = None,
) -> Splits:
    """Read ``root/train/<class>/*`` (and ``root/test/<class>/*`` if present) into stratified splits."""
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
    classes, train_items = _scan(train_dir, None)
    test_dir = base / "test"
    test_items = _scan(test_dir, classes)[1] if test_dir.is_dir() else []
    if good_class is not None and good_class not in classes:
        raise ConfigError(f"data.good_class={good_class}: not one of the classes {classes}")
    if channels is None:
        channels = 1 if all(_is_gray(p) for p, _ in train_items + test_items) else 3
    if channels not in (1, 3):
        raise ConfigError(f"data.channels={channels}: must be 1 or 3")
    mode = "L" if channels == 1 else "RGB"

    h = hashlib.sha256(f"{image_size}\0{mode}\0".encode())
    x, y = _load(train_items, base, image_size, mode, h)
    names = tuple(classes)
    if test_items:
        xt, yt = _load(test_items, base, image_size, mode, h)
        full, test = ImageSet(x, y, names), ImageSet(xt, yt, names)
    else:
        if not 0 < test_fraction < 1:
            raise ConfigError(f"data.test_fraction={test_fraction}: must be in (0, 1) when {base} has no test/ folder")
        keep, out = _stratified(y, test_fraction, seed)
        full, test = ImageSet(x[keep], y[keep], names), ImageSet(x[out], y[out], names)
    keep, val = _stratified(full.labels, val_fraction, seed)
    return Splits(full.take(keep), full.take(val), test, good_class, h.hexdigest()[:16])


def subset(train: ImageSet, fraction: float, seed: int) -> ImageSet:
    """A stratified share of the training split: the cheap fidelity used for screening."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"data.subset={fraction}: must be in (0, 1]")
    if fraction == 1:
        return train
    keep, _ = _stratified(train.labels, 1 - fraction, seed)
    return train.take(keep)
