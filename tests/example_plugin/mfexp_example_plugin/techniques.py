"""A new augmentation technique. mfexp builds it from its config's ``_target_``."""
from __future__ import annotations

from typing import ClassVar

import albumentations as A

from mfexp.policy import Technique


class Invert(Technique):
    """Photographic negative (255 - pixel). Discrete: any m > 0 is on; rr is the share of images."""

    continuous: ClassVar[bool] = False

    def transform(self, m: float) -> A.BasicTransform:
        return A.InvertImg(p=1.0)
