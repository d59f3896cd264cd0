"""The built-in demo data: procedurally generated surface-inspection images.

Brushed metal parts photographed under uneven light, most of them good, as on a real line. A
part is a reflectance map (base finish, brushed grain at a per-part angle, mill mottling) lit by
a per-part illumination (overall exposure, a gradient from any side, a soft highlight band along
the grain) plus sensor noise. A defect changes the reflectance locally, so it is lit like the part
around it and its contrast varies with the lighting:

* ``scratch``: one or two long straight bright lines (lifted burrs catch the light), 3-4 px wide, at any angle;
* ``crack``: a dark, jagged line, 3-4 px wide, that forks into thinner branches;
* ``pit``: one to three dark round holes (7-12 px across) with a lit rim;
* ``stain``: a large, soft, irregular blot with a darker rim that dulls the grain beneath it.

Defects sit anywhere on the part at any orientation; good parts vary in grain, finish and light.
Written once as a class-per-folder PNG tree under the cache folder, so the demo goes through
exactly the same loader as user data. Deterministic by seed; a generator version in the folder
name invalidates old caches.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

GENERATOR_VERSION = 3
DEFAULT_COUNTS = {"good": 600, "scratch": 150, "pit": 150, "crack": 150, "stain": 150}


def default_cache_dir() -> Path:
    return Path(os.environ.get("MFEXP_CACHE", Path.home() / ".cache" / "mfexp"))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)`` in pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy + 0.5, xx + 0.5


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """Low-frequency noise with unit-ish spread: a coarse random grid upsampled bicubically."""
    coarse = rng.normal(size=(scale + 1, scale + 1)).astype(np.float32)
    im = Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32)


def _brushed(rng: np.random.Generator, size: int, angle_deg: float, streak: int) -> np.ndarray:
    """Brushed grain, zero mean, unit std: white noise smeared along one direction, then rotated."""
    n = int(np.ceil(size * 1.5)) + streak
    noise = rng.normal(size=(n, n)).astype(np.float32)
    c = np.cumsum(np.pad(noise, ((0, 0), (1, 0))), axis=1)
    smear = ((c[:, streak:] - c[:, :-streak]) / np.sqrt(streak)).astype(np.float32)  # box blur along rows
    im = np.asarray(Image.fromarray(smear, mode="F").rotate(angle_deg, Image.BILINEAR), dtype=np.float32)
    o0, o1 = (im.shape[0] - size) // 2, (im.shape[1] - size) // 2
    g = im[o0:o0 + size, o1:o1 + size]
    return (g - g.mean()) / (g.std() + 1e-6)


def _part(rng: np.random.Generator, size: int) -> dict:
    """The defect-free part: reflectance terms and illumination, kept apart so defects can act on them."""
    s = size
    yy, xx = _grid(s)
    u, v = xx / s - 0.5, yy / s - 0.5
    grain_deg = rng.uniform(0, 180)  # grain direction varies part to part
    streak = max(2, int(round(rng.integers(6, 16) * s / 64)))
    grain = _brushed(rng, s, grain_deg, streak) * rng.uniform(0.015, 0.03)
    mottle = _smooth_noise(rng, s, int(rng.integers(2, 5))) * rng.uniform(0.005, 0.02)
    base = rng.uniform(0.42, 0.62)  # finish of this part
    # light: exposure, a gradient from any side, a soft highlight band running along the grain
    exposure = rng.uniform(0.8, 1.2)
    g_ang = rng.uniform(0, 2 * np.pi)
    gradient = rng.uniform(0, 0.35) * (np.cos(g_ang) * u + np.sin(g_ang) * v)
    ga = np.deg2rad(grain_deg)
    across = -np.sin(ga) * u - np.cos(ga) * v  # image rows point down, PIL rotates counter-clockwise
    band = rng.uniform(0, 0.15) * np.exp(-0.5 * ((across - rng.uniform(-0.4, 0.4)) / rng.uniform(0.15, 0.35)) ** 2)
    light = exposure * (1 + gradient + band + 0.03 * _smooth_noise(rng, s, 2))
    return {"base": base, "grain": grain, "mottle": mottle, "light": light.astype(np.float32),
            "noise": rng.uniform(0.01, 0.025)}


def _line_mask(size: int, pts: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased mask of a polyline, ``width`` px wide (1 inside, a 1 px soft edge)."""
    yy, xx = _grid(size)
    dist = np.full((size, size), np.inf, dtype=np.float32)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
        dist = np.minimum(dist, np.hypot(xx - x0 - t * dx, yy - y0 - t * dy))
    return np.clip(width / 2 + 0.5 - dist, 0, 1)


def _jagged(rng: np.random.Generator, start: np.ndarray, heading: float, length: float, step: float,
            wiggle: float) -> np.ndarray:
    """A jagged polyline of ~``length`` px in ~``step`` px segments; its course wanders ``wiggle`` rad a step."""
    n = max(2, int(round(length / step)))
    turns = heading + np.cumsum(rng.normal(0, wiggle, n))
    turns = heading + 0.6 * (turns - heading)  # keep the overall course
    steps = np.stack([np.cos(turns), np.sin(turns)], axis=1) * rng.uniform(0.7, 1.3, (n, 1)) * step
    return np.vstack([start, start + np.cumsum(steps, axis=0)])


