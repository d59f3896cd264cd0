"""Density matching (Fast AutoAugment, Lim et al., NeurIPS 2019): score augmentations with a model that is trained anyway.

The full-budget baseline's first fit (before any refit, so validation is still held out) classifies
the validation images once clean and once per probe: one technique at one magnitude, applied to
every image. A transform the model still reads correctly stays inside the data's distribution
and keeps the labels; one that breaks it (rotating an oriented texture, washing a faint stain
out) does not. Each probe costs one inference pass, not a training.

``retained`` puts every probe on one scale: the share of what the model learned that survives the
transform, ``(H - loss_augmented) / (H - loss_clean)``, where ``H`` is the loss of predicting the
class frequencies (the entropy of the class prior). 1 means untouched, 0 means back to knowing
only the class frequencies. `choose` keeps, per technique, the strongest magnitude that retains
at least ``keep``, and builds a policy from the ``top`` techniques that retain the most: the
transforms that best match the data's density, as Fast AutoAugment ranks its sub-policies.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from mfexp.data import ImageSet
from mfexp.loader import ArrayDataset
from mfexp.policy import Policy, seed_pipeline
from mfexp.train import predict


@dataclass(frozen=True)
class Probe:
    technique: str
    m: float
    loss: float  # mean cross-entropy of the model on the transformed validation images
    error: float  # error rate on them
    retained: float  # (H - loss) / (H - clean loss)


@dataclass(frozen=True)
class Scores:
    clean_loss: float
    clean_error: float
    prior_loss: float  # H: the loss of always predicting the training class frequencies
    probes: tuple[Probe, ...]
    skipped: tuple[str, ...] = ()  # techniques that do not act on single images (mixup, label smoothing)

    def to_dict(self) -> dict:
        return {"clean_loss": self.clean_loss, "clean_error": self.clean_error, "prior_loss": self.prior_loss,
                "probes": [asdict(p) for p in self.probes], "skipped": list(self.skipped)}

    @classmethod
    def from_dict(cls, d: Mapping) -> Scores:
        return cls(d["clean_loss"], d["clean_error"], d["prior_loss"], tuple(Probe(**p) for p in d["probes"]),
                   tuple(d.get("skipped", ())))


def prior_loss(train_labels: np.ndarray, val_labels: np.ndarray, num_classes: int) -> float:
    """Cross-entropy on the validation labels of always predicting the training class frequencies."""
    freq = np.bincount(train_labels, minlength=num_classes).astype(float)
    freq = np.clip(freq / freq.sum(), 1e-12, None)
    return float(-np.log(freq[val_labels]).mean())


def _loss_error(prob: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return float(-np.log(np.clip(prob[np.arange(len(y)), y], 1e-12, None)).mean()), float((prob.argmax(1) != y).mean())


def score(model: torch.nn.Module, val: ImageSet, train_labels: np.ndarray, targets: Mapping[str, str],
          magnitudes: Mapping[str, Sequence[float]], *, device: torch.device, channels_last: bool = False,
          batch_size: int = 128, repeats: int = 2, seed: int = 0) -> Scores:
    """Score every (technique, m) of ``magnitudes`` with ``model`` on ``val``.

    ``targets``: technique name -> its `mfexp.policy.Technique` class path (``augment=policy``'s
    ``_target_``). Each probe is the technique alone at ``rr = 1``; its loss is averaged over
    ``repeats`` differently seeded passes."""
    import cv2

    # OpenCV's thread pool, once started in this process, deadlocks the DataLoader workers that the
    # next training forks from it (the refit, or the sweep's next job): probe on one OpenCV thread,
    # as the workers themselves do (mfexp/loader.py).
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return _score(model, val, train_labels, targets, magnitudes, device, channels_last, batch_size, repeats, seed)
    finally:
        cv2.setNumThreads(threads)


def _score(model, val, train_labels, targets, magnitudes, device, channels_last, batch_size, repeats, seed) -> Scores:
    def run(pipeline, s: int) -> np.ndarray:
        if pipeline is not None:
            seed_pipeline(pipeline, s)
        loader = DataLoader(ArrayDataset(val.images, val.labels, pipeline), batch_size=batch_size, shuffle=False)
        return predict(model, loader, device, channels_last)[0]

    y = val.labels
    H = prior_loss(train_labels, y, len(val.classes))
    clean_loss, clean_error = _loss_error(run(None, 0), y)
    probes, skipped = [], []
    for name, values in magnitudes.items():
        for m in values:
            policy = Policy({name: {"_target_": targets[name], "m": float(m), "rr": 1.0}})
            if policy.techniques[name].level != "image":
                skipped.append(name)
                break
            pipeline = policy.image_pipeline(seed=seed)
            if pipeline is None:  # m = 0: the identity
                continue
            passes = [_loss_error(run(pipeline, seed + r), y) for r in range(max(1, repeats))]
            loss, error = float(np.mean([p[0] for p in passes])), float(np.mean([p[1] for p in passes]))
            retained = (H - loss) / (H - clean_loss) if H > clean_loss else float("nan")
            probes.append(Probe(name, float(m), loss, error, retained))
    return Scores(clean_loss, clean_error, H, tuple(probes), tuple(skipped))


@dataclass(frozen=True)
class Choice:
    policy: tuple[tuple[str, float], ...]  # (technique, m) in order of retained knowledge, most first
    admitted: dict[str, Probe]  # technique -> its strongest probe that retains >= keep
    rejected: dict[str, str]  # technique -> why it is not in the policy
    reason: str  # one line: what was chosen and why


def choose(scores: Scores, keep: float = 0.8, top: int = 3) -> Choice:
    """Per technique the strongest magnitude that retains ``keep`` of what the model learned; the ``top``
    techniques that retain the most form the policy. No policy when the model learned nothing to keep."""
    techniques = list(dict.fromkeys(p.technique for p in scores.probes))
    rejected = {t: "acts on batches or the loss, not on single images" for t in scores.skipped}
    if not scores.prior_loss > scores.clean_loss or not math.isfinite(scores.clean_loss):
        for t in techniques:
            rejected[t] = "not scored: the model is no better than the class frequencies"
        return Choice((), {}, rejected, f"density matching has nothing to go on: the baseline's val loss "
                      f"{scores.clean_loss:.4f} is not below the class-prior loss {scores.prior_loss:.4f}")
    admitted: dict[str, Probe] = {}
    for t in techniques:
        ok = [p for p in scores.probes if p.technique == t and p.retained >= keep]
        if ok:
            admitted[t] = max(ok, key=lambda p: (p.m, p.retained))
        else:
            worst = min((p for p in scores.probes if p.technique == t), key=lambda p: p.m)
            rejected[t] = f"breaks the data: retains {worst.retained:.0%} at m={worst.m:g} (< {keep:.0%})"
    # A probe can score above 100 % (the transform happens to help this model); past 100 % the larger m ranks first.
    ranked = sorted(admitted.values(), key=lambda p: (-min(p.retained, 1.0), -p.m))
    for p in ranked[top:]:
        rejected[p.technique] = f"admitted (retains {p.retained:.0%} at m={p.m:g}) but not among the top {top}"
    chosen = ranked[:top]
    shown = ", ".join(f"{p.technique} m={p.m:g} ({p.retained:.0%})" for p in chosen) or "none"
    reason = (f"density matching kept {shown}: the strongest magnitude retaining >= {keep:.0%} of what the baseline "
              f"learned (clean val loss {scores.clean_loss:.4f}, class prior {scores.prior_loss:.4f}), top {top}")
    return Choice(tuple((p.technique, p.m) for p in chosen), admitted, rejected, reason)


# ------------------------------------------------------------------ proposals: density proposes, full training disposes
PROPOSAL_KINDS = ("nested", "diverse", "rr", "stronger")


@dataclass(frozen=True)
class Proposal:
    """One candidate policy built from the density scores, to be trained at the full budget.

    ``techniques``: (technique, m, rr) in order of retained knowledge; ``mode`` is `mfexp.policy.Policy`'s
    (``trivial``: one technique per image at a random magnitude up to ``m``); ``adds``: for a nested step,
    the technique it adds to the step before (the per-technique chart's bar)."""

    name: str  # nested-1 .. nested-k, diverse, rr-1, stronger
    kind: str  # one of PROPOSAL_KINDS
    techniques: tuple[tuple[str, float, float], ...]
    mode: str = "all"
    adds: str = ""


def propose(scores: Scores, keep: float = 0.8, top: int = 2, rr: float = 0.5,
            kinds: Sequence[str] = ("nested", "diverse")) -> tuple[Choice, list[Proposal]]:
    """Candidate policies from the density scores, in priority order (the sweeper trains them until its budget).

    * ``nested``: the best technique alone, the best two, ... up to ``top`` (each at its strongest admitted
      magnitude, replacement rate ``rr``): what each added technique buys, measured by training;
    * ``diverse``: TrivialAugment-style (Müller & Hutter, ICCV 2021) restricted to the techniques density
      matching admits, each up to its admitted magnitude: strong, varied augmentation that pays off on long
      budgets, without the transforms that break the data;
    * ``rr``: the ``top`` techniques at rr = 1 instead of ``rr``;
    * ``stronger``: the ``top`` techniques one probed magnitude above the admitted one (where there is one).

    Policies already proposed (same settings) are not repeated. Raises ValueError for an unknown kind."""
    unknown = [k for k in kinds if k not in PROPOSAL_KINDS]
    if unknown:
        raise ValueError(f"unknown proposal kind(s) {unknown}: use {', '.join(PROPOSAL_KINDS)}")
    choice = choose(scores, keep, top)
    best = list(choice.policy)
    out: list[Proposal] = []

    def add(p: Proposal) -> None:
        if p.techniques and all((p.mode, p.techniques) != (q.mode, q.techniques) for q in out):
            out.append(p)

    for kind in kinds:
        if kind == "nested":
            for i in range(1, len(best) + 1):
                add(Proposal(f"nested-{i}", kind, tuple((t, m, rr) for t, m in best[:i]), adds=best[i - 1][0]))
        elif kind == "diverse" and best:
            ranked = sorted(choice.admitted.values(), key=lambda p: (-min(p.retained, 1.0), -p.m))
            add(Proposal("diverse", kind, tuple((p.technique, p.m, 1.0) for p in ranked), mode="trivial"))
        elif kind == "rr" and best and rr != 1.0:
            add(Proposal("rr-1", kind, tuple((t, m, 1.0) for t, m in best)))
        elif kind == "stronger" and best:
            def up(t: str, m: float) -> float:
                return min((p.m for p in scores.probes if p.technique == t and p.m > m), default=m)
            stronger = tuple((t, up(t, m), rr) for t, m in best)
            if stronger != tuple((t, m, rr) for t, m in best):
                add(Proposal("stronger", kind, stronger))
    return choice, out
