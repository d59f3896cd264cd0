"""MLflow plumbing: where the store is, the experiment, and runs that always end in a final state.

Default store: SQLite plus an artifact folder inside ``mlruns/``, both absolute, so Hydra's
per-job output folders never move them. Processes that open a new SQLite store at once (shell ``&``,
a SLURM array, a joblib launcher) take turns through a file lock beside the database
(``mlflow.db.lock``), so its schema is created and migrated once. ``$MLFLOW_TRACKING_URI`` or ``tracking.uri`` point at a
server instead. Tag and metric keys live in ``mfexp.keys``; the run tags are re-exported here.
"""
from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any, Iterator, Mapping

import mlflow
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from mfexp.keys import TAG_CANDIDATE, TAG_ENGINE, TAG_FINGERPRINT, TAG_POLICY, TAG_ROLE  # noqa: F401 - re-exported


def default_uri(store_dir: str | Path = "mlruns") -> str:
    return f"sqlite:///{Path(store_dir).expanduser().resolve() / 'mlflow.db'}"


def resolve_uri(uri: str | None, store_dir: str | Path = "mlruns") -> str:
    import os

    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(store_dir)


def setup(uri: str | None, store_dir: str | Path, experiment: str) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id.

    With the default SQLite store the experiment's artifacts go to ``<store_dir>/artifacts``
    (an absolute path): MLflow would otherwise put them relative to the working directory.
    """
    import os

    uri = resolve_uri(uri, store_dir)
    lock = contextlib.nullcontext()
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        from filelock import FileLock

        lock = FileLock(f"{db}.lock", timeout=600)  # MLflow's schema creation is not safe against a second process
    # mlflow.set_tracking_uri also exports $MLFLOW_TRACKING_URI; left there, resolve_uri would take
    # it for the user's choice and every later run in this process (or its children) would ignore
    # its own tracking.store_dir. Keep the environment as the user set it.
    user_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if user_env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = user_env
    with lock:  # the first MLflow call here creates (or migrates) the store's schema
        exp_id = _experiment(uri, experiment)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def _experiment(uri: str, experiment: str) -> str:
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
        try:
            exp_id = mlflow.create_experiment(experiment, artifact_location=location)
        except MlflowException:  # a parallel job created it first
            exp = mlflow.get_experiment_by_name(experiment)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    return exp_id


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class _Terminated(BaseException):
    """SIGTERM as an exception, so the run is ended KILLED instead of left RUNNING."""


@contextlib.contextmanager
def tracked_run(
    run_name: str | None, tags: Mapping[str, str], parent_run_id: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C, SIGTERM) - never RUNNING."""

    def on_term(signum, frame):  # noqa: ARG001
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
    run = mlflow.start_run(run_name=run_name, tags=dict(tags), parent_run_id=parent_run_id)
    try:
        yield run
    except (KeyboardInterrupt, _Terminated):
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException:
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    else:
        mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
