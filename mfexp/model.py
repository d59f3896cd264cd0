"""The classifier: any timm model, with input normalisation baked in so logged models take raw [0, 1] pixels."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from mfexp.errors import ConfigError

log = logging.getLogger(__name__)


class Normalize(nn.Module):
    """Per-channel standardisation with the training set's statistics, stored in the model."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Sequential):
    """normalize -> backbone; input float (N, C, H, W) in [0, 1], output logits (N, K)."""

    def __init__(self, normalize: Normalize, backbone: nn.Module):
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone


class Probabilities(nn.Module):
    """What gets logged to MLflow: class probabilities, the form a user of the served model wants."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(x), dim=1)


STEMS = {"stock": 1, "nopool": 2, "small": 4}  # stem -> how much less it downsamples than timm's own


def _stem(model: nn.Module, in_chans: int, stem: str) -> None:
    # Stock ResNet stems downsample 4x before the first block; on 32-64 px images that leaves a
    # 1x1-2x2 final map. `nopool` drops the max-pool (2x the resolution, ~4x the compute);
    # `small` is a 3x3 stride-1 conv without max-pool (4x the resolution, ~16x the compute).
    if stem not in STEMS:
        raise ConfigError(f"model.stem={stem}: use one of {', '.join(STEMS)}")
    if stem == "stock":
        return
    if not (hasattr(model, "conv1") and hasattr(model, "maxpool") and isinstance(model.conv1, nn.Conv2d)):
        raise ConfigError(f"model.stem={stem}: supported for timm ResNet-style models (conv1 + maxpool), not {type(model).__name__}")
    if stem == "small":
        model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()


def _load_checkpoint(model: nn.Module, path: str) -> None:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"model.checkpoint={path}: file does not exist")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any loader failure is the file's fault
        raise ConfigError(f"model.checkpoint={path}: cannot be read ({type(e).__name__}: {e})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    # The classifier head (and a 1-channel stem on a 3-channel checkpoint) differ in shape: skip them.
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(usable))
    model.load_state_dict(usable, strict=False)
    log.info("checkpoint %s: loaded %d tensors, skipped %d (%s)", p, len(usable), len(skipped), ", ".join(skipped[:4]))


def build_model(
    name: str,
    in_chans: int,
    num_classes: int,
    image_size: int,
    mean: np.ndarray,
    std: np.ndarray,
    pretrained: bool = False,
    checkpoint: str | None = None,
    stem: str = "stock",
    drop_rate: float = 0.0,
) -> Classifier:
    if not timm.is_model(name):
        raise ConfigError(f"model.name={name}: not a timm model (see timm.list_models())")
    try:
        backbone = timm.create_model(name, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate)
    except Exception as e:  # noqa: BLE001 - hub / weights errors
        if pretrained:
            raise ConfigError(
                f"model.pretrained=true: weights for {name} could not be fetched ({type(e).__name__}); use model.checkpoint=PATH"
            ) from None
        raise ConfigError(f"model.name={name}: timm cannot build it ({type(e).__name__}: {e})") from None
    _stem(backbone, in_chans, stem)
    if checkpoint:
        _load_checkpoint(backbone, checkpoint)
    reduction = _reduction(backbone) // STEMS[stem]
    if image_size < reduction:
        raise ConfigError(
            f"data.image_size={image_size}: too small for {name} (downsamples {reduction}x); use a larger size or model.stem=nopool|small"
        )
    if image_size // reduction < 4 and stem != "small":
        log.info("%s leaves a %dx%d final feature map at %d px; model.stem=nopool|small keeps more detail",
                 name, image_size // reduction, image_size // reduction, image_size)
    return Classifier(Normalize(mean, std), backbone)


def _reduction(backbone: nn.Module) -> int:
    """The stock model's total downsampling (timm's feature_info), 1 when it does not say."""
    info = getattr(backbone, "feature_info", None)
    if info:
        return int(info[-1]["reduction"] if isinstance(info, list) else info.reduction()[-1])
    return 1
