"""Which training levers matter: mfexp's training core on the whole training folder, trainer settings varied.

    .venv/bin/python bench/recipe_levers.py --seeds 0 20 --variant b64='{"batch_size": 64, "lr": 0.002}' \\
        --variant b32='{"batch_size": 32, "lr": 0.001}' --out bench/results/recipe-levers-imb15.json

No split, no refit, no MLflow, no subprocess: `mfexp.job.train` (the loop `python -m mfexp` runs)
on train + validation of `bench/recipe.py`'s imbalanced NEU cut, `trainer.refit=false`, scored on
the cut's test folder. That is what the default's refit trains, without the first fit that only
measures the run, so a lever is seen at half the cost and with many seeds. Each `--variant` is a
JSON dict of `TrainerConfig` fields over the defaults. Seeds set the model's initial weights and
the shuffling, as `trainer.seed` does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe  # noqa: E402  (the imbalanced cut and the interval)

from mfexp import data as data_mod  # noqa: E402
from mfexp.config import ModelConfig, TrainerConfig  # noqa: E402
from mfexp.job import evaluate, new_model, train  # noqa: E402
from mfexp.policy import Policy  # noqa: E402


def core_error(root: Path, good: str, seed: int, overrides: dict, epochs: int) -> float:
    """Test error of mfexp's training core on the whole training folder (train + validation)."""
    s = data_mod.load_splits(str(root), 64, None, 0.2, 0.2, seed, good)
    full = data_mod.ImageSet(np.concatenate([s.train.images, s.val.images]),
                             np.concatenate([s.train.labels, s.val.labels]), s.classes)
    t = OmegaConf.structured(TrainerConfig(**{"epochs": epochs, "seed": seed, "refit": False, "progress": False,
                                              "evaluate_test": False, **overrides}))
    cfg = OmegaConf.create({"trainer": t, "model": OmegaConf.structured(ModelConfig()), "data": {"image_size": 64}})
    torch.manual_seed(seed)
    np.random.seed(seed)
    trained = train(cfg, new_model(cfg, full), full, s.test, Policy())
    prob, y = evaluate(trained, s.test, t.batch_size)
    return float((prob.argmax(1) != y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=recipe.NEU)
    ap.add_argument("--good", default="rolled-in_scale")
    ap.add_argument("--keep", type=float, default=0.15)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, nargs=2, default=[0, 20], metavar=("FIRST", "STOP"), help="range(FIRST, STOP)")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME=JSON")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    variants = {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.variant)}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = recipe.imbalanced_cut(args.data, Path(tmp) / "neu-imb", args.good, args.keep)
        for seed in range(*args.seeds):
            for name, overrides in variants.items():
                start = time.perf_counter()
                err = core_error(root, args.good, seed, overrides, args.epochs)
                rows.append({"variant": name, "overrides": overrides, "seed": seed, "epochs": args.epochs,
                             "test_error_rate": err, "wall_seconds": time.perf_counter() - start, "load": os.getloadavg()[0]})
                print(json.dumps(rows[-1]), flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({"argv": sys.argv, "rows": rows}, indent=1))
    for name in variants:
        errs = [100 * r["test_error_rate"] for r in rows if r["variant"] == name]
        m, h = recipe.interval(errs)
        print(f"{name}: {m:.2f} ± {h:.2f} % over {len(errs)} seeds")


if __name__ == "__main__":
    main()
