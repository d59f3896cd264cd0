"""Training policies: techniques with a magnitude ``m`` and a replacement rate ``rr``.

A policy maps technique names to `Technique` plugins (``conf/augment/*.yaml``, built with
``hydra.utils.instantiate(cfg.augment)``). Three levels of technique exist:

* ``image``: one Albumentations transform (or a small group) per example, applied in the
  DataLoader workers on uint8 HWC arrays; ``rr`` is the probability that an example gets it.
* ``batch``: mixup/cutmix on the float NCHW batch; ``rr`` is the share of batches mixed.
* ``loss``: label smoothing of the soft targets; only ``m`` matters.

The built-in techniques live in ``plugins/mfexp_plugins/augment.py``; their magnitude
mappings are tabulated in ``docs/policies.md``. This module holds only the machinery.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

# albumentations asks PyPI for a newer version at import time; the machines here are offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.core.composition import BaseCompose  # noqa: E402
from albumentations.core.transforms_interface import BasicTransform  # noqa: E402

from mfexp.errors import ConfigError  # noqa: E402
from mfexp.policy_names import policy_name  # noqa: E402 - re-exported: a policy's three-word name

__all__ = [
    "BatchTechnique",
    "LossTechnique",
    "Policy",
    "Technique",
    "policy_name",
    "seed_pipeline",
]

MODES = ("all", "trivial")
DECIMALS = 3  # m and rr are quantised to this many decimals, so logs, hashes and pipelines agree
TRIVIAL_LEVELS = 10  # trivial mode: magnitudes (k + 0.5) / 10 * m, k = 0..9 (discretised uniform)


def _unit_interval(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{owner}: {name}={value!r} is not a number in [0, 1]")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ConfigError(f"{owner}: {name}={value} is outside [0, 1]")
    return round(value, DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0 for stable hashes


class Technique:
    """One technique of a policy; plugins subclass this (or `BatchTechnique`, `LossTechnique`).

    An image-level plugin only implements `transform`: the Albumentations transform at
    magnitude ``m`` with ``p=1``. The policy sets its ``p`` to ``rr``, so the transform must
    change every image it is applied to; m = 0 is never built (the policy drops identities).
    """

    level: ClassVar[str] = "image"
    # False for techniques without a strength (flips): trivial mode then builds one level only.
    continuous: ClassVar[bool] = True

    def __init__(self, m: float = 0.0, rr: float = 0.0) -> None:
        self.name = type(self).__name__  # replaced by the policy's key for error messages
        self.m = _unit_interval(self._owner(), "m", m)
        self.rr = _unit_interval(self._owner(), "rr", rr)

    def _owner(self) -> str:
        cls = type(self)
        return f"augment technique '{self.name}' ({cls.__module__}.{cls.__qualname__})"

    def transform(self, m: float) -> A.BasicTransform | BaseCompose:
        raise NotImplementedError(f"{self._owner()} is a {self.level}-level technique without an image transform")

    def is_identity(self) -> bool:
        return self.m == 0.0 or self.rr == 0.0

    def settings(self) -> dict[str, float]:
        """The values that define this technique's effect (for the canonical form)."""
        return {"m": self.m, "rr": self.rr}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(m={self.m}, rr={self.rr})"


