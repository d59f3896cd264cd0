"""The ``synth=gan`` plugin: a class-conditional GAN, trained once per key, whose samples join the training split.

``settings`` (the dataclass the config is checked against), ``networks``, ``training``, ``quality``
(Fréchet distances, figures), ``store`` (the GAN's MLflow runs) and ``synth`` (`GanSynth`, the
object ``conf/synth/gan.yaml`` names). `GanSynth` and `find_gan_run` are imported on first use:
Hydra's plugin scan imports ``settings`` (for the schema) with every app start, without torch or MLflow.
"""
from __future__ import annotations

from typing import Any

from mfexp.keys import TAG_GAN_KEY, TAG_GAN_RUN, TAG_ROLE  # noqa: F401 - the tags a GAN run and its callers carry

__all__ = ["GanSynth", "find_gan_run"]


def __getattr__(name: str) -> Any:
    if name == "GanSynth":
        from .synth import GanSynth

        return GanSynth
    if name == "find_gan_run":
        from .store import find_gan_run

        return find_gan_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
