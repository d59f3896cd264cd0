"""`python -m mfexp.report`: the report of the latest sweep (or --sweep-id) from any MLflow store."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mfexp.report",
        description="Report a policy sweep from MLflow: best run vs baseline, charts, bootstrap intervals, "
                    "self-contained HTML; registers the best model as champion or challenger.")
    p.add_argument("--experiment", default="mfexp", help="experiment whose latest sweep is reported (default: mfexp)")
    p.add_argument("--sweep-id", help="the sweep (parent) run id; overrides --experiment")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the SQLite store in ./mlruns)")
    p.add_argument("--out", type=Path, help="output folder (default: outputs/report/<sweep run id>)")
    p.add_argument("--model-name", help="registered model name (default: <experiment>-classifier)")
    p.add_argument("--no-register", action="store_true", help="do not touch the model registry")
    p.add_argument("--on-new-data", choices=["challenger", "champion"], default="challenger",
                   help="alias for the new model when the champion was tested on other data (default: challenger)")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default: 2000)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the sweep run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from mfexp.errors import MfexpError

    try:
        path = run(args)
    except MfexpError as e:
        print(f"mfexp: error: {e}", file=sys.stderr)
        return e.exit_code
    print(path)
    return 0


def run(args: argparse.Namespace) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from mfexp import keys, tracking
    from mfexp.report import build_report, latest_sweep
    from mfexp.report.build import ReportError, UnknownRunError

    if args.bootstrap < 100:
        raise ReportError(f"--bootstrap {args.bootstrap}: use at least 100 resamples")
    uri = tracking.resolve_uri(args.tracking_uri, "mlruns")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise UnknownRunError(f"no MLflow store at {uri[len('sqlite:///'):]}: give --tracking-uri or run from the "
                              "folder that holds mlruns/")
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    try:
        sweep_id = args.sweep_id or latest_sweep(client, args.experiment)
        out = args.out or Path("outputs") / "report" / sweep_id
        report = build_report(sweep_id, out, args.model_name, not args.no_register, on_new_data=args.on_new_data,
                              bootstrap_samples=args.bootstrap, log_artifacts=not args.no_log, client=client)
    except MlflowException as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ReportError(f"MLflow ({uri}): {first}") from None
    d, reg = report.data, report.registration
    e0, e1 = d.baseline.metric(keys.TEST_ERROR_RATE), d.best.metric(keys.TEST_ERROR_RATE)
    print(f"sweep {sweep_id}: best run {d.best.run.run_id} ({d.best_role}, policy {d.best.run.policy}); "
          f"test error {e0:.2%} -> {e1:.2%}", file=sys.stderr)
    if reg is not None:
        print(f"registry: {reg.name} v{reg.version} @{reg.alias}: {reg.reason}" if reg.registered else
              f"registry: not registered: {reg.reason}", file=sys.stderr)
    return report.html


if __name__ == "__main__":
    sys.exit(main())
