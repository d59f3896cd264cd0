"""The default recipe against a plain timm + torch loop, on NEU and on an imbalanced cut of it.

    .venv/bin/python bench/recipe.py --epochs 15 --seeds 0 1 2 --out bench/results/recipe-15.json
    .venv/bin/python bench/recipe.py --table bench/results/recipe-*.json     # the table of saved runs

For every (data set, epochs, seed) it trains, one at a time:

* **mfexp**: `python -m mfexp data=folder data.root=DIR augment=none trainer.epochs=E
  trainer.seed=S data.seed=S` at its defaults (plus any `--variant NAME='overrides'`), in a
  subprocess, tracked in a throw-away SQLite store, and reads the test error back from MLflow.
* **plain**: `plain_loop` below: ~40 lines of timm + torch and nothing of mfexp, trained on the
  *whole* training folder for the same number of epochs (what a user writes in an afternoon);
  `--plain-variant NAME='{"batch": 32}'` adds a column of it with other `plain_loop` arguments.

Data sets: `neu` is ../shared/data/neu-surface-defect as shipped (6 balanced classes); `neu-imb`
is a cut made on the fly as a tree of symbolic links (read in place, nothing copied): one class
kept whole as the defect-free majority, `--keep` (15 %) of each other class, in train and test
alike. Reported per column: test error mean and 95 % t-interval over seeds, and wall seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NEU = ROOT.parent / "shared" / "data" / "neu-surface-defect"


def plain_loop(root: Path, epochs: int, seed: int, lr: float = 2e-3, batch: int = 64, decay_norms: bool = True) -> float:
    """Test error of a plain loop: stock timm ResNet-18, AdamW + one-cycle, whole train folder, last epoch.
    ``decay_norms=False`` exempts norms and biases from weight decay (timm's filter_bias_and_bn)."""
    import timm
    import torch
    import torch.nn.functional as F
    from PIL import Image

    def load(split):
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / split / c).iterdir())]
        x = np.stack([np.asarray(Image.open(f).convert("L").resize((64, 64)), np.float32) / 255 for f, _ in files])
        return torch.from_numpy(x)[:, None], torch.tensor([i for _, i in files]), len(classes)

    torch.manual_seed(seed)
    x, y, k = load("train")
    xt, yt, _ = load("test")
    mean, std = x.mean(), x.std()
    x, xt = (x - mean) / std, (xt - mean) / std
    model = timm.create_model("resnet18", pretrained=False, in_chans=1, num_classes=k)
    steps = epochs * (len(y) // batch)
    params = model.parameters() if decay_norms else [
        {"params": [p for p in model.parameters() if p.ndim > 1]},
        {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y))
        for i in range(len(y) // batch):
            idx = perm[i * batch:(i + 1) * batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xt[i:i + 256]).argmax(1) for i in range(0, len(yt), 256)])
    return float((pred != yt).float().mean())


def imbalanced_cut(src: Path, dst: Path, good: str, keep: float) -> Path:
    """A symlink tree of `src`: class `good` whole, `keep` of every other class (sorted files, seed 0)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in sorted(p.name for p in (src / split).iterdir() if p.is_dir()):
            files = sorted((src / split / cls).iterdir())
            if cls != good:
                files = sorted(rng.choice(files, max(1, round(keep * len(files))), replace=False))
            (dst / split / cls).mkdir(parents=True, exist_ok=True)
            for f in files:
                (dst / split / cls / f.name).symlink_to(f.resolve())
    return dst


def mfexp_run(root: Path, epochs: int, seed: int, overrides: str, store: Path, good: str | None) -> dict:
    """One `python -m mfexp` run in a subprocess; its test metrics read back from MLflow."""
    import mlflow

    uri = f"sqlite:///{store}/mlflow.db"
    cmd = [sys.executable, "-m", "mfexp", "data=folder", f"data.root={root}", "augment=none",
           f"trainer.epochs={epochs}", f"trainer.seed={seed}", f"data.seed={seed}", f"tracking.uri={uri}",
           "tracking.experiment=recipe", "trainer.progress=off", f"hydra.run.dir={store}/hydra",
           *([f"data.good_class={good}"] if good else []), *shlex.split(overrides)]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"recipe: mfexp failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("recipe")
    run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    return {k: run.data.metrics[k] for k in ("test_error_rate", "test_macro_f1", "best_epoch", "train_seconds")}


def interval(xs: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval (0 for a single value)."""
    from scipy import stats

    m = float(np.mean(xs))
    if len(xs) < 2:
        return m, 0.0
    return m, float(stats.t.ppf(0.975, len(xs) - 1) * np.std(xs, ddof=1) / np.sqrt(len(xs)))


