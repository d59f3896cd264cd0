"""Structured configs: one dataclass per config group, registered in Hydra's ConfigStore.

The YAML files in ``conf/<group>/`` extend these schemas (``defaults: [<group>_schema]``),
so a mistyped value (``trainer.epochs=ten``) fails at composition, before any work starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DataConfig:
    kind: str = "demo"  # "demo" (built-in, generated) or "folder" (class-per-folder images)
    root: Optional[str] = None  # folder data: DIR/train/<class>/*, optional DIR/test/<class>/*
    image_size: int = 64
    channels: Optional[int] = None  # None: 1 if every image is grayscale, else 3
    val_fraction: float = 0.2  # carved from train, stratified
    test_fraction: float = 0.2  # only used when DIR/test is absent
    subset: float = 1.0  # share of the training split used (cheap screening fidelity)
    seed: int = 0  # split seed, independent of the training seed
    good_class: Optional[str] = None  # the defect-free class, when there is one
    cache_dir: Optional[str] = None  # demo data cache; None: ~/.cache/mfexp
    max_image_pixels: int = 100_000_000  # a larger image is refused by name (a JPEG counts after DCT scaling)
    duplicates: str = "warn"  # byte-identical files across train / validation / test: warn | refuse
    # demo generator knobs (ignored by folder data)
    demo_per_class: Dict[str, int] = field(default_factory=dict)


@dataclass
class ModelConfig:
    name: str = "resnet18"  # any timm model name
    pretrained: bool = False  # no model hub here; use checkpoint for local weights
    checkpoint: Optional[str] = None  # local state_dict (.pth/.safetensors) to start from
    stem: str = "stock"  # ResNets: stock | nopool (no max-pool: 2x resolution) | small (3x3 stride-1 conv, no max-pool: 4x)
    drop_rate: float = 0.0


@dataclass
class TrainerConfig:
    epochs: int = 15
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.05
    decay_norms: bool = True  # decay norm weights and biases too (torch's default); false exempts them (timm's filter_bias_and_bn)
    momentum: float = 0.9  # sgd only
    schedule: str = "onecycle"  # onecycle | cosine | constant
    warmup_fraction: float = 0.3  # onecycle pct_start
    early_stopping_patience: int = 0  # epochs without val-loss improvement; 0 = off
    checkpoint: str = "last"  # weights kept: last (end of the schedule) | best (lowest validation loss)
    refit: bool = True  # then retrain on train + validation for the epochs kept (the model tested and logged)
    # An MLflow run id: a fit of this very policy on the same data (a sweep's full-budget candidate). Its
    # validation results and epochs stand for this run's, which only refits on train + validation.
    refit_from: Optional[str] = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    num_workers: int = -1  # DataLoader workers; -1 = chosen from the machine
    channels_last: str = "auto"  # auto (on CUDA) | true | false
    evaluate_test: bool = True  # screening candidates never touch the test split
    log_model: bool = True
    progress: str = "auto"  # auto (bar on a terminal, else lines) | bar | lines (a log line per epoch) | off; true = auto, false = lines
    progress_interval: float = 60.0  # lines: within an epoch, a line per this many seconds (0: epoch lines only)


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else sqlite store in ./mlruns
    store_dir: str = "mlruns"  # default local store, resolved to an absolute path
    experiment: str = "mfexp"
    run_name: Optional[str] = None
    role: str = "baseline"  # baseline | candidate | final | reference (set by the sweeper)
    parent_run_id: Optional[str] = None  # the sweep run; set by the sweeper
    tags: Dict[str, str] = field(default_factory=dict)  # extra run tags; a key without a dot is logged as mfexp.<key>


@dataclass
class InspectionConfig:
    """Defect-vs-good decisions (mfexp/inspection.py) and the gallery of mistakes (mfexp/gallery.py)."""

    target_escape_rate: float = 0.01  # the defect threshold lets at most this share of validation's defective parts pass
    gallery_size: int = 48  # test mistakes pictured per run (mistakes.png / .npz), worst first; 0: none


@dataclass
class AugmentConfig:
    """A policy: ``techniques`` maps a technique key to a `_target_` config with ``m`` and ``rr``."""

    _target_: str = "mfexp.policy.Policy"
    mode: str = "all"  # all: every technique applies with probability rr; trivial: one per image
    techniques: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SynthConfig:
    _target_: Optional[str] = None  # None: no synthetic data
    r: float = 0.0  # synthetic images = r x original training-set size


@dataclass
class ProbeConfig:
    """Density matching in this run (mfexp/density.py): the sweeper sets it on a density search's baseline."""

    targets: Dict[str, str] = field(default_factory=dict)  # technique -> its Technique class (augment=policy's _target_)
    magnitudes: Dict[str, List[float]] = field(default_factory=dict)  # technique -> m values to probe; empty: off
    repeats: int = 2  # differently seeded passes per probe


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    augment: Any = MISSING
    synth: Any = MISSING
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    inspection: InspectionConfig = MISSING
    search: Any = None  # policy-search settings, read by the sweeper (conf/search, hydra_plugins/mfexp_sweeper)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    report: Any = None  # what the sweeper calls when a sweep ends: a `_target_` and its options (conf/report)
    defaults: List[Any] = field(default_factory=list)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="tracking", name="tracking_schema", node=TrackingConfig)
    cs.store(group="inspection", name="inspection_schema", node=InspectionConfig)
    cs.store(group="augment", name="augment_schema", node=AugmentConfig)
    cs.store(group="synth", name="synth_schema", node=SynthConfig)
    # synth/gan_schema is the GAN plugin's own (plugins/hydra_plugins/mfexp_plugins_conf); search_schema the
    # sweeper's (plugins/hydra_plugins/mfexp_sweeper/config.py): the core imports no plugin.
