"""`python -m mfexp.predict PATH... --model URI`: a logged mfexp model applied to image files and folders, read as training read them.

Images go through `mfexp.decode.decode`, the training decoder, with the image size and channels the
model was trained with (its MLflow metadata, never the user's say); a folder is read like a class
folder in training (`mfexp.intake`: recursively, hidden entries ignored, non-images counted in one
line). The CSV (``--out``) has one row per image: ``path``, ``predicted``, ``prob/<class>`` per class
and, when the model names a good class, ``defect_score`` = 1 - P(good); when the model also stores a
``defect_threshold``, ``defect`` = defect_score >= threshold. A model without a threshold flags nothing.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from mfexp.decode import DEFAULT_MAX_PIXELS, decode
from mfexp.errors import ConfigError, DataError, MfexpError
from mfexp.inspection import defect_scores, threshold_flags
from mfexp.intake import Skipped, walk

NEEDED = ("classes", "image_size", "channels")  # model metadata written by mfexp.run.model_metadata


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mfexp.predict",
        description="Classify images with a model logged by mfexp. Files are decoded exactly as in training (same "
                    "formats, folder rules and errors) at the model's own image size and channels; writes one CSV row "
                    "per image: path, predicted class, one probability per class, the defect score 1 - P(good) and, "
                    "when the model stores a defect_threshold, the defect flag (a model without one flags nothing). "
                    "Runs on the CPU, where the logged model was traced.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="image files and folders (a folder is read recursively, hidden entries ignored)")
    p.add_argument("--model", help="model URI: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model or a "
                                   "folder (default: models:/<experiment>-classifier@champion)")
    p.add_argument("--experiment", default="mfexp", help="experiment whose champion is the default model (default: mfexp)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the SQLite store in ./mlruns)")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"), help="the CSV written (default: predictions.csv)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse larger images, as data.max_image_pixels does in training (default: {DEFAULT_MAX_PIXELS})")
    p.add_argument("--no-progress", action="store_true", help="no progress (else a bar on a terminal, a line per 10 s when stderr is a file)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log = logging.getLogger("mfexp")  # progress lines when stderr is not a terminal (mfexp.progress)
    handler, level = logging.StreamHandler(sys.stderr), log.level
    handler.setFormatter(logging.Formatter("mfexp: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        return run(args)
    except MfexpError as e:
        print(f"mfexp: error: {e}", file=sys.stderr)
        return e.exit_code
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def model_uri(args: argparse.Namespace) -> str:
    return args.model or f"models:/{args.experiment}-classifier@champion"  # the report's registered name and alias


def load_model(uri: str, tracking_uri: str | None):
    """(torch module giving class probabilities, metadata dict) of the logged model at ``uri``.

    The module runs on the CPU: mfexp logs the model as a ``torch.export`` program traced there (in
    eval mode), whose weights MLflow cannot move to another device. Raises ConfigError, one line,
    when the store, the model or its mfexp metadata is missing."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from mfexp import tracking

    store = tracking.resolve_uri(tracking_uri, "mlruns")
    if uri.startswith(("models:/", "runs:/")) and store.startswith("sqlite:///") and not Path(store[10:]).is_file():
        raise ConfigError(f"no MLflow store at {store[10:]}: give --tracking-uri, or --model with a model folder")
    mlflow.set_tracking_uri(store)
    try:
        meta = mlflow.models.get_model_info(uri).metadata or {}
        missing = [k for k in NEEDED if k not in meta]
        if missing:
            raise ConfigError(f"--model {uri}: no {', '.join(missing)} in its metadata; was it logged by mfexp?")
        model = mlflow.pytorch.load_model(uri)
    except (MlflowException, OSError) as e:
        first = str(getattr(e, "message", e)).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--model {uri}: cannot be loaded ({first})") from None
    try:
        model.eval()
    except NotImplementedError:  # a torch.export program: traced in eval mode already
        pass
    return model, meta