def table(rows: list[dict]) -> str:
    """Markdown: one line per (set, epochs, column), test error mean ± 95 % interval over seeds."""
    out = ["| set | epochs | column | test error % (mean ± 95 % CI) | seeds | wall s per run |", "|---|---:|---|---:|---:|---:|"]
    keys = dict.fromkeys((r["set"], r["epochs"], r["column"]) for r in rows)
    for key in sorted(keys, key=lambda k: (k[0], k[1])):
        sel = [r for r in rows if (r["set"], r["epochs"], r["column"]) == key]
        m, h = interval([100 * r["test_error_rate"] for r in sel])
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {m:.1f} ± {h:.1f} | {len(sel)} | {np.mean([r['wall_seconds'] for r in sel]):.0f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=NEU)
    ap.add_argument("--sets", nargs="+", default=["neu", "neu-imb"], choices=["neu", "neu-imb"])
    ap.add_argument("--good", default="rolled-in_scale", help="the class kept whole as the majority in neu-imb")
    ap.add_argument("--keep", type=float, default=0.15, help="share of every other class kept in neu-imb")
    ap.add_argument("--epochs", type=int, nargs="+", default=[15])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                    help="an extra mfexp column with Hydra overrides, e.g. lr2='trainer.lr=0.002'")
    ap.add_argument("--plain-variant", action="append", default=[], metavar="NAME=JSON",
                    help="an extra plain-loop column with plain_loop keyword arguments, e.g. b32='{\"batch\": 32}'")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain loop")
    ap.add_argument("--no-default", action="store_true", help="skip mfexp at its defaults (variants only)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--table", type=Path, nargs="+", metavar="JSON", help="only print the table of saved results")
    args = ap.parse_args()
    if args.table:
        print(table([r for f in args.table for r in json.loads(f.read_text())["rows"]]))
        return
    if not (args.data / "train").is_dir():
        raise SystemExit(f"recipe: no image folder at {args.data} (give --data DIR with DIR/train/<class>/*)")
    columns = ({} if args.no_default else {"mfexp": ""}) | dict(v.split("=", 1) for v in args.variant)
    plains = ({} if args.no_plain else {"plain": {}}) | {k: json.loads(v) for k, v in (p.split("=", 1) for p in args.plain_variant)}
    results = {"load_before": os.getloadavg(), "machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "argv": sys.argv, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"neu": args.data}
        if "neu-imb" in args.sets:
            roots["neu-imb"] = imbalanced_cut(args.data, Path(tmp) / "neu-imb", args.good, args.keep)
        for name in args.sets:
            good = args.good if name == "neu-imb" else None
            for epochs in args.epochs:
                for seed in args.seeds:
                    for col, overrides in [*plains.items(), *columns.items()]:
                        start = time.perf_counter()
                        if col in plains:
                            row = {"test_error_rate": plain_loop(Path(roots[name]), epochs, seed, **overrides)}
                        else:
                            store = Path(tmp) / f"{name}-{col}-{epochs}-{seed}"
                            store.mkdir()
                            row = mfexp_run(Path(roots[name]), epochs, seed, overrides, store, good)
                        row |= {"set": name, "column": col, "epochs": epochs, "seed": seed,
                                "wall_seconds": time.perf_counter() - start, "load": os.getloadavg()[0]}
                        results["rows"].append(row)
                        print(json.dumps(row), flush=True)
                        if args.out:
                            args.out.parent.mkdir(parents=True, exist_ok=True)
                            args.out.write_text(json.dumps(results, indent=1))
    print(table(results["rows"]))

if __name__ == "__main__":
    main()
