"""First use of a new SQLite MLflow store by parallel processes (issue 17): all of them succeed.

Several processes, released together once each has imported MLflow, do what ``python -m mfexp``
does before its run opens (`mfexp.tracking.setup`) and then log a run into the same new store.
"""
from __future__ import annotations

import subprocess
import sys
import time


# ---------------------------------------------------------------------------- first use of a store by parallel processes
FIRST_USE = """
import sys, time
from pathlib import Path

import mlflow

from mfexp import tracking

folder, i = Path(sys.argv[1]), sys.argv[2]
(folder / f"ready{i}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
tracking.setup(None, folder / "mlruns", "mfexp")  # what python -m mfexp does before its run opens
with tracking.tracked_run(f"job{i}", {"mfexp.role": "baseline"}):
    mlflow.log_metric("x", float(i))
"""


def test_parallel_processes_on_a_new_sqlite_store_all_succeed(tmp_path):
    (tmp_path / "first_use.py").write_text(FIRST_USE)
    n = 4
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "first_use.py"), str(tmp_path), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"ready{i}").exists() for i in range(n)) and time.monotonic() < deadline:
        time.sleep(0.05)  # every process has imported MLflow: release them together
    (tmp_path / "go").touch()
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0] * n, "\n".join(err[-2000:] for _, err in results)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mfexp").experiment_id])
    assert sorted(r.data.metrics["x"] for r in runs) == [0.0, 1.0, 2.0, 3.0]
    assert all(r.info.status == "FINISHED" for r in runs)
