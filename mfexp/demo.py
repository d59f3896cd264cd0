"""The built-in demo data: procedurally generated surface-inspection images.

Textured metal surfaces (brushed grain at a per-part angle, mill noise, uneven lighting) with
four defect kinds, most parts good, as on a real line. Written once as a class-per-folder PNG
tree under the cache folder, so the demo goes through exactly the same loader as user data.
Deterministic by seed; a generator version in the folder name invalidates old caches.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

GENERATOR_VERSION = 1
DEFAULT_COUNTS = {"good": 480, "scratch": 80, "pit": 80, "crack": 80, "stain": 80}


def default_cache_dir() -> Path:
    return Path(os.environ.get("MFEXP_CACHE", Path.home() / ".cache" / "mfexp"))


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """Low-frequency noise: a coarse random grid upsampled bilinearly."""
    coarse = rng.normal(size=(scale + 1, scale + 1)).astype(np.float32)
    im = Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR)
    return np.asarray(im)


def _surface(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)  # grain direction varies part to part
    freq = rng.uniform(18, 40)
    along = np.cos(angle) * xx + np.sin(angle) * yy
    grain = 0.05 * np.sin(2 * np.pi * freq * along + rng.uniform(0, 2 * np.pi))
    grain += 0.04 * rng.normal(size=(size, size)).astype(np.float32)
    light = 0.08 * _smooth_noise(rng, size, 3) + rng.uniform(-0.1, 0.1) * (xx - 0.5)
    return 0.5 + rng.uniform(-0.08, 0.08) + grain + light


def _line_mask(size: int, pts: np.ndarray, width: float) -> np.ndarray:
    """Soft mask of a polyline (distance to the nearest segment below width)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dist = np.full((size, size), np.inf, dtype=np.float32)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
        dist = np.minimum(dist, np.hypot(xx - x0 - t * dx, yy - y0 - t * dy))
    return np.clip(1.0 - dist / width, 0, 1)


def _defect(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """Additive intensity change for one defect kind (zero for good parts)."""
    s = size
    if kind == "good":
        return np.zeros((s, s), np.float32)
    if kind == "scratch":  # long straight thin line, bright or dark
        c, ang, length = rng.uniform(0.25 * s, 0.75 * s, 2), rng.uniform(0, np.pi), rng.uniform(0.4 * s, 0.9 * s)
        d = np.array([np.cos(ang), np.sin(ang)]) * length / 2
        return rng.choice([-1, 1]) * rng.uniform(0.12, 0.25) * _line_mask(s, np.stack([c - d, c + d]), rng.uniform(0.8, 1.6))
    if kind == "crack":  # jagged dark random walk
        n = rng.integers(5, 9)
        steps = rng.normal(size=(n, 2)) * s * 0.06 + rng.uniform(-1, 1, 2) * s * 0.08
        pts = rng.uniform(0.3 * s, 0.7 * s, 2) + np.cumsum(steps, axis=0)
        return -rng.uniform(0.15, 0.3) * _line_mask(s, pts, rng.uniform(0.9, 1.5))
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    if kind == "pit":  # a few small dark round holes
        out = np.zeros((s, s), np.float32)
        for _ in range(rng.integers(1, 4)):
            cx, cy, r = *rng.uniform(0.15 * s, 0.85 * s, 2), rng.uniform(0.025, 0.06) * s
            out -= rng.uniform(0.2, 0.35) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        return out
    if kind == "stain":  # large soft irregular blotch
        cx, cy = rng.uniform(0.25 * s, 0.75 * s, 2)
        rx, ry = rng.uniform(0.12, 0.25, 2) * s
        blob = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2))
        return rng.choice([-1, 1]) * rng.uniform(0.08, 0.16) * blob * (1 + 0.5 * _smooth_noise(rng, s, 4))
    raise ValueError(f"unknown demo defect kind {kind!r}")


def render(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    img = _surface(rng, size) + _defect(rng, kind, size)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def make_demo(
    root: Path | None = None,
    counts: dict[str, int] | None = None,
    image_size: int = 64,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Path:
    """Write (once) and return the demo folder: ``<root>/train/<class>/*.png``, ``<root>/test/<class>/*.png``."""
    counts = dict(counts or DEFAULT_COUNTS)
    tag = "-".join(f"{k}{v}" for k, v in sorted(counts.items()))
    root = Path(root or default_cache_dir()) / f"demo-v{GENERATOR_VERSION}-s{seed}-{image_size}px-{tag}"
    if (root / ".complete").exists():
        return root
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    for ci, (kind, n) in enumerate(sorted(counts.items())):
        rng = np.random.default_rng([seed, ci])
        n_test = int(round(test_fraction * n))
        for i in range(n):
            split = "test" if i < n_test else "train"
            out = tmp / split / kind
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render(kind, image_size, rng)).save(out / f"{kind}_{i:04d}.png")
    (tmp / ".complete").touch()
    try:
        tmp.rename(root)  # atomic: parallel jobs never see a half-written tree
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    return root
