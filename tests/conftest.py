"""Shared fixtures for every test file.

* The environment is offline and quiet (no albumentations/PyPI check, no model hub, no MLflow
  telemetry) and ``$MLFLOW_TRACKING_URI`` is dropped so nothing reaches a real store.
* ``MFEXP_CACHE`` points at one temporary folder per session, so demo data is generated fresh
  (and only once) per session, never in the user's ``~/.cache``.
* ``mlflow_store``: a real MLflow SQLite store per test. A fresh SQLite store spends seconds
  on schema migrations, so the session migrates one database once and each test gets a copy.
* ``compose_cfg``: the composed config of ``python -m mfexp`` with overrides, in-process
  (``hydra.compose``), to call ``mfexp.run.run(cfg)`` without a subprocess.
* ``TINY_DEMO``, ``TINY_TRAIN`` / ``tiny_overrides``: a demo run that trains in seconds on two shared CPU cores.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NEU_ROOT = ROOT.parent / "shared" / "data" / "neu-surface-defect"

# Demo data small enough for seconds-long runs: 56 images (these keys exist for data=demo only).
DEMO_PER_CLASS = {"good": 24, "scratch": 8, "pit": 8, "crack": 8, "stain": 8}
TINY_DEMO = [f"data.demo_per_class.{k}={v}" for k, v in DEMO_PER_CLASS.items()]
# Training that takes seconds on two shared CPU cores: 16 px, resnet18 with the small stem, one epoch.
TINY_TRAIN = [
    "data.image_size=16",
    "model.stem=small",
    "trainer.epochs=1",
    "trainer.batch_size=16",
    "trainer.threads=1",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.log_model=false",
]


@dataclass(frozen=True)
class MlflowStore:
    """A private MLflow store: ``<store_dir>/mlflow.db`` plus ``<store_dir>/artifacts``."""

    store_dir: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.store_dir / 'mlflow.db'}"

    @property
    def overrides(self) -> list[str]:
        """What to pass to ``python -m mfexp`` (or ``compose_cfg``) to track into this store."""
        return [f"tracking.store_dir={self.store_dir}"]

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def runs(self, experiment: str = "mfexp", filter_string: str = "") -> list:
        """Every run of `experiment`, oldest first (empty when the experiment does not exist)."""
        c = self.client()
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            return []
        return sorted(c.search_runs([exp.experiment_id], filter_string=filter_string), key=lambda r: r.info.start_time)


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo-data cache per test session (subprocesses inherit it)."""
    cache = tmp_path_factory.mktemp("mfexp_cache")
    os.environ["MFEXP_CACHE"] = str(cache)
    return cache


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri():
    """``mlflow.set_tracking_uri`` exports ``$MLFLOW_TRACKING_URI``, and mfexp reads that variable
    before ``tracking.store_dir``: one test's store must not leak into the next, nor into the
    module-scoped fixtures set up between tests. Removed before and after every test (not restored)."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def _migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    MlflowClient(tracking_uri=uri).search_experiments()  # creates and migrates the schema
    _dispose_engine(uri)
    return path


def _dispose_engine(uri: str) -> None:
    """Close the template's pooled SQLite connections before it is copied."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        engine = getattr(SqlAlchemyStore, "_engine_map", {}).get(uri)
        if engine is not None:
            engine.dispose()
    except Exception:  # noqa: BLE001 - best effort: nothing writes to the template after migration anyway
        pass


@pytest.fixture(scope="session")
def mlflow_store_factory(_migrated_db: Path) -> Callable[[Path], MlflowStore]:
    """``mlflow_store_factory(folder)``: a fresh, migrated store in ``folder`` (for module-scoped fixtures)."""

    def _make(store_dir: Path) -> MlflowStore:
        store_dir = Path(store_dir)
        store_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_migrated_db, store_dir / "mlflow.db")
        return MlflowStore(store_dir)

    return _make


@pytest.fixture()
def mlflow_store(tmp_path: Path, mlflow_store_factory) -> MlflowStore:
    """A fresh, already migrated SQLite store in ``tmp_path/mlruns``."""
    return mlflow_store_factory(tmp_path / "mlruns")


@pytest.fixture(scope="session")
def compose_cfg() -> Callable[..., object]:
    """``compose_cfg(*overrides)``: the DictConfig that ``python -m mfexp OVERRIDES`` would run."""
    from hydra import compose, initialize_config_dir

    from mfexp.__main__ import config_dir  # registers the structured configs

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


@pytest.fixture()
def tiny_overrides(mlflow_store: MlflowStore) -> list[str]:
    """A seconds-long demo run tracked into this test's store."""
    return [*TINY_DEMO, *TINY_TRAIN, *mlflow_store.overrides]


def mfexp_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300):
    """``python -m mfexp ARGS`` in a subprocess (the CLI contract: exit code, stderr)."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "mfexp", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture()
def cli(tmp_path: Path) -> Callable[..., object]:
    """``cli(*args, env=None)``: run ``python -m mfexp`` in tmp_path (Hydra's outputs/ land there)."""

    def _run(*args: str, env: dict | None = None, timeout: float = 300):
        return mfexp_cli(list(args), tmp_path, env, timeout)

    return _run


def patch_fit(monkeypatch: pytest.MonkeyPatch, fake: Callable) -> None:
    """Replace the train loop (``mfexp.train.fit``) wherever mfexp modules imported it by name."""
    import mfexp.job  # noqa: F401 - load the modules that bind `fit`
    import mfexp.run  # noqa: F401
    import mfexp.train

    original = mfexp.train.fit
    for name, module in list(sys.modules.items()):
        if (name == "mfexp" or name.startswith("mfexp.")) and getattr(module, "fit", None) is original:
            monkeypatch.setattr(module, "fit", fake)