class BatchTechnique(Technique):
    """Mixes a float NCHW batch and its soft targets; applied to a share ``rr`` of batches."""

    level: ClassVar[str] = "batch"

    def mix(self, x: torch.Tensor, target: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Return mixed ``x`` and ``target`` (N, K); rows of ``target`` must keep summing to 1."""
        raise NotImplementedError


class LossTechnique(Technique):
    """Softens the targets: ``target * (1 - eps) + eps / K``; only ``m`` matters."""

    level: ClassVar[str] = "loss"

    def epsilon(self) -> float:
        raise NotImplementedError

    def is_identity(self) -> bool:
        return self.m == 0.0

    def settings(self) -> dict[str, float]:
        return {"m": self.m}


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, BaseCompose):
        for child in node.transforms:
            yield from _walk(child)


def seed_pipeline(pipeline: BaseCompose | BasicTransform, seed: int) -> None:
    """Give every node of ``pipeline`` its own random state derived from ``seed``.

    ``A.Compose(seed=s)`` in albumentations 2.0.8 seeds every child with the *same* ``s``,
    so two transforms with equal ``p`` would always fire together; a `numpy.random.SeedSequence`
    spawn per node keeps them independent and still reproducible.

    DataLoader workers receive copies of one pipeline, so reseed it in each worker, e.g.::

        def worker_init_fn(worker_id):
            info = torch.utils.data.get_worker_info()
            seed_pipeline(info.dataset.<pipeline attribute>, info.seed)  # base_seed + worker_id

    ``info.seed`` comes from the DataLoader's generator, so runs are reproducible under
    ``torch.manual_seed`` and epochs differ (workers are re-created each epoch unless persistent).
    """
    nodes = list(_walk(pipeline))
    for node, seq in zip(nodes, np.random.SeedSequence(int(seed) % 2**64).spawn(len(nodes))):
        node.random_generator = np.random.default_rng(seq)
        node.py_random = random.Random(int(seq.generate_state(1, np.uint64)[0]))


class Policy:
    """A training policy: named techniques and how image techniques combine (``mode``).

    ``mode="all"``: each image technique applies independently with probability ``rr`` at
    magnitude ``m``, in the mapping's order. ``mode="trivial"`` (TrivialAugment-style): every
    image gets exactly one of the non-identity image techniques, chosen uniformly, at a uniformly
    random magnitude in (0, m] (``TRIVIAL_LEVELS`` discrete levels); ``rr`` only switches a
    technique in or out there. Batch and loss techniques are not part of that choice; they act
    in `mix_batch` in both modes.
    """

    def __init__(self, techniques: Mapping[str, Any] | None = None, mode: str = "all") -> None:
        if mode not in MODES:
            raise ConfigError(f"augment.mode={mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self.techniques: dict[str, Technique] = {}
        for name, technique in (techniques or {}).items():
            self.techniques[str(name)] = self._resolve(str(name), technique)
        # Build once now so a transform that rejects its arguments fails before any training.
        self.image_pipeline()

    @staticmethod
    def _resolve(name: str, technique: Any) -> Technique:
        if isinstance(technique, Mapping) and "_target_" in technique:
            # Accept uninstantiated configs too (instantiate(..., _recursive_=False), tests).
            from hydra.utils import instantiate

            technique = instantiate(technique)
        if not isinstance(technique, Technique):
            hint = " (no _target_: unknown technique?)" if isinstance(technique, Mapping) else ""
            raise ConfigError(
                f"augment technique '{name}': expected a mfexp.policy.Technique, got {type(technique).__name__}{hint}"
            )
        technique.name = name
        return technique

    def _active(self, level: str) -> list[tuple[str, Technique]]:
        return [(n, t) for n, t in self.techniques.items() if t.level == level and not t.is_identity()]

    # ---------------------------------------------------------------- image level
    def _build(self, name: str, technique: Technique, m: float) -> A.BasicTransform | BaseCompose:
        where = f"augment technique '{name}' ({type(technique).__name__}) at m={m:g}"
        try:
            transform = technique.transform(m)
            if not isinstance(transform, (BasicTransform, BaseCompose)):
                raise TypeError(f"transform() returned {type(transform).__name__}, not an Albumentations transform")
            A.Compose([transform], strict=True)  # per technique, so a bad argument is blamed on it
        except ConfigError:
            raise
        except Exception as e:  # pydantic/ValueError/TypeError from the transform: one clear line
            raise ConfigError(f"{where}: {' '.join(str(e).split())}") from e
        return transform

    def image_pipeline(self, seed: int | None = None) -> A.Compose | None:
        """The per-example pipeline: uint8 HWC (C = 1 or 3) in, uint8 HWC of the same shape out.

        ``None`` when no image technique is active (skip augmentation entirely). With ``seed``
        the pipeline is reproducible (see `seed_pipeline`, which workers must call); without,
        it draws from OS entropy. Each call returns a fresh pipeline.
        """
        active = self._active("image")
        if not active:
            return None
        nodes: list[A.BasicTransform | BaseCompose] = []
        if self.mode == "all":
            for name, t in active:
                node = self._build(name, t, t.m)
                node.p = t.rr
                nodes.append(node)
        else:
            choices = []
            for name, t in active:
                levels = range(TRIVIAL_LEVELS) if t.continuous else [TRIVIAL_LEVELS - 1]
                built = [self._build(name, t, round(t.m * (k + 0.5) / TRIVIAL_LEVELS, 4)) for k in levels]
                for b in built:
                    b.p = 1.0  # OneOf weights: uniform over levels
                choices.append(A.OneOf(built, p=1.0))
            nodes.append(A.OneOf(choices, p=1.0))
        pipeline = A.Compose(nodes, strict=True, seed=seed)
        if seed is not None:
            seed_pipeline(pipeline, seed)
        return pipeline

    # ---------------------------------------------------------------- batch and loss level
    @property
    def label_smoothing(self) -> float:
        """Combined smoothing of the loss techniques (already applied by `mix_batch`)."""
        keep = 1.0
        for _, t in self._active("loss"):
            keep *= 1.0 - float(t.epsilon())  # type: ignore[attr-defined]
        return 1.0 - keep

    def mix_batch(
        self, x: torch.Tensor, y: torch.Tensor, num_classes: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch techniques and label smoothing: returns (x, soft targets (N, num_classes)).

        Each batch technique fires with probability ``rr`` (one draw per batch from
        ``generator``, a CPU generator; x may live on any device). Rows of the targets sum to 1;
        without mixing or smoothing they are one-hot, so train with soft-target cross-entropy.
        """
        target = torch.nn.functional.one_hot(y.long(), num_classes).to(x.dtype if x.is_floating_point() else torch.float32)
        for _, t in self._active("batch"):
            if float(torch.rand((), generator=generator)) < t.rr:
                x, target = t.mix(x, target, generator)  # type: ignore[attr-defined]
        eps = self.label_smoothing
        if eps > 0.0:
            target = target * (1.0 - eps) + eps / num_classes
        return x, target

    # ---------------------------------------------------------------- identity and logging
    def canonical(self, extra: Mapping[str, Mapping[str, float]] | None = None) -> dict:
        """Sorted, rounded, identity-free form of the policy; equal forms mean equal training.

        ``extra`` merges other axes of the search (``{"synthetic": {"r": 0.1}}``); entries whose
        values are all zero are dropped like identity techniques.
        """
        out: dict[str, Any] = {}
        for name, t in sorted(self.techniques.items()):
            if not t.is_identity():
                out[name] = {k: round(float(v), DECIMALS) + 0.0 for k, v in sorted(t.settings().items())}
        if self.mode != "all" and self._active("image"):
            out["_mode"] = self.mode
        for axis, values in sorted((extra or {}).items()):
            if axis in out:
                raise ConfigError(f"policy axis '{axis}' clashes with a technique of the same name")
            rounded = {k: round(float(v), DECIMALS) + 0.0 for k, v in sorted(values.items())}
            if any(v != 0.0 for v in rounded.values()):
                out[str(axis)] = rounded
        return dict(sorted(out.items()))

    def name(self, extra: Mapping[str, Mapping[str, float]] | None = None) -> str:
        return policy_name(self.canonical(extra))

    def params(self) -> dict[str, float]:
        """MLflow params ``policy.<technique>.m`` / ``.rr`` for every technique, identities included."""
        out: dict[str, float] = {}
        for name, t in self.techniques.items():
            out[f"policy.{name}.m"] = t.m
            out[f"policy.{name}.rr"] = t.rr
        return out

    def describe(self) -> dict:
        """JSON-ready description for the run's artifact: the A.to_dict pipeline plus batch/loss settings."""
        pipeline = self.image_pipeline()
        return {
            "mode": self.mode,
            "canonical": self.canonical(),
            "name": self.name(),
            "image_pipeline": A.to_dict(pipeline) if pipeline is not None else None,
            "batch": {n: {**t.settings(), **_details(t)} for n, t in self._active("batch")},
            "loss": {n: {**t.settings(), **_details(t)} for n, t in self._active("loss")},
            "label_smoothing": self.label_smoothing,
        }

    def __repr__(self) -> str:
        return f"Policy(mode={self.mode!r}, techniques={self.techniques!r})"


def _details(t: Technique) -> dict:
    describe = getattr(t, "describe", None)
    return dict(describe()) if callable(describe) else {}
