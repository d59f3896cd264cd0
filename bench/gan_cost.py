"""GAN cost and quality: wall time of one GAN training and its Fréchet distance vs the real-vs-real floor.

    .venv/bin/python bench/gan_cost.py --data demo                       # demo defect classes, 64 px gray
    .venv/bin/python bench/gan_cost.py --data neu --set steps=1000       # NEU (../shared/data), all 6 classes
    .venv/bin/python bench/gan_cost.py --device cuda --set width=64

Uses the training split exactly as a run would (mfexp.data.load_splits, default split fractions and
seed) and a throw-away MLflow store in a temp folder. Prints one line: GAN training wall time, the
whole generate call (training, Fréchet distance, logging, sampling) in wall and CPU seconds (CPU
seconds stay meaningful on a shared machine), and the Fréchet distance beside its floor.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import mlflow
import torch
import yaml
from mfexp_plugins.gan import TAG_GAN_KEY, GanSynth, find_gan_run

from mfexp.data import load_splits
from mfexp.demo import make_demo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo", help="demo | neu | a class-per-folder root")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = torch's default")
    ap.add_argument("--out", help="copy the GAN run's sample grids and quality figure here")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="GAN knobs over conf/synth/gan.yaml")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    knobs = yaml.safe_load((ROOT / "conf/synth/gan.yaml").read_text())
    knobs.pop("_target_")
    knobs.update({k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)})
    knobs["progress"] = False
    if args.data == "demo":
        root, good = make_demo(), "good"
    elif args.data == "neu":
        root, good = ROOT.parent / "shared/data/neu-surface-defect", None
    else:
        root, good = Path(args.data), None
    splits = load_splits(str(root), 64, good_class=good)
    train = splits.train

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        exp_id = mlflow.create_experiment("bench", artifact_location=Path(tmp, "artifacts").as_uri())
        mlflow.set_experiment(experiment_id=exp_id)
        synth = GanSynth(**knobs)
        t0, c0 = time.perf_counter(), time.process_time()
        x, _ = synth.generate(train.images, train.labels, list(train.classes), good, splits.fingerprint, 0, torch.device(args.device))
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        run = mlflow.search_runs([exp_id], filter_string="tags.`mfexp.role` = 'gan'", output_format="list")[0]
        m = run.data.metrics
        n_real = run.data.params["gan.n_real"]
        print(
            f"data={args.data} device={args.device} threads={torch.get_num_threads()} n_real={n_real} "
            f"steps={knobs['steps']} batch={knobs['batch_size']} width={knobs['width']}: "
            f"train {m['gan.train_seconds']:.0f} s, total {total:.0f} s wall / {cpu:.0f} s CPU, "
            f"FD {m['gan.fid']:.2f} vs floor {m['gan.fid_floor']:.2f}, generated {len(x)}",
            flush=True,
        )
        if args.out:
            for folder in ("samples", "quality"):
                mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=folder, dst_path=args.out)
        assert find_gan_run(mlflow.MlflowClient(), exp_id, run.data.tags[TAG_GAN_KEY]) is not None


if __name__ == "__main__":
    main()
