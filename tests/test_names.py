"""Class names from the user's folders in MLflow keys (issue 17): safe for every store, readable, the same for writer and reader.

Also: every param and tag key is checked before a run opens, and a tiny run on a folder whose class
names MLflow would refuse raw finishes with every metric, artifact and the verdict.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfexp.errors import ConfigError
from mfexp.names import bad_key, check_run_keys, key_names


# ---------------------------------------------------------------------------- names reach MLflow keys
AWKWARD = ["scratch (minor)", "scratch_minor", "Crack", "crack", "größe", "傷", "a/b".replace("/", "∕"), "x" * 200,
           "con", "dent 2", "rolled-in_scale", "12", "-lead", "trail.", " pad", "."]


def test_key_names_are_safe_readable_and_distinct():
    safe = key_names(AWKWARD)
    assert list(safe) == AWKWARD
    for original, name in safe.items():
        for prefix in ("test_precision/", "test_support/", "synth.count.", "gan.count."):
            assert bad_key(prefix + name) is None, (original, name)
        assert len(name) <= 64 and name.isascii()
    assert len({v.lower() for v in safe.values()}) == len(AWKWARD)  # distinct even where case is not
    for plain in ("scratch_minor", "dent 2", "rolled-in_scale", "12", "-lead"):
        assert safe[plain] == plain  # names every store takes stay as they are
    assert re.fullmatch(r"scratch_minor-[0-9a-f]{6}", safe["scratch (minor)"])
    assert re.fullmatch(r"gro_e-[0-9a-f]{6}", safe["größe"]) and re.fullmatch(r"class-[0-9a-f]{6}", safe["傷"])
    assert re.fullmatch(r"Crack-[0-9a-f]{12}", safe["Crack"]) and re.fullmatch(r"crack-[0-9a-f]{12}", safe["crack"])
    assert key_names(reversed(AWKWARD)) == safe  # independent of order: writers and readers agree


def test_report_and_run_read_the_same_per_class_keys():
    from types import SimpleNamespace

    from mfexp.metrics import classification_metrics
    from mfexp.report.sweep_data import SweepData

    classes = ["good", "scratch (minor)", "größe"]
    logged = classification_metrics(np.array([0, 1, 2, 1]), np.eye(3)[[0, 1, 2, 0]], classes)
    data = SimpleNamespace(classes=classes)
    for metric in ("recall", "precision", "support"):
        assert all(SweepData.class_key(data, metric, c) in logged for c in classes)
    assert logged[SweepData.class_key(data, "recall", "scratch (minor)")] == 0.5
    assert all(bad_key(k) is None for k in logged)


def test_keys_mlflow_would_refuse_fail_before_a_run():
    check_run_keys({"data.root": "/x", "augment.techniques.rotate.m": 0.5}, {"mfexp.role": "baseline"})
    with pytest.raises(ConfigError, match=r"MLflow tag 'mfexp\.bad\(key\)' would be refused"):
        check_run_keys({}, {"mfexp.bad(key)": "v"})
    with pytest.raises(ConfigError, match="longer than 250"):
        check_run_keys({"p" * 251: 1}, {})
    with pytest.raises(ConfigError, match="value is longer than 8000"):
        check_run_keys({}, {"mfexp.note": "v" * 8001})


def test_a_run_on_class_names_mlflow_would_refuse_raw_finishes(tmp_path, mlflow_store, compose_cfg, capsys):
    """The issue's case: trained fully, then MLflow refused ``test_precision/scratch (minor)`` and the run FAILED."""
    import pandas as pd
    from conftest import TINY_TRAIN

    from mfexp.run import run

    classes = ["good", "größe", "scratch (minor)"]  # sorted, as the labels are
    for ci, c in enumerate(classes):
        for split, n in (("train", 4), ("test", 2)):
            for i in range(n):
                px = np.random.default_rng([ci, i, len(split)]).integers(0, 60, (16, 16)) + 80 * ci
                path = tmp_path / "parts" / split / c / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(px.astype(np.uint8)).save(path)
    run(compose_cfg("data=folder", f"data.root={tmp_path / 'parts'}", "data.good_class=good", *TINY_TRAIN,
                    *mlflow_store.overrides))
    (r,) = mlflow_store.runs()
    assert r.info.status == "FINISHED"
    safe = key_names(classes)
    assert json.loads(r.data.tags["mfexp.class_names"]) == {safe["größe"]: "größe", safe["scratch (minor)"]: "scratch (minor)"}
    assert {k for k in r.data.metrics if k.startswith("test_support/")} == {f"test_support/{safe[c]}" for c in classes}
    assert r.data.metrics[f"test_support/{safe['scratch (minor)']}"] == 2 and "confusion_matrix.png" in {
        a.path for a in mlflow_store.client().list_artifacts(r.info.run_id)}
    client = mlflow_store.client()
    ds = json.loads(Path(client.download_artifacts(r.info.run_id, "dataset.json", str(tmp_path))).read_text())
    assert ds["classes"] == classes and ds["key_names"] == safe  # original names, and the mapping
    df = pd.read_csv(client.download_artifacts(r.info.run_id, "test_predictions.csv", str(tmp_path)))
    assert list(df.columns) == ["path", "y_true", "y_pred", *(f"prob/{c}" for c in classes)]
    assert sorted(df["path"])[-1] == "test/scratch (minor)/1.png"
    assert re.search(r"^  scratch \(minor\) +\d", capsys.readouterr().out, re.M)  # the verdict's row, original name
