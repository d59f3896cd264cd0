"""The sweeper's configs in Hydra's ConfigStore: ``hydra/sweeper=mfexp`` and the ``search`` group's schema.

The settings are the job config's ``search`` node (presets in ``conf/search/``: ``search=quick``,
overrides ``search.order=[flip,cutout]``), not ``hydra.sweeper``: so Hydra's basic sweeper, which
accepts no unknown keys, still composes the same config.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class Rung:
    """One screening fidelity, relative to the full budget: a share of the epochs and of the training split."""

    epochs: float = 1.0  # x trainer.epochs (rounded up, at least 1)
    subset: float = 0.25  # data.subset for the screening runs


@dataclass
class SearchConf:
    # Techniques in search order (the report's parallel-coordinates axes follow it). Each stage
    # tries the product of its axis values from `space`, the earlier stages' winners fixed.
    order: List[str] = field(default_factory=list)
    # technique -> axis (m | rr | r) -> values. An axis left out keeps `defaults_for_unset`.
    space: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    # Successive halving: every candidate of a stage runs on rung 0, the best 1/eta go up a rung.
    rungs: List[Rung] = field(default_factory=lambda: [Rung()])
    eta: int = 3
    # A value is kept only if it lowers validation loss by more than this many noise units;
    # noise = |val-loss difference| of the no-policy screening run at `noise_seeds` seeds.
    noise_seeds: int = 2
    noise_factor: float = 1.0
    min_improvement: float = 0.0  # absolute floor on the required gain
    # Budget: the search stops opening new stages once any is exceeded (the final trainings still run).
    max_candidates: int = 60
    max_full_epochs: float = 0.0  # screening compute in full-data epochs; 0 = unlimited
    max_minutes: float = 0.0  # wall clock; 0 = unlimited
    # Full-budget runs at the end; the reference is the zero-search TrivialAugment-style policy.
    reference: bool = True
    reference_augment: str = "trivial"
    report: bool = True  # call the job config's `report` group (conf/report) when the sweep ends
    model_name: Optional[str] = None  # registry name; None: "<experiment>-classifier"
    # Backend: "staged" (screening trainings on data shares), "optuna" (TPE over the same space, same
    # budget) or "density" (no screening training: the baseline's model scores each technique).
    backend: str = "staged"
    optuna_trials: int = 12
    # density: probe each technique of `order` at these m (on/off ones at m=1) on the validation split;
    # keep per technique the strongest m that retains `density_keep` of what the baseline learned;
    # the `density_top` techniques that retain the most, each at rr=`density_rr`, make the nested
    # candidates (best alone, best two, ...); `density_proposals` lists the candidate kinds
    # (mfexp.density.propose: nested, diverse, rr, stronger), trained at full budget in that order
    # while their compute stays within `max_cost` full trainings (fit + refit, as the baseline ran).
    density_magnitudes: List[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    density_keep: float = 0.8
    density_top: int = 2
    density_rr: float = 0.5
    density_repeats: int = 2
    density_proposals: List[str] = field(default_factory=lambda: ["nested", "diverse"])
    max_cost: float = 1.5
    # Delivery (delivery.py): a policy other than the baseline is delivered only when this rule, on paired
    # validation outcomes, finds it better beyond noise at `delivery_level` (Bonferroni-corrected over the
    # challengers when `delivery_correct`).
    delivery_rule: str = "paired"
    delivery_level: float = 0.95
    delivery_correct: bool = True


@dataclass
class PolicySweeperConf:
    _target_: str = "hydra_plugins.mfexp_sweeper.sweeper.PolicySweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="mfexp", node=PolicySweeperConf, provider="mfexp")
ConfigStore.instance().store(group="search", name="search_schema", node=SearchConf, provider="mfexp")
