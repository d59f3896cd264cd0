"""``hydra/sweeper=mfexp``: the analyze phase. Every candidate is a job of Hydra's launcher and a child
run of one MLflow sweep run; finished candidates are reused when the same command is run again.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, List, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from mfexp.errors import ConfigError, MfexpError

from .config import SearchConf
from .staged import Candidate, OptunaSearch, Outcome, Result, SearchFailed, StagedSearch

log = logging.getLogger("mfexp.sweep")

ON_OFF = {"flip", "d4"}  # techniques without a strength: m is fixed at 1, only rr is searched


class PolicySweeper(Sweeper):
    def __init__(self) -> None:
        super().__init__()

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        try:
            return self._sweep(arguments)
        except (MfexpError, SearchFailed) as e:
            # One line and a non-zero exit, as for a single run (mfexp/__main__.py), not a traceback;
            # the sweep's MLflow run has already been ended FAILED with the error as a tag.
            log.error("%s", e)
            print(f"mfexp: error: {e}", file=sys.stderr, flush=True)
            sys.exit(getattr(e, "exit_code", 1))

    def _sweep(self, arguments: List[str]) -> Any:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        for o in parser.parse_overrides(arguments):
            if o.is_sweep_override():
                raise ConfigError(f"hydra/sweeper=mfexp searches policies itself; '{o.input_line}' is a sweep "
                                  "over values: use hydra/sweeper=basic for grids")
        self.arguments = list(arguments)
        job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, self.arguments)
        self.s = OmegaConf.merge(OmegaConf.structured(SearchConf), job_cfg.get("search") or {})
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        from mfexp.sweep_run import SweepRun  # heavy imports only once a sweep really starts

        with SweepRun(job_cfg, OmegaConf.to_container(self.s, resolve=True), self.arguments, sweep_dir) as run:
            self.run, self.job_idx, self.started = run, 0, time.perf_counter()
            self.full_epochs = int(job_cfg.trainer.epochs)
            self.extra = self._parallel_overrides()
            baseline, = self._launch_full([("baseline", ())])  # first: no sweep goes on without a baseline
            if baseline.val_loss is None:
                raise SearchFailed("the full-budget baseline failed: see its job log above")
            outcome = self._search()
            finals = [("final", outcome.policy)] if outcome.policy else []
            if self.s.reference:
                finals.append(("reference", None))
            results = dict(zip([role for role, _ in finals], self._launch_full(finals)))
            run.finish(outcome, baseline, results.get("final"), results.get("reference"),
                       self._cost(), self.s.report, self.s.model_name)
        return None

    # -- search ------------------------------------------------------------------------------
    def _search(self) -> Outcome:
        s = self.s
        space = {t: dict(s.space[t]) for t in s.order}
        if s.backend == "optuna":
            n_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=1) or 1
            search = OptunaSearch(s.order, space, len(s.rungs), s.optuna_trials, max(1, n_jobs), s.noise_seeds,
                                  s.noise_factor, s.min_improvement, budget_left=self._budget_left, log=log.info)
        elif s.backend == "staged":
            search = StagedSearch(s.order, space, len(s.rungs), s.eta, s.noise_seeds, s.noise_factor,
                                  s.min_improvement, budget_left=self._budget_left, log=log.info)
        else:
            raise ConfigError(f"search.backend={s.backend}: use staged or optuna")
        return search.run(self._evaluate)

    def _budget_left(self) -> bool:
        s, c = self.s, self._cost()
        if s.max_candidates and c["candidates"] >= s.max_candidates:
            return False
        if s.max_full_epochs and c["full_epochs"] >= s.max_full_epochs:
            return False
        return not (s.max_minutes and (time.perf_counter() - self.started) / 60 >= s.max_minutes)

    def _cost(self) -> dict[str, float]:
        return self.run.cost(self.full_epochs, time.perf_counter() - self.started)

    def _parallel_overrides(self) -> list[str]:
        # Parallel jobs on one machine share its cores: split torch threads between them.
        n_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=1) or 1
        if n_jobs == -1:
            n_jobs = os.cpu_count() or 1
        if n_jobs <= 1 or any(a.startswith("trainer.threads=") for a in self.arguments):
            return []
        return [f"trainer.threads={max(1, (os.cpu_count() or 1) // n_jobs)}", "trainer.num_workers=0"]

    def _policy_overrides(self, policy) -> list[str]:
        out = ["augment=policy"]
        for tech, axis, value in policy:
            if tech == "synthetic":
                out += ["synth=gan", f"synth.r={value}"]
                continue
            out.append(f"augment.techniques.{tech}.{axis}={value}")
            if tech in ON_OFF and axis == "rr":
                out.append(f"augment.techniques.{tech}.m=1.0")
        return out

    def _evaluate(self, cands: list[Candidate]) -> list[Result]:
        jobs = []
        for c in cands:
            rung = self.s.rungs[c.rung]
            epochs = max(1, math.ceil(rung.epochs * self.full_epochs))
            defining = self._policy_overrides(c.policy) + [f"trainer.epochs={epochs}", f"data.subset={rung.subset}",
                                                          f"trainer.seed={c.seed}"]
            tags = {"stage": str(c.stage), "technique": c.technique, "fidelity": f"e{epochs}-s{rung.subset}",
                    "rung": str(c.rung)}
            jobs.append((c, defining, tags, epochs * rung.subset))
        done = self._launch("candidate", [(d, t) for _, d, t, _ in jobs])
        results = [Result(c, val, run_id, full_epochs=cost if run_id else 0.0)
                   for (c, _, _, cost), (val, run_id) in zip(jobs, done)]
        for r in results:
            if not r.ok:
                log.warning("candidate failed: stage %s %s %s", r.candidate.stage, r.candidate.technique,
                            r.candidate.policy)
        return results

    def _launch_full(self, runs: list[tuple[str, Any]]) -> list[Result]:
        """Full-budget runs in one batch: (role, policy); policy None is the zero-search reference."""
        jobs = [(self._policy_overrides(p) if p is not None else [f"augment={self.s.reference_augment}"], {"role": role})
                for role, p in runs]
        done = self._launch("full", jobs)
        return [Result(Candidate(p or (), -1), val, run_id) for (_, p), (val, run_id) in zip(runs, done)]

    def _launch(self, kind: str, jobs: Sequence[tuple[list[str], dict[str, str]]]) -> list[tuple[float | None, str | None]]:
        """Run jobs not already finished in this sweep; returns (objective, MLflow run id) per job."""
        out: list[Any] = [None] * len(jobs)
        batch, where = [], []
        for i, (defining, tags) in enumerate(jobs):
            screening = kind == "candidate"
            tags = dict(tags)
            role = tags.pop("role", "candidate")
            # Screening never touches the test split nor logs a model; a full run is always tested and logs
            # its model as the command line says (trainer.log_model, true by default).
            fixed = [f"tracking.role={role}", f"trainer.evaluate_test={not screening}"]
            if screening:
                fixed.append("trainer.log_model=False")
            key = self.run.candidate_key(sorted(defining + fixed))
            found = self.run.finished(key)
            if found is not None:
                out[i] = found
                continue
            tag_args = [f"++tracking.tags.{k}={v}" for k, v in {**tags, "candidate": key}.items()]
            batch.append(self.arguments + defining + fixed + self.extra + tag_args +
                         [f"tracking.parent_run_id={self.run.run_id}"])
            where.append((i, key))
        if batch:
            returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            self.job_idx += len(batch)
            for (i, key), ret in zip(where, returns):
                if ret.status == JobStatus.COMPLETED:
                    found = self.run.finished(key)
                    out[i] = found if found is not None else (float(ret.return_value), None)
                else:
                    log.warning("job %s failed: %s", ret.overrides, _first_line(ret._return_value))
                    out[i] = (None, self.run.latest(key))
        return [o if o is not None else (None, None) for o in out]


def _first_line(e: Any) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0] if e is not None else "unknown error"
