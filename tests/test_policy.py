"""Training policies (mfexp/policy.py, plugins/mfexp_plugins/augment.py, conf/augment/)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mfexp.errors import ConfigError  # noqa: E402
from mfexp.policy import Policy, Technique, policy_name  # noqa: E402
from mfexp_plugins import augment as aug  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGE = {
    "flip": aug.Flip, "d4": aug.D4, "rotate": aug.Rotate, "affine": aug.Affine, "distort": aug.Distort,
    "brightness_contrast": aug.BrightnessContrast, "gamma": aug.Gamma, "blur": aug.Blur,
    "sharpen": aug.Sharpen, "noise": aug.Noise, "cutout": aug.Cutout,
}  # fmt: skip
CONTINUOUS = [n for n, c in IMAGE.items() if c.continuous]


def _noise_images(n: int, size: int = 24, channels: int = 1, seed: int = 0) -> np.ndarray:
    # values 1..254: no flip/rotation leaves these unchanged, and cutout's black holes always show
    return np.random.default_rng(seed).integers(1, 255, (n, size, size, channels), dtype=np.uint8)


def _smooth_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    # Smooth textures: the change a geometric transform makes grows with its angle/shift.
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, (n, 6, 6)).astype(np.float32)
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in coarse]).clip(0, 255).astype(np.uint8)[..., None]


def _augment(policy: Policy, images: np.ndarray, seed: int) -> np.ndarray:
    pipeline = policy.image_pipeline(seed=seed)
    if pipeline is None:
        return images.copy()
    return np.stack([pipeline(image=img)["image"] for img in images])


def _all(m: float, rr: float, mode: str = "all") -> Policy:
    techniques = {n: c(m=m, rr=rr) for n, c in IMAGE.items()}
    techniques |= {"mixup": aug.MixUp(m=m, rr=rr), "cutmix": aug.CutMix(m=m, rr=rr), "ls": aug.LabelSmoothing(m=m)}
    return Policy(techniques, mode=mode)


# ---------------------------------------------------------------------------- identity
@pytest.mark.parametrize("m, rr", [(0.0, 1.0), (1.0, 0.0), (0.0, 0.0)])
@pytest.mark.parametrize("mode", ["all", "trivial"])
def test_m0_or_rr0_is_identity_pixel_for_pixel(m: float, rr: float, mode: str) -> None:
    images = _noise_images(8, channels=3)
    policy = _all(m, rr, mode) if m == 0.0 else Policy({n: c(m=m, rr=rr) for n, c in IMAGE.items()}, mode)
    assert policy.image_pipeline(seed=0) is None
    assert np.array_equal(_augment(policy, images, seed=0), images)
    x = torch.rand(6, 1, 8, 8)
    y = torch.arange(6) % 3
    x2, t = policy.mix_batch(x, y, 3, torch.Generator().manual_seed(0))
    assert torch.equal(x2, x) and torch.equal(t, torch.nn.functional.one_hot(y, 3).float())
    assert policy.canonical() == Policy().canonical() == {}
    assert policy_name(policy.canonical()) == Policy().name()


def test_only_active_techniques_enter_the_pipeline() -> None:
    policy = Policy({"flip": aug.Flip(m=0.5, rr=0.0), "noise": aug.Noise(m=0.5, rr=0.3), "blur": aug.Blur(m=0.0, rr=1.0)})
    pipeline = policy.image_pipeline()
    assert [type(t).__name__ for t in pipeline.transforms] == ["GaussNoise"]
    assert pipeline.transforms[0].p == pytest.approx(0.3)


# ---------------------------------------------------------------------------- rr and m
@pytest.mark.parametrize("name", list(IMAGE))
def test_share_of_changed_images_converges_to_rr(name: str) -> None:
    n, rr = 400, 0.3
    images = _noise_images(n)
    out = _augment(Policy({name: IMAGE[name](m=0.6, rr=rr)}), images, seed=1)
    share = np.mean([not np.array_equal(a, b) for a, b in zip(out, images)])
    assert abs(share - rr) < 4 * math.sqrt(rr * (1 - rr) / n), share  # 4 sigma: a fixed seed never flakes


def test_independent_techniques_fire_independently() -> None:
    # albumentations 2.0.8 seeds every child of A.Compose(seed=s) with the same s, which would make
    # equal-rr techniques fire together (share 0.5 here, not 0.75); the policy gives each node its own stream.
    n = 400
    images = _noise_images(n, size=16)
    both = Policy({"rotate": aug.Rotate(m=1, rr=0.5), "rotate_again": aug.Rotate(m=1, rr=0.5)})
    out = _augment(both, images, seed=3)
    changed = [not np.array_equal(a, b) for a, b in zip(out, images)]
    assert abs(np.mean(changed) - 0.75) < 4 * math.sqrt(0.75 * 0.25 / n)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(IMAGE))
def test_shape_and_dtype_are_kept(name: str, channels: int) -> None:
    images = _noise_images(2, size=20, channels=channels)
    out = _augment(Policy({name: IMAGE[name](m=1.0, rr=1.0)}), images, seed=0)
    assert out.shape == images.shape and out.dtype == np.uint8


@pytest.mark.parametrize("name", CONTINUOUS)
def test_magnitude_is_monotone(name: str) -> None:
    images = _smooth_images(40)
    change = [
        np.abs(_augment(Policy({name: IMAGE[name](m=m, rr=1.0)}), images, seed=0).astype(int) - images).mean()
        for m in (0.25, 0.5, 1.0)
    ]
    assert 0 < change[0] < change[1] < change[2], change


def test_trivial_mode_changes_every_image_with_one_technique() -> None:
    policy = Policy({n: c(m=1.0, rr=1.0) for n, c in IMAGE.items()}, mode="trivial")
    top = policy.image_pipeline(seed=0).transforms
    assert len(top) == 1 and len(top[0].transforms) == len(IMAGE)
    images = _noise_images(60)
    out = _augment(policy, images, seed=0)
    assert np.mean([not np.array_equal(a, b) for a, b in zip(out, images)]) > 0.9  # tiny-m levels may not show


# ---------------------------------------------------------------------------- batch level
@pytest.mark.parametrize("technique", [aug.MixUp, aug.CutMix])
def test_mix_targets_sum_to_one_and_match_the_mixing(technique: type) -> None:
    n = 8
    # example i is the constant image i with label i: the mixed image's mean then equals the
    # target-weighted label, exactly when the targets follow the real mixing proportions.
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 16, 16).contiguous()
    y = torch.arange(n)
    policy = Policy({"mix": technique(m=1.0, rr=1.0)})
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        xm, t = policy.mix_batch(x, y, n, g)
        assert torch.allclose(t.sum(1), torch.ones(n))
        assert torch.allclose(xm.mean(dim=(1, 2, 3)), t @ torch.arange(n, dtype=torch.float32), atol=1e-5)
        assert (t.max(1).values >= 0.5 - 1e-6).all()  # lam folded onto [0.5, 1]
        assert not torch.equal(xm, x)


def test_batch_rr_is_the_share_of_batches_and_label_smoothing_applies() -> None:
    policy = Policy({"mixup": aug.MixUp(m=1.0, rr=0.25), "ls": aug.LabelSmoothing(m=0.5)})
    assert policy.label_smoothing == pytest.approx(0.1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    mixed = 0
    for _ in range(400):
        xm, t = policy.mix_batch(x, y, 3, g)
        assert torch.allclose(t.sum(1), torch.ones(4)) and t.min() >= 0.1 / 3 - 1e-6
        mixed += not torch.equal(xm, x)
    assert abs(mixed / 400 - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 400)


# ---------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("mode", ["all", "trivial"])
def test_same_seed_same_augmented_batch(mode: str) -> None:
    policy = _all(0.7, 0.6, mode)
    images = _noise_images(16, channels=3)
    a, b, c = (_augment(policy, images, seed=s) for s in (5, 5, 6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 4
    r1 = policy.mix_batch(x, y, 4, torch.Generator().manual_seed(1))
    r2 = policy.mix_batch(x, y, 4, torch.Generator().manual_seed(1))
    assert torch.equal(r1[0], r2[0]) and torch.equal(r1[1], r2[1])


# ---------------------------------------------------------------------------- identity of a policy
def _example() -> Policy:
    return Policy({"flip": aug.Flip(m=0.3, rr=0.5), "noise": aug.Noise(m=0.25, rr=0.125), "mixup": aug.MixUp(0.2, 0.1)})


def test_policy_name_is_stable_across_processes() -> None:
    code = (
        "from mfexp.policy import Policy; from mfexp_plugins import augment as a;"
        "p = Policy({'noise': a.Noise(m=0.25, rr=0.125), 'mixup': a.MixUp(0.2, 0.1), 'flip': a.Flip(m=0.3, rr=0.5)});"
        "print(p.name({'synthetic': {'r': 0.1}}))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])}
    env["PYTHONHASHSEED"] = "12345"  # a different str-hash seed must not matter
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True)
    name = _example().name({"synthetic": {"r": 0.1}})
    assert out.stdout.strip() == name
    assert len(name.split("-")) == 3


def test_policy_name_changes_when_any_value_changes() -> None:
    base = _example()
    names = {base.name(), base.name({"synthetic": {"r": 0.1}}), Policy(dict(base.techniques), mode="trivial").name()}
    for key in ("flip", "noise", "mixup"):
        for field in ("m", "rr"):
            techniques = dict(base.techniques)
            t = techniques[key]
            values = {"m": t.m, "rr": t.rr, field: round(getattr(t, field) + 0.001, 3)}
            techniques[key] = type(t)(**values)
            names.add(Policy(techniques).name())
    assert len(names) == 3 + 6
    assert base.name({"synthetic": {"r": 0.0}}) == base.name()  # r = 0 is no synthetic data
    # order, insignificant digits and identity techniques do not change the name
    same = Policy({"mixup": aug.MixUp(0.2, 0.1), "blur": aug.Blur(0.0, 0.7), "noise": aug.Noise(0.2500001, 0.125), "flip": aug.Flip(0.3, 0.5)})
    assert same.name() == base.name() and same.canonical() == base.canonical()


def test_params_and_describe() -> None:
    policy = Policy({"flip": aug.Flip(m=0.3, rr=0.5), "blur": aug.Blur(), "ls": aug.LabelSmoothing(m=0.5)})
    assert policy.params() == {
        "policy.flip.m": 0.3, "policy.flip.rr": 0.5, "policy.blur.m": 0.0, "policy.blur.rr": 0.0,
        "policy.ls.m": 0.5, "policy.ls.rr": 0.0,
    }  # fmt: skip
    d = json.loads(json.dumps(policy.describe()))
    assert d["image_pipeline"]["transform"]["transforms"][0]["p"] == 0.5
    assert d["loss"]["ls"]["epsilon"] == pytest.approx(0.1) and d["name"] == policy.name()


# ---------------------------------------------------------------------------- bad values
class _Misspelt(Technique):
    def transform(self, m: float):
        import albumentations as A

        return A.GaussNoise(std_rang=(0.1, 0.2), p=1.0)


class _BadRange(Technique):
    def transform(self, m: float):
        import albumentations as A

        return A.GaussNoise(std_range=(0.5, 0.1 * m + 5), p=1.0)


@pytest.mark.parametrize("m, rr", [(1.5, 0.5), (0.5, -0.1), (float("nan"), 0.5), ("x", 0.5), (True, 0.5)])
def test_values_outside_unit_interval_fail_naming_the_technique(m, rr) -> None:
    with pytest.raises(ConfigError, match=r"Rotate.*(m|rr)="):
        aug.Rotate(m=m, rr=rr)


@pytest.mark.filterwarnings("ignore:Argument")  # albumentations warns, then strict=True raises
@pytest.mark.parametrize("cls", [_Misspelt, _BadRange])
def test_transform_rejecting_its_arguments_fails_naming_the_technique(cls: type) -> None:
    with pytest.raises(ConfigError, match=r"^augment technique 'mine' .*GaussNoise|^augment technique 'mine' .*std") as e:
        Policy({"mine": cls(m=0.5, rr=0.5)})
    assert "\n" not in str(e.value)


def test_unknown_technique_and_mode_fail() -> None:
    with pytest.raises(ConfigError, match="'fliip'"):
        Policy({"fliip": {"m": 0.3, "rr": 0.5}})
    with pytest.raises(ConfigError, match="augment.mode"):
        Policy({}, mode="random")


# ---------------------------------------------------------------------------- Hydra presets
def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from mfexp.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose("config", overrides=overrides)


def test_presets_compose_and_instantiate(tmp_path: Path) -> None:
    from hydra.errors import ConfigCompositionException, InstantiationException
    from hydra.utils import instantiate

    policy = instantiate(_compose(["augment=policy", "augment.techniques.rotate.m=0.3", "augment.techniques.rotate.rr=0.5"]).augment)
    assert set(policy.techniques) >= set(IMAGE) | {"mixup", "cutmix", "label_smoothing"}
    assert policy.canonical() == {"rotate": {"m": 0.3, "rr": 0.5}}
    assert instantiate(_compose(["augment=policy"]).augment).name() == instantiate(_compose(["augment=none"]).augment).name()
    trivial = instantiate(_compose(["augment=trivial", "augment.techniques.cutout.rr=0"]).augment)
    assert trivial.mode == "trivial" and "cutout" not in trivial.canonical() and "rotate" in trivial.canonical()
    with pytest.raises(ConfigCompositionException, match="fliip"):
        _compose(["augment=policy", "augment.techniques.fliip.m=0.3"])
    with pytest.raises(InstantiationException) as e:
        instantiate(_compose(["augment=policy", "augment.techniques.rotate.rr=2"]).augment)
    assert isinstance(e.value.__cause__, ConfigError) and "Rotate" in str(e.value.__cause__)

    # A user's technique is one YAML file in their own config dir on hydra.searchpath.
    user = tmp_path / "augment" / "technique"
    user.mkdir(parents=True)
    (user / "mine.yaml").write_text("_target_: mfexp_plugins.augment.Sharpen\nm: 0.4\nrr: 0.2\n")
    cfg = _compose(["augment=policy", f"hydra.searchpath=[file://{tmp_path}]", "+augment/technique@augment.techniques.mine=mine"])
    assert instantiate(cfg.augment).canonical() == {"mine": {"m": 0.4, "rr": 0.2}}
