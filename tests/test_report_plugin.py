"""The report is a plugin: at the end of a sweep the sweeper calls what the job config's ``report`` group names.

No training: the end of a sweep is played with the sweeper's own `SweepRun` on a baseline run made
directly in a fresh MLflow store, and the report is looked up from the composed config exactly as
the sweeper does. The reports are functions of this module and the example plugin's report
(``tests/example_plugin``, imported from its source folder; ``test_cli`` composes it pip-installed).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY_DEMO
from hydra_plugins.mfexp_sweeper.search import Candidate, Outcome, Result
from hydra_plugins.mfexp_sweeper.sweeper import PolicySweeper
from omegaconf import OmegaConf

from mfexp import keys
from mfexp.errors import ConfigError

CALLS: list[dict] = []


def recording_report(sweep_run_id: str, out_dir, model_name=None, label: str = "", **options) -> Path:
    """A third-party report configured by ``_target_``: records its call, writes one file."""
    CALLS.append({"sweep_run_id": sweep_run_id, "out_dir": Path(out_dir), "model_name": model_name, "label": label,
                  "options": options})
    path = Path(out_dir) / "recorded.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(label)
    return path


def failing_report(sweep_run_id: str, out_dir, model_name=None, **options) -> Path:
    raise RuntimeError("the report broke")


def _end_of_sweep(compose_cfg, store, sweep_dir: Path, *overrides: str):
    """Open a sweep run for the config these overrides compose, add a finished baseline, finish the sweep."""
    from hydra_plugins.mfexp_sweeper.config import SearchConf
    from hydra_plugins.mfexp_sweeper.sweep_run import SweepRun

    cfg = compose_cfg(*TINY_DEMO, "data.image_size=16", *store.overrides, *overrides)
    settings = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(SearchConf), cfg.search), resolve=True)
    report = PolicySweeper()._report_plugin(cfg)
    with SweepRun(cfg, settings, list(overrides), sweep_dir) as run:
        c = run.client
        base = c.create_run(run.experiment_id, tags={keys.TAG_ROLE: "baseline", keys.TAG_PARENT: run.run_id,
                                                     keys.TAG_POLICY: "plain-plain-baseline"}).info.run_id
        c.log_metric(base, keys.BEST_VAL_LOSS, 0.5)
        c.log_metric(base, keys.TEST_ERROR_RATE, 0.25)
        c.log_text(base, "y_true,y_pred,prob/good,prob/scratch\n0,0,0.6,0.4\n1,1,0.4,0.6\n", keys.VAL_PREDICTIONS)
        c.set_terminated(base, "FINISHED")
        screen = Result(Candidate((), 0), 0.6)
        outcome = Outcome((), [], {"flip": "no gain beyond noise"}, [], 0.0, 0.0, screen, screen)
        baseline = Result(Candidate((), -1), 0.5, base)
        decision = run.decide(baseline, {}, "paired", 0.95, True)
        run.finish(outcome, baseline, None, None, decision, run.cost(1, 1.0), report, "model-x")
    return run, base, store.client().get_run(run.run_id)


def test_the_default_report_is_mfexps_html_report(compose_cfg):
    from mfexp.report import make_report

    cfg = compose_cfg()
    assert cfg.report._target_ == "mfexp.report.make_report"
    assert PolicySweeper()._report_plugin(cfg).func is make_report


def test_the_sweeper_calls_the_report_its_config_names(compose_cfg, mlflow_store, tmp_path, capsys):
    CALLS.clear()
    run, base, sweep = _end_of_sweep(compose_cfg, mlflow_store, tmp_path / "multirun",
                                     f"report._target_={__name__}.recording_report", "+report.label=third-party")
    assert CALLS == [{"sweep_run_id": run.run_id, "out_dir": tmp_path / "multirun" / "report", "model_name": "model-x",
                      "label": "third-party",
                      "options": {"register": True, "on_new_data": "challenger", "bootstrap_samples": 2000}}]
    assert f"report: {tmp_path / 'multirun' / 'report' / 'recorded.txt'}" in capsys.readouterr().out
    assert sweep.info.status == "FINISHED"
    assert sweep.data.tags[keys.TAG_BEST_RUN] == base
    assert keys.TAG_REPORT not in sweep.data.tags  # mfexp's own report did not run


def test_a_failing_report_does_not_lose_the_finished_sweep(compose_cfg, mlflow_store, tmp_path, capsys, caplog):
    with caplog.at_level(logging.ERROR, logger="mfexp.sweep"):
        _, _, sweep = _end_of_sweep(compose_cfg, mlflow_store, tmp_path / "multirun",
                                    f"report._target_={__name__}.failing_report")
    assert "report failed: the report broke" in caplog.text
    assert "report: (none)" in capsys.readouterr().out
    assert sweep.info.status == "FINISHED"


def test_a_report_that_cannot_be_found_fails_before_the_sweep_starts(compose_cfg):
    with pytest.raises(ConfigError, match=r"report\._target_=no_such_package\.report"):
        PolicySweeper()._report_plugin(compose_cfg("report._target_=no_such_package.report"))


def test_a_plugin_report_replaces_the_builtin_one(compose_cfg, mlflow_store, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "example_plugin"))
    monkeypatch.delitem(sys.modules, "mfexp_example_plugin", raising=False)
    run, base, sweep = _end_of_sweep(compose_cfg, mlflow_store, tmp_path / "multirun",
                                     "report._target_=mfexp_example_plugin.report.summary_report", "+report.html=false")
    summary = (tmp_path / "multirun" / "report" / "summary.md").read_text()
    assert summary.splitlines() == [f"# Sweep {run.run_id}", f"- best run: {base} (baseline)",
                                    "- policy: plain-plain-baseline", "- kept: none", "- rejected: flip"]
    assert keys.TAG_REPORT not in sweep.data.tags