def _defect(rng: np.random.Generator, kind: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(additive reflectance change, how much of the grain survives) for one defect kind."""
    s = size
    px = s / 64  # sizes below are in pixels of a 64 px image; other sizes scale them
    delta, keep = np.zeros((s, s), np.float32), np.ones((s, s), np.float32)
    if kind == "good":
        return delta, keep
    yy, xx = _grid(s)
    centre = rng.uniform(0.2 * s, 0.8 * s, 2)
    if kind == "scratch":  # long straight bright line(s), 3-4 px wide
        ang, length = rng.uniform(0, np.pi), rng.uniform(0.55, 1.0) * s
        sign = 1.0  # a scratch lifts burrs that catch the light: always brighter than the part
        d = np.array([np.cos(ang), np.sin(ang)]) * length / 2
        mask = _line_mask(s, np.stack([centre - d, centre + d]), max(1.0, rng.uniform(3.0, 4.0) * px))
        # the tool digs in and lifts off: the line fades towards both ends
        t = ((xx - centre[0]) * d[0] + (yy - centre[1]) * d[1]) / (d @ d)  # -1 .. 1 along the line
        mask = mask * np.clip((1 - np.abs(t)) / 0.12, 0.25, 1)
        if rng.random() < 0.35:  # a second, parallel and fainter pass of the same tool
            off = np.array([-np.sin(ang), np.cos(ang)]) * rng.uniform(4, 9) * px * rng.choice([-1, 1])
            f = rng.uniform(0.6, 0.9)
            mask = np.maximum(mask, _line_mask(s, np.stack([centre - f * d + off, centre + f * d + off]),
                                               max(1.0, rng.uniform(1.6, 2.4) * px)) * f)
        return sign * rng.uniform(0.3, 0.45) * mask, keep
    if kind == "crack":  # dark jagged line that forks
        heading = rng.uniform(0, 2 * np.pi)
        trunk = _jagged(rng, centre - np.array([np.cos(heading), np.sin(heading)]) * s * 0.25, heading,
                        rng.uniform(0.5, 0.8) * s, rng.uniform(2.5, 4.0) * px, 0.6)
        mask = _line_mask(s, trunk, max(1.0, rng.uniform(3.0, 4.0) * px))
        for _ in range(int(rng.integers(1, 4))):
            at = trunk[rng.integers(1, len(trunk) - 1)]
            side = heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
            branch = _jagged(rng, at, side, rng.uniform(0.15, 0.35) * s, rng.uniform(2.0, 3.5) * px, 0.6)
            mask = np.maximum(mask, _line_mask(s, branch, max(0.8, rng.uniform(1.2, 1.8) * px)))
        return -rng.uniform(0.35, 0.5) * mask, keep * (1 - 0.8 * mask)
    if kind == "pit":  # one to three dark round holes, each with a lit rim on the far side
        n = int(rng.integers(1, 4))
        spread = rng.uniform(6.0, 12.0) * px
        pits = centre + rng.normal(0, spread, (n, 2))
        radii = np.maximum(rng.uniform(3.5, 6.0, n) * px, 0.7)
        light_dir = rng.normal(size=2)
        light_dir /= np.linalg.norm(light_dir)
        hole, rim = np.zeros((s, s), np.float32), np.zeros((s, s), np.float32)
        for (cx, cy), r in zip(pits, radii):
            dist = np.hypot(xx - cx, yy - cy)
            hole = np.maximum(hole, np.clip(r + 0.5 - dist, 0, 1))
            dist_rim = np.hypot(xx - cx - light_dir[0] * r, yy - cy - light_dir[1] * r)
            rim = np.maximum(rim, np.clip(1.2 - dist_rim, 0, 1) * np.clip(dist - r + 1.0, 0, 1))
        return -rng.uniform(0.3, 0.42) * hole + 0.12 * rim * (1 - hole), keep * (1 - 0.8 * hole)
    if kind == "stain":  # large soft irregular blot with a darker dried rim; dulls the grain
        phi = np.arctan2(yy - centre[1], xx - centre[0])
        wobble = sum(rng.uniform(0, a) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
                     for k, a in ((2, 0.25), (3, 0.12)))
        r0 = rng.uniform(0.15, 0.27) * s * (1 + wobble)
        d = np.hypot(xx - centre[0], yy - centre[1]) / r0 * (1 + 0.12 * _smooth_noise(rng, s, 6))  # ragged edge
        body = 1 / (1 + np.exp((d - 1) / rng.uniform(0.08, 0.16)))  # soft-edged disc
        rim = np.exp(-0.5 * ((d - 0.95) / 0.1) ** 2)
        tone = 1 + 0.25 * _smooth_noise(rng, s, 4)
        amp = rng.uniform(0.15, 0.25)
        sign = -1.0 if rng.random() < 0.75 else 1.0  # oil/water marks darken; some residues are lighter
        return sign * amp * (body * tone + 0.8 * rim), keep * (1 - 0.7 * body)
    raise ValueError(f"unknown demo defect kind {kind!r}")


def render(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``size`` x ``size`` uint8 grayscale image of a part of class ``kind``."""
    p = _part(rng, size)
    delta, keep = _defect(rng, kind, size)
    reflectance = p["base"] + p["grain"] * keep + p["mottle"] + delta
    img = reflectance * p["light"] + p["noise"] * rng.normal(size=(size, size)).astype(np.float32)
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
