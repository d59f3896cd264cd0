"""Training throughput: images/s of mfexp's train loop against a bare timm + torch loop.

    .venv/bin/python bench/train_throughput.py --rounds 3

Both sides train the same model (one `mfexp.model.build_model` ResNet-18, each side starting from
the same initial weights) on the same tensors (the NEU training split, decoded once by
`mfexp.data.load_splits`, read in place from ../shared/data/neu-surface-defect), with the same
batch size, optimizer settings and torch threads, in one process:

* A, mfexp: `mfexp.loader.make_loader` (uint8 arrays, shuffled, converted to float on the fly)
  + `mfexp.train.fit` (policy hook, soft-target cross-entropy, finite-loss check, one-cycle
  schedule, progress bar). The clock runs over fit's train loop (a pass-through wrapper around
  the loader sees its first and last batch), not over the validation pass after it.
* B, bare: float tensors prepared once, `torch.randperm` batches, `F.cross_entropy`, AdamW,
  OneCycleLR: the shortest loop that does the same training step, timed over the same span.

Runs alternate (one epoch each, after an untimed warm-up of both) in the order A B, B A, A B, ...,
so load from other processes on a shared machine hits both sides alike and neither always goes
first. `ratio_including_setup_and_validation` also counts what the whole `fit` call costs around
the loop (optimizer set-up, a one-image validation pass, the best-epoch snapshot). Reported: images/s per run (wall
clock, and per CPU second of this process), the median of each side, and the ratio A/B of the
medians (goal >= 0.95).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from mfexp.config import TrainerConfig  # noqa: E402
from mfexp.data import ImageSet, load_splits  # noqa: E402
from mfexp.loader import make_loader  # noqa: E402
from mfexp.model import build_model  # noqa: E402
from mfexp.policy import Policy  # noqa: E402
from mfexp.train import fit  # noqa: E402

NEU_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "neu-surface-defect"


def _data(root: Path, image_size: int, max_images: int | None) -> ImageSet:
    if not (root / "train").is_dir():
        raise SystemExit(f"train_throughput: no image folder at {root} (give --data DIR with DIR/train/<class>/*)")
    train = load_splits(str(root), image_size).train
    if max_images and max_images < len(train):
        idx = np.sort(np.random.default_rng(0).permutation(len(train))[:max_images])
        train = train.take(idx)
    return train


class Clock:
    """Wall-clock seconds and this process's CPU seconds (all its threads) since start."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


class TimedLoader:
    """Passes mfexp's DataLoader through unchanged and times the train loop that consumes it:
    from the request for the first batch until the loop asks past the last one, i.e. loading,
    forward, backward, optimizer and schedule steps; not the validation pass after it."""

    def __init__(self, loader) -> None:
        self.loader, self.wall, self.cpu = loader, 0.0, 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        clock = Clock()
        yield from self.loader
        self.wall, self.cpu = clock.read()


def mfexp_epoch(model: torch.nn.Module, train: ImageSet, t, seed: int) -> tuple[int, float, float, float]:
    """One epoch of `mfexp.train.fit` over `mfexp.loader.make_loader`.

    Returns (images trained, train-loop wall s, train-loop CPU s, wall s of the whole fit call).
    """
    loader = TimedLoader(make_loader(train, t.batch_size, train=True, num_workers=0, seed=seed))
    val = make_loader(train.take(np.arange(1)), t.batch_size, train=False)
    clock = Clock()
    fit(model, loader, val, Policy(), len(train.classes), t, torch.device("cpu"), False)
    return len(loader) * t.batch_size, loader.wall, loader.cpu, clock.read()[0]