def image_files(paths: list[Path], skipped: dict[Path, Skipped]) -> list[tuple[Path, Path | None]]:
    """(file, the folder argument it was found in, or None for a file named itself), folders' files at any depth, sorted."""
    out: list[tuple[Path, Path | None]] = []
    for arg in paths:
        if arg.is_dir():
            skipped[arg] = Skipped()
            found = walk(arg, arg, skipped[arg])
            if not found:
                raise DataError(f"{arg}: no files to classify")
            out += [(p, arg) for p in found]
        elif arg.exists():
            out.append((arg, None))
        else:
            raise DataError(f"{arg}: no such file or folder")
    return out


def run(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch

    from mfexp import progress

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: must be a positive integer")
    skipped: dict[Path, Skipped] = {}
    files = image_files(args.paths, skipped)
    uri = model_uri(args)
    model, meta = load_model(uri, args.tracking_uri)
    classes, size, channels = [str(c) for c in meta["classes"]], int(meta["image_size"]), int(meta["channels"])
    paths, probs = [], []
    starts = range(0, len(files), args.batch_size)  # a bar on a terminal, a line per 10 s in a log (mfexp.progress)
    for start in progress.bar(starts, f"predict ({len(files)} images, batches of {args.batch_size})",
                              "off" if args.no_progress else "auto", interval=10.0):
        batch = []
        for f, folder in files[start:start + args.batch_size]:
            arr = decode(f, size, channels, args.max_image_pixels)
            if arr is None:
                if folder is None:
                    raise DataError(f"{f}: not an image (Pillow cannot identify it)")
                skipped[folder].not_images.append(f.relative_to(folder).as_posix())
                continue
            batch.append(arr)
            paths.append(str(f))
        if batch:  # uint8 (N, H, W, C) -> float (N, C, H, W) in [0, 1], as training's to_input
            x = torch.from_numpy(np.ascontiguousarray(np.stack(batch * (2 if len(batch) == 1 else 1)).transpose(0, 3, 1, 2)))
            with torch.no_grad():  # a batch of one is sent twice: the exported batch axis starts at 2
                probs.append(model(x.float().div_(255)).float().numpy().astype(np.float64)[:len(batch)])
    for line in filter(None, (s.line(str(arg)) for arg, s in skipped.items())):
        print(f"mfexp: {line}", file=sys.stderr)
    if not paths:
        raise DataError(f"no images among {', '.join(map(str, args.paths))}")
    prob = np.concatenate(probs)
    df = pd.DataFrame(prob, columns=[f"prob/{c}" for c in classes])
    df.insert(0, "predicted", [classes[i] for i in prob.argmax(1)])
    df.insert(0, "path", paths)
    print(f"{len(paths)} image(s) classified by {uri} ({size} px, {channels} channel(s)) -> {args.out}")
    print("predicted: " + ", ".join(f"{c} {n}" for c, n in df["predicted"].value_counts().items()))
    print(_defects(df, prob, classes, meta))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    return 0


def _defects(df, prob: np.ndarray, classes: list[str], meta: dict) -> str:
    """Add ``defect_score`` (and ``defect`` at the stored threshold) to ``df``; return the line that says what was done."""
    good, threshold = meta.get("good_class"), meta.get("defect_threshold")
    if good not in classes:
        return "no defect score: the model names no good class (data.good_class was unset in training)"
    df["defect_score"] = defect_scores(prob, classes.index(good))
    if threshold is None:
        return (f"no part flagged: the model stores no defect_threshold; defect_score = 1 - P({good}) is in the CSV "
                "for a threshold of your own")
    df["defect"] = threshold_flags(df["defect_score"].to_numpy(), float(threshold))
    return f"{int(df['defect'].sum())} of {len(df)} flagged defective: defect_score = 1 - P({good}) >= {float(threshold):g}"


if __name__ == "__main__":
    sys.exit(main())
