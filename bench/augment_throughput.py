"""Augmentation throughput: images/s of the full policy (every image technique, m = 1, rr = 1)
in one process, i.e. what one DataLoader worker can feed.

    NO_ALBUMENTATIONS_UPDATE=1 .venv/bin/python bench/augment_throughput.py --image-size 64 --channels 1 --seconds 10

Images: the NEU surface-defect training set, read in place from ../shared/data/neu-surface-defect
(never copied); random uint8 images when it is absent.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mfexp.policy import Policy  # noqa: E402
from mfexp_plugins import augment as aug  # noqa: E402

NEU_TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "neu-surface-defect" / "train"
MAX_IMAGES = 256  # enough variety; keeps start-up short

FULL_POLICY = {
    "flip": aug.Flip, "d4": aug.D4, "rotate": aug.Rotate, "affine": aug.Affine, "distort": aug.Distort,
    "brightness_contrast": aug.BrightnessContrast, "gamma": aug.Gamma, "blur": aug.Blur,
    "sharpen": aug.Sharpen, "noise": aug.Noise, "cutout": aug.Cutout,
}  # fmt: skip


def _images(image_size: int, channels: int) -> tuple[list[np.ndarray], str]:
    paths = sorted(NEU_TRAIN.glob("*/*.png"))[::6][:MAX_IMAGES] if NEU_TRAIN.is_dir() else []
    images = []
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        if img.shape != (image_size, image_size):
            img = cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_AREA)
        images.append(np.repeat(img[..., None], channels, axis=2))
    if images:
        return images, f"neu-surface-defect train ({len(images)} images)"
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (image_size, image_size, channels), dtype=np.uint8) for _ in range(64)], "random"


def measure_augment_throughput(image_size: int = 64, channels: int = 1, seconds: float = 10.0) -> float:
    """Images/s of the full policy at m = 1, rr = 1 on uint8 HWC images, single process, one cv2 thread."""
    images, _ = _images(image_size, channels)
    pipeline = Policy({name: cls(m=1.0, rr=1.0) for name, cls in FULL_POLICY.items()}).image_pipeline(seed=0)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # a DataLoader worker should not fan out; restore for the caller
    try:
        for img in images[:16]:  # warm-up: first calls build caches and lookup tables
            pipeline(image=img)
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for img in images:
                pipeline(image=img)
            done += len(images)
        return done / elapsed
    finally:
        cv2.setNumThreads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    _, source = _images(args.image_size, args.channels)
    rate = measure_augment_throughput(args.image_size, args.channels, args.seconds)
    print(json.dumps({
        "images_per_s_per_worker": round(rate, 1), "image_size": args.image_size, "channels": args.channels,
        "seconds": args.seconds, "data": source, "cpu": platform.processor() or platform.machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
