"""`python -m mfexp.predict` (issue 18, item 3): the champion applied to files gives exactly what its run logged.

One tiny demo run logs its model; it is registered as ``mfexp-classifier@champion`` the way the report
registers a sweep's best model, and ``python -m mfexp.predict <demo>/test`` must reproduce the run's
``test_predictions.csv`` row for row (matched by file). The other tests reuse that model in-process.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_PER_CLASS, TINY_DEMO, TINY_TRAIN
from PIL import Image

from mfexp.demo import default_cache_dir, make_demo
from mfexp.predict import _defects, main
from mfexp.run import run

NAME = "mfexp-classifier"  # the report's registered name for experiment mfexp


@pytest.fixture(scope="module")
def champion(tmp_path_factory, mlflow_store_factory, compose_cfg):
    tmp = tmp_path_factory.mktemp("predict")
    store = mlflow_store_factory(tmp / "mlruns")
    cfg = compose_cfg(*TINY_DEMO, *TINY_TRAIN, *store.overrides, "trainer.log_model=true")
    run(cfg)
    (r,) = store.runs()
    mlflow.set_tracking_uri(store.uri)
    version = mlflow.register_model(f"runs:/{r.info.run_id}/model", NAME).version
    client = store.client()
    client.set_registered_model_alias(NAME, "champion", version)
    logged = pd.read_csv(client.download_artifacts(r.info.run_id, "test_predictions.csv", str(tmp)))
    demo = make_demo(default_cache_dir(), DEMO_PER_CLASS, 16, 0)
    return SimpleNamespace(tmp=tmp, store=store, run_id=r.info.run_id, logged=logged, demo=demo,
                           threshold=r.data.metrics["defect_threshold"],
                           classes=[c[len("prob/"):] for c in logged.columns if c.startswith("prob/")])


def test_predict_on_the_test_folder_gives_the_logged_test_predictions(champion):
    out = champion.tmp / "predictions.csv"
    p = subprocess.run([sys.executable, "-m", "mfexp.predict", str(champion.demo / "test")], cwd=champion.tmp,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"classified by models:/{NAME}@champion (16 px, 1 channel(s))" in p.stdout
    # the threshold the run chose on validation travels with the model: the same flags as the run's decision
    assert f"flagged defective: defect_score = 1 - P(good) >= {champion.threshold:g}" in p.stdout
    got = pd.read_csv(out)
    got["path"] = [Path(s).relative_to(champion.demo).as_posix() for s in got["path"]]
    logged = champion.logged
    n_files = sum(1 for _ in (champion.demo / "test").rglob("*.png"))
    assert sorted(got["path"]) == sorted(logged["path"]) and len(got) == len(logged) == n_files  # every test image, once
    got, logged = got.set_index("path").loc[logged["path"]], logged.set_index("path")
    cols = [f"prob/{c}" for c in champion.classes]
    assert list(got.columns) == ["predicted", *cols, "defect_score", "defect"]
    assert list(got["predicted"]) == [champion.classes[i] for i in logged["y_pred"]]
    np.testing.assert_allclose(got[cols].to_numpy(), logged[cols].to_numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["defect_score"], 1 - logged["prob/good"], rtol=0, atol=1e-6)
    assert got["defect"].tolist() == (got["defect_score"] >= champion.threshold).tolist()


def test_the_registered_model_still_serves_pyfunc_users(champion):
    mlflow.set_tracking_uri(champion.store.uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    x = np.asarray(Image.open(next((champion.demo / "test" / "pit").iterdir())), np.float32)[None, None] / 255
    prob = model.predict(x)
    assert prob.shape == (1, len(champion.classes)) and abs(float(prob.sum()) - 1) < 1e-5


def _predict(champion, monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.chdir(champion.tmp)
    code = main(["--no-progress", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_folders_are_read_as_in_training_and_skips_are_counted(champion, tmp_path, monkeypatch, capsys):
    lot, source = tmp_path / "lot", {}
    for i, f in enumerate(sorted((champion.demo / "test").rglob("*.png"))[:3]):
        (lot / f"tray{i}").mkdir(parents=True)
        (lot / f"tray{i}" / f.name).write_bytes(f.read_bytes())
        source[f"tray{i}/{f.name}"] = f.relative_to(champion.demo).as_posix()
    (lot / "notes.txt").write_text("shift 2")
    (lot / ".DS_Store").write_bytes(b"\x00")
    code, out, err = _predict(champion, monkeypatch, capsys, str(lot), "--out", str(tmp_path / "p.csv"), "--batch-size", "2")
    assert code == 0, err
    df = pd.read_csv(tmp_path / "p.csv")
    assert [Path(p).parent.name for p in df["path"]] == ["tray0", "tray1", "tray2"]
    logged = champion.logged.set_index("path").loc[[source[Path(p).relative_to(lot).as_posix()] for p in df["path"]]]
    cols = [f"prob/{c}" for c in champion.classes]  # batches of 2 and 1 give what the run logged
    np.testing.assert_allclose(df[cols].to_numpy(), logged[cols].to_numpy(), rtol=0, atol=1e-6)
    assert err.strip() == f"mfexp: {lot}: ignored 1 file that is not an image (notes.txt); 1 hidden file or folder (.DS_Store)"


def test_an_unreadable_image_is_named_in_one_line(champion, tmp_path, monkeypatch, capsys):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.png").write_bytes((next((champion.demo / "test" / "pit").iterdir())).read_bytes())
    (tmp_path / "parts" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    code, out, err = _predict(champion, monkeypatch, capsys, str(tmp_path / "parts"), "--out", str(tmp_path / "p.csv"))
    assert code == 2 and err.strip().splitlines() == [
        err.strip()] and err.startswith(f"mfexp: error: {tmp_path / 'parts' / 'b.png'}: unreadable or corrupt image (")
    assert not (tmp_path / "p.csv").exists()
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = _predict(champion, monkeypatch, capsys, str(tmp_path / "notes.txt"))
    assert code == 2 and err.strip() == f"mfexp: error: {tmp_path / 'notes.txt'}: not an image (Pillow cannot identify it)"


def test_missing_store_or_model_is_one_line(champion, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--no-progress", str(champion.demo / "test")]) == 2
    assert capsys.readouterr().err.strip() == f"mfexp: error: no MLflow store at {tmp_path / 'mlruns' / 'mlflow.db'}: " \
                                              "give --tracking-uri, or --model with a model folder"
    code, _, err = _predict(champion, monkeypatch, capsys, str(champion.demo / "test"), "--model", f"models:/{NAME}@nobody")
    assert code == 2 and err.startswith(f"mfexp: error: --model models:/{NAME}@nobody: cannot be loaded (") and err.count("\n") == 1


def test_defect_flag_at_the_stored_threshold():
    prob = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])  # classes good, dent: scores 0.1, 0.4, 0.8
    df = pd.DataFrame(index=range(3))
    line = _defects(df, prob, ["good", "dent"], {"good_class": "good", "defect_threshold": 0.4})
    assert df["defect"].tolist() == [False, True, True] and line.startswith("2 of 3 flagged defective")
    df = pd.DataFrame(index=range(3))
    assert _defects(df, prob, ["good", "dent"], {"good_class": None}).startswith("no defect score")
    assert "defect" not in df and "defect_score" not in df
