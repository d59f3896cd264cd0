"""Built-in techniques of a training policy (see mfexp/policy.py and docs/policies.md).

Each image technique maps its magnitude ``m`` in (0, 1] monotonically onto the ranges of one
Albumentations transform (or a small group); ``m = 1`` is the strongest setting that still
makes sense for 64-256 px inspection images. ``m = 0`` is never built: the policy drops it.
Ranges that sample a strength use ``[m * max / 2, m * max]`` so every applied image visibly
changes; signed parameters (angles, brightness) use ``[-m * max, m * max]``.

Geometric techniques reflect at the border (BORDER_REFLECT_101) rather than fill black: black
corners would be a tell-tale artefact that no real inspection image has.
"""
from __future__ import annotations

import os
from typing import Any, ClassVar

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.core.type_definitions import d4_group_elements  # noqa: E402

from mfexp.policy import BatchTechnique, LossTechnique, Technique  # noqa: E402

REFLECT = cv2.BORDER_REFLECT_101


# ------------------------------------------------------------------------------ spatial
class Flip(Technique):
    """Horizontal or vertical flip (one of the two, equally likely). Discrete: any m > 0 is on."""

    continuous: ClassVar[bool] = False

    def transform(self, m: float) -> A.OneOf:
        return A.OneOf([A.HorizontalFlip(p=1.0), A.VerticalFlip(p=1.0)], p=1.0)


class _NonIdentityD4(A.D4):
    """A.D4 without its identity element, so an applied D4 always changes the image."""

    def get_params(self) -> dict[str, Any]:
        return {"group_element": self.random_generator.choice(d4_group_elements[1:])}


class D4(Technique):
    """One of the 7 non-identity symmetries of the square (rot90s, flips, transposes).

    Discrete: any m > 0 is on. Needs square images (a transpose swaps height and width).
    """

    continuous: ClassVar[bool] = False

    def transform(self, m: float) -> A.BasicTransform:
        return _NonIdentityD4(p=1.0)


class Rotate(Technique):
    """Rotation by an angle uniform in [-45 m, 45 m] degrees (with d4, 45 reaches every angle)."""

    max_degrees: ClassVar[float] = 45.0

    def transform(self, m: float) -> A.BasicTransform:
        angle = m * self.max_degrees
        return A.Rotate(limit=(-angle, angle), border_mode=REFLECT, p=1.0)


class Affine(Technique):
    """Isotropic scale 1 +- 0.25 m, translation +- 12.5 m % per axis, shear +- 15 m degrees."""

    def transform(self, m: float) -> A.BasicTransform:
        return A.Affine(
            scale=(1.0 - 0.25 * m, 1.0 + 0.25 * m),
            keep_ratio=True,
            translate_percent=(-0.125 * m, 0.125 * m),
            shear=(-15.0 * m, 15.0 * m),
            border_mode=REFLECT,
            p=1.0,
        )


class Distort(Technique):
    """Grid distortion (5x5 grid) with distort_limit +- 0.3 m (local warps, like a bent strip)."""

    def transform(self, m: float) -> A.BasicTransform:
        return A.GridDistortion(num_steps=5, distort_limit=(-0.3 * m, 0.3 * m), border_mode=REFLECT, p=1.0)


# ------------------------------------------------------------------------------ photometric
class BrightnessContrast(Technique):
    """Brightness +- 0.3 m of the maximum value and contrast factor 1 +- 0.3 m."""

    def transform(self, m: float) -> A.BasicTransform:
        return A.RandomBrightnessContrast(
            brightness_limit=(-0.3 * m, 0.3 * m), contrast_limit=(-0.3 * m, 0.3 * m), p=1.0
        )


class Gamma(Technique):
    """Gamma in [1 / (1 + 0.6 m), 1 + 0.6 m] (log-symmetric: m = 1 gives 0.625 .. 1.6)."""

    def transform(self, m: float) -> A.BasicTransform:
        k = 1.0 + 0.6 * m
        return A.RandomGamma(gamma_limit=(100.0 / k, 100.0 * k), p=1.0)


class Blur(Technique):
    """Gaussian blur with sigma in [0.75 m, 1.5 m] px (kernel size derived from sigma)."""

    max_sigma: ClassVar[float] = 1.5

    def transform(self, m: float) -> A.BasicTransform:
        s = m * self.max_sigma
        return A.GaussianBlur(blur_limit=0, sigma_limit=(s / 2, s), p=1.0)


class Sharpen(Technique):
    """Unsharp kernel blended with alpha in [0.5 m, m]; lightness kept at 1 (no brightening)."""

    def transform(self, m: float) -> A.BasicTransform:
        return A.Sharpen(alpha=(m / 2, m), lightness=(1.0, 1.0), p=1.0)


class Noise(Technique):
    """Gaussian noise with std in [0.05 m, 0.1 m] of the maximum value (m = 1: up to ~26 grey levels)."""

    max_std: ClassVar[float] = 0.1

    def transform(self, m: float) -> A.BasicTransform:
        s = m * self.max_std
        return A.GaussNoise(std_range=(s / 2, s), p=1.0)


class Cutout(Technique):
    """CoarseDropout: 1 to 1 + round(3 m) black holes, each side 10 m .. 25 m % of the image side."""

    def transform(self, m: float) -> A.BasicTransform:
        side = (0.1 * m, 0.25 * m)
        return A.CoarseDropout(
            num_holes_range=(1, 1 + round(3 * m)), hole_height_range=side, hole_width_range=side, fill=0, p=1.0
        )


# ------------------------------------------------------------------------------ batch and loss
def _beta(alpha: float, generator: torch.Generator) -> float:
    """Beta(alpha, alpha) folded onto [0.5, 1]: the original example always dominates."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return max(lam, 1.0 - lam)


class MixUp(BatchTechnique):
    """x = lam x + (1 - lam) x[perm], lam ~ Beta(a, a) folded onto [0.5, 1], a = m.

    a -> 0 keeps lam near 1 (identity); a = 1 makes lam uniform on [0.5, 1], the strongest.
    """

    def alpha(self) -> float:
        return self.m

    def describe(self) -> dict[str, float]:
        return {"alpha": self.alpha()}

    def mix(self, x: torch.Tensor, target: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        lam = _beta(self.alpha(), generator)
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        return lam * x + (1.0 - lam) * x[perm], lam * target + (1.0 - lam) * target[perm]


class CutMix(BatchTechnique):
    """Pastes a box of area share 1 - lam from x[perm], lam ~ Beta(a, a) folded onto [0.5, 1], a = m.

    The targets mix by the box's actual area after clipping at the border.
    """

    def alpha(self) -> float:
        return self.m

    def describe(self) -> dict[str, float]:
        return {"alpha": self.alpha()}

    def mix(self, x: torch.Tensor, target: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        lam = _beta(self.alpha(), generator)
        n, _, h, w = x.shape
        perm = torch.randperm(n, generator=generator).to(x.device)
        ratio = (1.0 - lam) ** 0.5
        bh, bw = int(round(h * ratio)), int(round(w * ratio))
        cy = int(torch.randint(0, h, (), generator=generator))
        cx = int(torch.randint(0, w, (), generator=generator))
        y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
        x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        kept = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        return x, kept * target + (1.0 - kept) * target[perm]


class LabelSmoothing(LossTechnique):
    """Label smoothing eps = 0.2 m (targets * (1 - eps) + eps / K); rr is ignored."""

    max_epsilon: ClassVar[float] = 0.2

    def epsilon(self) -> float:
        return self.m * self.max_epsilon

    def describe(self) -> dict[str, float]:
        return {"epsilon": self.epsilon()}
