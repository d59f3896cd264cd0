"""How well the default model learns the built-in demo: one training without refit, test macro-F1 and confusion.

    .venv/bin/python bench/demo_learnability.py [HYDRA_OVERRIDES ...]

Composes `python -m mfexp`'s config (demo data at its default counts, generated into a throw-away
cache), trains with `trainer.refit=false` (half the time of the default run, for quick probes of
the generator), and prints test error, macro-F1, recall per class and the confusion matrix.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ["MFEXP_CACHE"] = tempfile.mkdtemp(prefix="mfexp-demo-")

from hydra import compose, initialize_config_dir  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from mfexp.__main__ import config_dir  # noqa: E402
from mfexp.job import evaluate, load_data, new_model, seed_everything, train  # noqa: E402
from mfexp.metrics import classification_metrics  # noqa: E402
from mfexp.policy import Policy  # noqa: E402


def main() -> None:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["trainer.progress=off", "trainer.refit=false", *sys.argv[1:]])
    start = time.perf_counter()
    splits = load_data(cfg.data)
    seed_everything(cfg.trainer)
    trained = train(cfg, new_model(cfg, splits.train), splits.train, splits.val, Policy())
    prob, y = evaluate(trained, splits.test, cfg.trainer.batch_size)
    m = classification_metrics(y, prob, splits.classes, prefix="")
    print(f"{cfg.trainer.epochs} epochs, {len(splits.train)} train images: test error {m['error_rate']:.3f}, "
          f"macro-F1 {m['macro_f1']:.3f}, {time.perf_counter() - start:.0f} s")
    print("recall:", {c: round(m[f"recall/{c}"], 2) for c in splits.classes})
    print("confusion (rows true, columns predicted):", splits.classes)
    print(confusion_matrix(y, prob.argmax(1)))


if __name__ == "__main__":
    main()
