"""``hydra/sweeper=mfexp``: the policy search as a Hydra sweeper; every candidate is a job of Hydra's launcher.

Each job is a child run of one MLflow sweep run (`sweep_run.SweepRun`); finished candidates are
reused when the same command is run again. The search itself is a backend (`staged`, `optuna_search`);
the report is whatever the job config's ``report`` group names with ``_target_``. Hydra's plugin
scan imports this module with every app start, so everything heavy is imported inside methods.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, List

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from mfexp import keys
from mfexp.errors import ConfigError, MfexpError, SearchFailed

from .config import SearchConf
from .density_search import DensitySearch
from .optuna_search import OptunaSearch
from .search import Candidate, Outcome, PolicySpec, Result
from .staged import StagedSearch

log = logging.getLogger("mfexp.sweep")


class PolicySweeper(Sweeper):
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
        report = self._report_plugin(job_cfg) if self.s.report else None  # a bad report fails before any job
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        from .sweep_run import SweepRun  # heavy imports only once a sweep really starts

        with SweepRun(job_cfg, OmegaConf.to_container(self.s, resolve=True), self.arguments, sweep_dir) as run:
            self.run, self.job_idx, self.started = run, 0, time.perf_counter()
            self.full_epochs = int(job_cfg.trainer.epochs)
            self.extra = self._parallel_overrides()
            # first: no sweep goes on without a baseline (a density search's baseline also scores the probes)
            baseline, = self._launch_full([("baseline", (), "all")], self._probe_overrides())
            if baseline.val_loss is None:
                raise SearchFailed("the full-budget baseline failed: see its job log above")
            run.baseline_id = baseline.run_id
            self.early: dict[str, Result] = {}  # full-budget runs launched in the candidates' batch
            outcome = self._search(baseline)
            finals = [("final", outcome.policy, "all")] if outcome.policy else []
            if self.s.reference and "reference" not in self.early:
                finals.append(("reference", None, "all"))
            results = {**self.early, **dict(zip([role for role, _, _ in finals], self._launch_full(finals)))}
            decision = self._deliver(baseline, outcome, results)
            run.finish(outcome, baseline, results.get("final"), results.get("reference"), decision,
                       self._cost(), report, self.s.model_name)
        return None

    def _deliver(self, baseline: Result, outcome: Outcome, results: dict[str, Result]):
        """The delivery rule over every policy trained at full budget; a delivered density candidate is refit
        here as the ``final`` run (added to ``results``). Returns the `delivery.Decision`."""
        from dataclasses import replace

        challengers = {r.candidate.name: r for r in outcome.results if r.candidate.name and r.ok}
        challengers.update({role: r for role, r in results.items() if r.ok})
        decision = self.run.decide(baseline, challengers, self.s.delivery_rule, self.s.delivery_level,
                                   self.s.delivery_correct)
        log.info("delivery: %s", decision.reason)
        picked = challengers.get(decision.delivered)
        if picked is not None and decision.delivered not in results:  # a density candidate: its refit is the final run
            c = picked.candidate  # trainer.refit_from: the candidate's fit stands, only the refit is trained
            results["final"], = self._launch_full([("final", c.policy, c.mode)], [f"trainer.refit_from={picked.run_id}"])
            if not results["final"].ok:  # a failed job never fails the sweep: the baseline stands
                log.warning("the final run of %s failed: the baseline is delivered", decision.delivered)
                decision = replace(decision, delivered="baseline", reason=f"the baseline is delivered: {decision.delivered} "
                                   "beat it on validation, but its final run (the refit) failed; see its job log")
        return decision

    # -- search ------------------------------------------------------------------------------
    def _search(self, baseline: Result) -> Outcome:
        s = self.s
        if s.backend == "density":
            scores = self.run.artifact_dict(baseline.run_id, keys.DENSITY_ARTIFACT)
            if scores is None:
                raise SearchFailed(f"the baseline run {baseline.run_id} has no {keys.DENSITY_ARTIFACT}: see its job log")
            # The reference goes out in the candidates' batch, so a parallel launcher runs them side by side.
            early = [("reference", None, "all")] if s.reference else []
            return DensitySearch(s.order, s.density_keep, s.density_top, s.density_rr, s.density_proposals,
                                 log=log.info).run(scores, baseline, lambda c: self._evaluate(c, early),
                                                   self._affordable(baseline))
        space = {t: dict(s.space[t]) for t in s.order}
        if s.backend == "optuna":
            search = OptunaSearch(s.order, space, len(s.rungs), s.optuna_trials, self._n_jobs(), s.noise_seeds,
                                  s.noise_factor, s.min_improvement, budget_left=self._budget_left, log=log.info)
        elif s.backend == "staged":
            search = StagedSearch(s.order, space, len(s.rungs), s.eta, s.noise_seeds, s.noise_factor,
                                  s.min_improvement, budget_left=self._budget_left, log=log.info)
        else:
            raise ConfigError(f"search.backend={s.backend}: use staged, optuna or density")
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

    def _affordable(self, baseline: Result) -> int:
        """How many full-budget candidates (fits without refit) fit in search.max_cost trainings like the baseline's."""
        one = self.run.training_compute(baseline.run_id)
        each = self.full_epochs * self.run.train_images * float(self.run.cfg.data.subset)
        return int(self.s.max_cost * one / each + 1e-9) if each > 0 else 0

    def _n_jobs(self) -> int:
        """How many jobs the launcher runs at once: ``hydra.launcher.n_jobs`` (-1: one per core), else 1."""
        n_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=1) or 1
        return (os.cpu_count() or 1) if n_jobs == -1 else max(1, n_jobs)

    def _parallel_overrides(self) -> list[str]:
        # Parallel jobs on one machine share its cores: split torch threads between them.
        n_jobs = self._n_jobs()
        if n_jobs <= 1 or any(a.startswith("trainer.threads=") for a in self.arguments):
            return []
        return [f"trainer.threads={max(1, (os.cpu_count() or 1) // n_jobs)}", "trainer.num_workers=0"]

    def _report_plugin(self, job_cfg: DictConfig) -> Callable[..., Any] | None:
        """The ``report`` group's ``_target_``, located now and called when the sweep ends (None: no report)."""
        node = job_cfg.get("report")
        if node is None or not node.get("_target_"):
            return None
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        try:
            return instantiate(node, _partial_=True)
        except InstantiationException as e:
            raise ConfigError(f"report._target_={node._target_}: {_first_line(e.__cause__ or e)}") from None

    def _probe_overrides(self) -> list[str]:
        """For search.backend=density: what the baseline job scores after its fit (mfexp.density)."""
        s = self.s
        if s.backend != "density":
            return []
        targets = self._technique_targets()
        unknown = [t for t in s.order if not targets.get(t)]
        if unknown:
            raise ConfigError(f"search.order: {', '.join(unknown)} not in augment=policy's techniques")
        probes = DensitySearch.probes(s.order, s.density_magnitudes, {t: self._has_strength(t) for t in s.order})
        return ["++probe.targets={" + ",".join(f"{t}:'{targets[t]}'" for t in probes) + "}",
                "++probe.magnitudes={" + ",".join(f"{t}:[{','.join(map(str, ms))}]" for t, ms in probes.items()) + "}",
                f"probe.repeats={s.density_repeats}"]

    def _policy_overrides(self, policy: PolicySpec, mode: str = "all") -> list[str]:
        out, with_m = ["augment=policy"], {t for t, a, _ in policy if a == "m"}
        if mode != "all":
            out.append(f"augment.mode={mode}")
        for tech, axis, value in policy:
            if tech == "synthetic":
                out += ["synth=gan", f"synth.r={value}"]
                continue
            out.append(f"augment.techniques.{tech}.{axis}={value}")
            if axis == "rr" and tech not in with_m and not self._has_strength(tech):
                out.append(f"augment.techniques.{tech}.m=1.0")  # on/off: any m > 0 is on, only rr is searched
        return out

    def _has_strength(self, technique: str) -> bool:
        """The technique class's own `mfexp.policy.Technique.continuous` (False for flips)."""
        from hydra.utils import get_class

        target = self._technique_targets().get(technique)
        try:
            return bool(getattr(get_class(target), "continuous", True)) if target else True
        except (ImportError, ValueError):  # the job reports the bad _target_ itself
            return True

    def _technique_targets(self) -> dict[str, str]:
        """technique -> ``_target_`` of ``augment=policy`` as this sweep composes it (plugins' techniques included)."""
        if getattr(self, "_targets", None) is None:
            if getattr(self, "hydra_context", None) is not None:
                args = [a for a in getattr(self, "arguments", []) if not a.lstrip("+~").startswith("augment=")]
                techniques = self.hydra_context.config_loader.load_sweep_config(
                    self.config, args + ["augment=policy"]).augment.techniques
            else:  # not set up by Hydra (unit use): mfexp's own technique options
                techniques = _builtin_techniques()
            self._targets = {str(k): str(v.get("_target_", "")) for k, v in techniques.items()}
        return self._targets

    def _evaluate(self, cands: list[Candidate], full: Sequence[tuple[str, Any, str]] = ()) -> list[Result]:
        """Run the candidates (and the full-budget runs ``full``, kept in ``self.early``) as one launcher batch."""
        jobs = []
        for c in cands:
            if c.rung < 0:  # the full budget: as the baseline trains (density's candidates)
                epochs, fidelity, share = self.full_epochs, "full", []
                cost = epochs * float(self.run.cfg.data.subset)
            else:
                rung = self.s.rungs[c.rung]
                epochs = max(1, math.ceil(rung.epochs * self.full_epochs))
                fidelity, share, cost = f"e{epochs}-s{rung.subset}", [f"data.subset={rung.subset}"], epochs * rung.subset
            defining = self._policy_overrides(c.policy, c.mode) + [f"trainer.epochs={epochs}", *share, f"trainer.seed={c.seed}"]
            tags = {keys.short(keys.TAG_STAGE): str(c.stage), keys.short(keys.TAG_TECHNIQUE): c.technique,
                    keys.short(keys.TAG_FIDELITY): fidelity, keys.short(keys.TAG_RUNG): str(c.rung)}
            if c.name:
                tags[keys.short(keys.TAG_PROPOSAL)] = c.name
            jobs.append((c, defining, tags, cost))
        full_jobs = [self._full_job(role, p, mode) for role, p, mode in full]
        done = self._launch([(d, t, True) for _, d, t, _ in jobs] + full_jobs)
        done, early = done[:len(jobs)], done[len(jobs):]
        if full:
            self.early.update({role: Result(Candidate(p or (), -1, mode=mode), val, run_id)
                               for (role, p, mode), (val, run_id) in zip(full, early)})
        results = [Result(c, val, run_id, full_epochs=cost if run_id else 0.0)
                   for (c, _, _, cost), (val, run_id) in zip(jobs, done)]
        for r in results:
            if not r.ok:
                log.warning("candidate failed: stage %s %s %s", r.candidate.stage, r.candidate.technique,
                            r.candidate.policy)
        return results

    def _full_job(self, role: str, policy: Any, mode: str, extra: Sequence[str] = ()) -> tuple[list[str], dict[str, str], bool]:
        """A full-budget job with refit and test: (defining overrides, tags, screening=False); policy None: the reference."""
        defining = self._policy_overrides(policy, mode) if policy is not None else [f"augment={self.s.reference_augment}"]
        return defining + list(extra), {"role": role}, False

    def _launch_full(self, runs: list[tuple[str, Any, str]], extra: Sequence[str] = ()) -> list[Result]:
        """Full-budget runs with refit and test, in one batch: (role, policy, mode); policy None is the reference."""
        done = self._launch([self._full_job(role, p, mode, extra) for role, p, mode in runs])
        return [Result(Candidate(p or (), -1, mode=mode), val, run_id) for (_, p, mode), (val, run_id) in zip(runs, done)]

    def _launch(self, jobs: Sequence[tuple[list[str], dict[str, str], bool]]) -> list[tuple[float | None, str | None]]:
        """Run jobs (defining overrides, tags, screening) not already finished in this sweep, as one launcher batch;
        returns (objective, MLflow run id) per job."""
        out: list[Any] = [None] * len(jobs)
        batch, where = [], []
        for i, (defining, tags, screening) in enumerate(jobs):
            tags = dict(tags)
            role = tags.pop("role", "candidate")
            # Screening never touches the test split, refits or logs a model; a full run is always tested,
            # refits and logs its model as the command line says (trainer.refit / log_model).
            fixed = [f"tracking.role={role}", f"trainer.evaluate_test={not screening}"]
            if screening:
                fixed += ["trainer.log_model=False", "trainer.refit=False"]
            key = self.run.candidate_key(sorted(defining + fixed))
            found = self.run.finished(key)
            if found is not None:
                out[i] = found
                continue
            tag_args = [f"++tracking.tags.{k}={v}" for k, v in {**tags, keys.short(keys.TAG_CANDIDATE): key}.items()]
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


def _builtin_techniques() -> dict[str, Any]:
    from mfexp.__main__ import config_dir

    folder = Path(config_dir()) / "augment" / "technique"
    return {f.stem: OmegaConf.load(f) for f in sorted(folder.glob("*.yaml"))}


def _first_line(e: Any) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0] if e is not None else "unknown error"
