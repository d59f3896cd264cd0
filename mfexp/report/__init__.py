"""The report: the best run of a policy sweep against the baseline, read from MLflow, as HTML.

``make_report(sweep_run_id, out_dir)`` is the ``report`` group's default (conf/report/html.yaml), which the
sweeper calls when a sweep ends (tracking URI already set); ``python -m mfexp.report`` runs it standalone.
See docs/report.md.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from mfexp import keys
from mfexp.report.build import (
    IncompleteSweepError,
    NotASweepError,
    ReportError,
    UnknownRunError,
    collect,
    latest_sweep,
)
from mfexp.report.registry import CHALLENGER, Registration, default_name, register
from mfexp.report.sweep_data import SweepData

__all__ = [
    "IncompleteSweepError",
    "NotASweepError",
    "Report",
    "ReportError",
    "SweepData",
    "UnknownRunError",
    "build_report",
    "collect",
    "latest_sweep",
    "make_report",
]

log = logging.getLogger("mfexp.report")
HTML_NAME = "report.html"
JSON_NAME = "report.json"
ARTIFACT_DIR = "report"


class Report:
    """What `build_report` made: paths and the collected data."""

    def __init__(self, html: Path, files: list[Path], data: SweepData, payload: dict, registration: Registration | None):
        self.html, self.files, self.data, self.payload, self.registration = html, files, data, payload, registration


def build_report(sweep_run_id: str, out_dir: Path, model_name: str | None = None, register_model: bool = True,
                 on_new_data: str = CHALLENGER, bootstrap_samples: int = 2000, seed: int = 0,
                 log_artifacts: bool = True, client=None) -> Report:
    from mlflow.tracking import MlflowClient

    from mfexp.report import charts, html, stats

    client = client or MlflowClient()
    data = collect(client, sweep_run_id)
    boot = stats.paired_bootstrap(data.baseline.y_true, data.baseline.y_pred, data.best.y_pred, data.classes,
                                  samples=bootstrap_samples, seed=seed)
    reg = None
    if register_model:
        reg = register(client, model_name or default_name(data.experiment_name), data.best.run.run_id, sweep_run_id,
                       on_new_data)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = charts.all_charts(data, boot, out_dir)
    page, payload = html.render(data, boot, pngs, reg)
    html_path = out_dir / HTML_NAME
    html_path.write_text(page, encoding="utf-8")
    json_path = out_dir / JSON_NAME
    json_path.write_text(json.dumps(html.clean(payload), indent=2, allow_nan=False), encoding="utf-8")
    files = [html_path, json_path, *pngs.values()]
    if log_artifacts:
        for f in files:
            client.log_artifact(sweep_run_id, str(f), ARTIFACT_DIR)
        client.set_tag(sweep_run_id, keys.TAG_REPORT, f"{ARTIFACT_DIR}/{HTML_NAME}")
    log.info("report for sweep %s: %s", sweep_run_id, html_path)
    return Report(html_path, files, data, payload, reg)


def make_report(sweep_run_id: str, out_dir: Path, model_name: str | None = None, register: bool = True, **options) -> Path:
    """Build the report of sweep ``sweep_run_id`` into ``out_dir``, log it to the sweep run, register the best model.

    Reads everything from the current MLflow tracking URI (``mlflow.set_tracking_uri``); needs no
    active run. Returns the HTML file's path. Options: ``on_new_data`` ("challenger" | "champion"),
    ``bootstrap_samples``, ``seed``, ``log_artifacts``. Raises `mfexp.errors.MfexpError` subclasses
    for a sweep the report cannot be made from.
    """
    return build_report(sweep_run_id, Path(out_dir), model_name, register, **options).html
