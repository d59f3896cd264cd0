"""The GAN's settings as one dataclass: types and bounds declared per field, checked when the plugin is built.

`GanConf` (the settings plus ``_target_``) is the ``synth/gan_schema`` that conf/synth/gan.yaml
extends, registered by ``hydra_plugins/mfexp_plugins_conf`` when Hydra scans its plugins, so a
mistyped value fails at composition. `GanSettings` checks the bounds, the class list and the
proportions when `GanSynth` is built, with one line naming the ``synth.<key>`` at fault.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, List, Optional

from mfexp.errors import ConfigError


def _bounded(default: Any, at_least: float | None = None, above: float | None = None) -> Any:
    return field(default=default, metadata={"at_least": at_least, "above": above})


@dataclass
class GanSettings:
    # --- what to generate (not part of the GAN key)
    r: float = _bounded(0.1, at_least=0.0)  # synthetic images = round(r x original training-set size)
    classes: Optional[List[str]] = None  # None: every class but data.good_class
    proportions: Any = None  # None (as the real images), "uniform", or {class: weight}
    noise_scale: float = _bounded(1.0, above=0.0)  # latent std at generation
    # --- how the GAN is trained (part of the key)
    steps: int = _bounded(1500, at_least=1)
    batch_size: int = _bounded(32, at_least=1)
    lr: float = _bounded(2e-4, above=0.0)
    latent_dim: int = _bounded(64, at_least=1)
    width: int = _bounded(16, at_least=1)
    mode_seeking: float = _bounded(1.0, at_least=0.0)
    train_seed: int = 0
    # --- reporting
    fid_steps: int = _bounded(300, at_least=0)
    progress: bool = True

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> GanSettings:
        """The settings from ``synth.*`` keyword values; an unknown key is a ConfigError, not a TypeError."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"synth: unknown key(s) {unknown} for the GAN plugin (see conf/synth/gan.yaml)")
        return cls(**values)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, bool):
                setattr(self, f.name, bool(value))
            elif isinstance(f.default, int):
                setattr(self, f.name, _to_int(f.name, value, f.metadata.get("at_least")))
            elif isinstance(f.default, float):
                setattr(self, f.name, _to_float(f.name, value, f.metadata.get("at_least"), f.metadata.get("above")))
        if self.classes is not None:
            self.classes = [str(c) for c in self.classes]
            if not self.classes:
                raise ConfigError("synth.classes=[]: name at least one class, or null for every class but data.good_class")
        self.proportions = _proportions(self.proportions)

    def training(self) -> dict[str, Any]:
        """The settings the trained weights depend on (the GAN key and the run's params)."""
        return {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "latent_dim": self.latent_dim,
                "width": self.width, "train_seed": self.train_seed, "mode_seeking": self.mode_seeking}


@dataclass
class GanConf(GanSettings):
    """``synth=gan``: the settings and the class Hydra builds from them."""

    _target_: str = "mfexp_plugins.gan.GanSynth"


def _to_float(name: str, value: Any, at_least: float | None = None, above: float | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"synth.{name}={value!r}: must be a number") from None
    if not math.isfinite(v) or (at_least is not None and v < at_least) or (above is not None and v <= above):
        bound = f">= {at_least}" if at_least is not None else f"> {above}"
        raise ConfigError(f"synth.{name} must be {bound}, got {value}")
    return v


def _to_int(name: str, value: Any, at_least: int | None = None) -> int:
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"synth.{name}={value!r}: must be an integer")
    if at_least is not None and value < at_least:
        raise ConfigError(f"synth.{name} must be >= {at_least}, got {value}")
    return int(value)


def _proportions(value: Any) -> str | dict[str, float] | None:
    if value is None or value == "uniform":
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"synth.proportions={value!r}: must be null (as the real defects), 'uniform' or a mapping class -> weight")
    out = {str(k): _to_float(f"proportions.{k}", v, at_least=0.0) for k, v in value.items()}
    if not sum(out.values()) > 0:
        raise ConfigError("synth.proportions: the weights must not all be zero")
    return out
