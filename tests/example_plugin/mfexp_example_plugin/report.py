"""A third-party report: a Markdown summary of the sweep, instead of or next to mfexp's HTML report."""
from __future__ import annotations

from pathlib import Path

from mfexp import keys


def summary_report(sweep_run_id: str, out_dir: str | Path, model_name: str | None = None, html: bool = False,
                   **html_options) -> Path:
    """Write ``<out_dir>/summary.md`` from the sweep run's tags; with ``html``, mfexp's own report first.

    The sweeper calls a report with the MLflow tracking URI already set, while the sweep run is open."""
    from mlflow import MlflowClient

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if html:
        from mfexp.report import make_report

        make_report(sweep_run_id, out, model_name=model_name, **html_options)
    tags = MlflowClient().get_run(sweep_run_id).data.tags
    lines = [f"# Sweep {sweep_run_id}",
             f"- best run: {tags.get(keys.TAG_BEST_RUN, '?')} ({tags.get(keys.TAG_BEST_ROLE, '?')})",
             f"- policy: {tags.get(keys.TAG_POLICY, '?')}",
             f"- kept: {tags.get(keys.TAG_KEPT) or 'none'}",
             f"- rejected: {tags.get(keys.TAG_REJECTED) or 'none'}"]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
