"""A small, bounded load test of an MLflow tracking server (docs/scaling.md).

    . tracking-server/env.sh   # scripts/tracking_server.sh start
    python bench/tracking_load.py --threads 1 2 4 8 --seconds 10 --max-requests 5000

Each thread owns one run and logs one metric per request (``log_metric``: the request an epoch's
``mlflow.log_metrics`` of one value costs) until ``--seconds`` pass or the shared budget of
``--max-requests`` is spent; then the same with ``log_batch`` of ``--batch`` metrics per request.
Prints requests/s, metric values/s and latency percentiles per thread count, and writes them as JSON
(``--out``). Runs go to the experiment ``--experiment`` (default ``tracking-load``), deleted at the end
unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time


def _run(client, exp_id: str, threads: int, seconds: float, max_requests: int, batch: int) -> dict:
    from mlflow.entities import Metric

    runs = [client.create_run(exp_id, run_name=f"load-{threads}-{batch}").info.run_id for _ in range(threads)]
    lat: list[list[float]] = [[] for _ in range(threads)]
    budget = threading.Semaphore(max_requests)
    errors = [0]
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> None:
        step = 0
        while time.perf_counter() < deadline and budget.acquire(blocking=False):
            t = time.perf_counter()
            try:
                if batch == 1:
                    client.log_metric(runs[i], "m", float(step), step=step)
                else:
                    ts = int(time.time() * 1000)
                    client.log_batch(runs[i], metrics=[Metric(f"m{k}", float(step), ts, step) for k in range(batch)])
            except Exception:  # noqa: BLE001 - counted, the load goes on
                errors[0] += 1
            lat[i].append(time.perf_counter() - t)
            step += 1

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    for r in runs:
        client.set_terminated(r)
    all_lat = sorted(x for l in lat for x in l)
    n = len(all_lat)
    q = (lambda p: all_lat[min(n - 1, int(p * n))] * 1000) if n else (lambda p: float("nan"))
    return {"threads": threads, "batch": batch, "requests": n, "errors": errors[0], "seconds": round(wall, 2),
            "requests_per_s": round(n / wall, 1), "values_per_s": round(n * batch / wall, 1),
            "p50_ms": round(q(0.5), 1), "p95_ms": round(q(0.95), 1),
            "mean_ms": round(statistics.fmean(all_lat) * 1000, 1) if n else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=5000, help="per thread count and mode")
    ap.add_argument("--batch", type=int, default=20, help="metrics per log_batch request")
    ap.add_argument("--experiment", default="tracking-load")
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if not a.uri or not a.uri.startswith("http"):
        ap.error("--uri (or $MLFLOW_TRACKING_URI) must be an http(s) tracking server")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=a.uri)
    exp = client.get_experiment_by_name(a.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(a.experiment)
    rows = []
    for batch in (1, a.batch):
        for n in a.threads:
            row = _run(client, exp_id, n, a.seconds, a.max_requests, batch)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if not a.keep:
        for r in client.search_runs([exp_id], max_results=1000):
            client.delete_run(r.info.run_id)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"uri": a.uri, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