def bare_epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, t, seed: int,
               max_batches: int | None = None) -> tuple[int, float, float, float]:
    """One epoch of the plain timm + torch loop over float tensors already in memory; as mfexp_epoch."""
    n_batches = len(y) // t.batch_size  # full batches only, as mfexp's drop_last
    if max_batches:
        n_batches = min(n_batches, max_batches)
    total = Clock()
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.lr, total_steps=n_batches, pct_start=t.warmup_fraction)
    model.train()
    clock = Clock()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    for i in range(n_batches):
        idx = perm[i * t.batch_size:(i + 1) * t.batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    wall, cpu = clock.read()
    return n_batches * t.batch_size, wall, cpu, total.read()[0]


def measure(root: Path = NEU_ROOT, image_size: int = 64, batch_size: int = 64, model_name: str = "resnet18",
            stem: str = "stock", threads: int = 0, rounds: int = 3, max_images: int | None = None,
            progress: bool = True) -> dict:
    if threads:
        torch.set_num_threads(threads)
    train = _data(root, image_size, max_images)
    channels = train.images.shape[-1]
    pixels = train.images.reshape(-1, channels) / 255.0
    torch.manual_seed(0)
    initial = build_model(model_name, channels, len(train.classes), image_size, pixels.mean(0), pixels.std(0),
                          stem=stem)
    t = OmegaConf.structured(TrainerConfig(epochs=1, batch_size=batch_size, progress=progress, seed=0))
    x = torch.from_numpy(np.ascontiguousarray(train.images.transpose(0, 3, 1, 2))).float().div_(255)  # B's tensors
    y = torch.from_numpy(train.labels)

    # Untimed warm-up: first calls create the oneDNN kernels and allocator pools.
    warm = train.take(np.arange(min(len(train), 3 * batch_size)))
    mfexp_epoch(copy.deepcopy(initial), warm, t, seed=0)
    bare_epoch(copy.deepcopy(initial), x, y, t, seed=0, max_batches=3)

    runs: list[dict] = []
    load_before = os.getloadavg()
    for r in range(rounds):
        for side in ("mfexp", "bare") if r % 2 == 0 else ("bare", "mfexp"):  # A B | B A | A B ...: no order bias
            model = copy.deepcopy(initial)
            n, wall, cpu, call = mfexp_epoch(model, train, t, seed=r) if side == "mfexp" else bare_epoch(model, x, y, t, seed=r)
            runs.append({"round": r + 1, "side": side, "images": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                         "call_wall_s": round(call, 3), "images_per_s": round(n / wall, 2), "images_per_cpu_s": round(n / cpu, 2)})
            print(f"round {r + 1} {side:5s}: {n} images in {wall:7.2f} s wall, {cpu:7.2f} s CPU = "
                  f"{n / wall:8.1f} images/s, {n / cpu:8.1f} images/CPU-s", flush=True)
    load_after = os.getloadavg()

    def side(key: str, name: str) -> list[float]:
        return [x[key] for x in runs if x["side"] == name]

    a, b = side("images_per_s", "mfexp"), side("images_per_s", "bare")
    ac, bc = side("images_per_cpu_s", "mfexp"), side("images_per_cpu_s", "bare")
    return {
        "ratio_of_medians": round(statistics.median(a) / statistics.median(b), 4),
        "ratio_per_round": [round(i / j, 4) for i, j in zip(a, b)],
        # each round's A and B ran back to back: the median of their ratios cancels slow drift in the load
        "ratio_median_of_rounds": round(statistics.median(i / j for i, j in zip(a, b)), 4),
        "ratio_including_setup_and_validation": round(
            statistics.median(n["images"] / n["call_wall_s"] for n in runs if n["side"] == "mfexp")
            / statistics.median(n["images"] / n["call_wall_s"] for n in runs if n["side"] == "bare"), 4),
        "mfexp_images_per_s_median": statistics.median(a),
        "bare_images_per_s_median": statistics.median(b),
        # CPU time is what each side consumed itself: on a shared machine it is far less disturbed
        # by the other processes than wall time (with one torch thread it is the work done).
        "cpu_ratio_of_medians": round(statistics.median(ac) / statistics.median(bc), 4),
        "cpu_ratio_per_round": [round(i / j, 4) for i, j in zip(ac, bc)],
        "cpu_ratio_median_of_rounds": round(statistics.median(i / j for i, j in zip(ac, bc)), 4),
        "runs": runs,
        "setup": {"data": str(root), "train_images": len(train), "image_size": image_size, "channels": channels,
                  "model": model_name, "stem": stem, "batch_size": batch_size,
                  "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                  "cores": os.cpu_count(), "load_average_before": [round(v, 2) for v in load_before],
                  "load_average_after": [round(v, 2) for v in load_after]},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=NEU_ROOT, help="image folder with train/<class>/* (default: NEU, read in place)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--stem", default="stock", choices=["stock", "nopool", "small"])
    p.add_argument("--threads", type=int, default=0, help="torch threads for both sides (0: torch's default)")
    p.add_argument("--rounds", type=int, default=3, help="A, B pairs (one epoch each)")
    p.add_argument("--max-images", type=int, default=None, help="train on a random subset (quick runs)")
    p.add_argument("--no-progress", action="store_true", help="mfexp side without its progress bar")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()
    result = measure(args.data, args.image_size, args.batch_size, args.model, args.stem, args.threads, args.rounds,
                     args.max_images, not args.no_progress)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print(f"ratio mfexp/bare: {result['ratio_of_medians']:.3f} (medians, wall clock), "
          f"{result['ratio_median_of_rounds']:.3f} (median of the rounds' ratios), "
          f"{result['cpu_ratio_of_medians']:.3f} (medians, per CPU second)")


if __name__ == "__main__":
    main()
