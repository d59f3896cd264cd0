"""Search strategies side by side on real data, at the same screening budget, over several seeds.

Columns: no policy (augment=none), the zero-search TrivialAugment-style reference (augment=trivial),
mfexp's staged search, density matching (``search=density``: no screening training, the no-policy
run's model scores the techniques), and a grid, random search and Optuna TPE over the same axes,
each spending the screening compute the staged search spent for that seed. Every search's winner
is trained at full budget (the default recipe, refit included) and tested; selection only ever
sees validation loss. Screening runs never refit, as in the sweeper.

It drives mfexp's own pieces (Hydra-composed config, data, policy, model, train loop, and the
sweeper's StagedSearch) in a process pool without MLflow, so a GPU box runs many candidates at once:

    python bench/search_compare.py --data ../shared/data/neu-surface-defect --seeds 0 1 2 --jobs 6

On a 2-core CPU: ``--jobs 1`` (seeds then run one after another, so wall times mean something).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from hydra_plugins.mfexp_sweeper.config import SearchConf  # noqa: E402
from hydra_plugins.mfexp_sweeper.delivery import RULES  # noqa: E402
from hydra_plugins.mfexp_sweeper.search import Candidate, Result, stage_values  # noqa: E402
from hydra_plugins.mfexp_sweeper.staged import StagedSearch  # noqa: E402

ON_OFF = {"flip", "d4"}
_CFG = {}


def overrides_for(policy, data_root: str, epochs: int, subset: float, seed: int, extra: list[str],
                  screening: bool = False) -> list[str]:
    out = ["data=folder", f"data.root={data_root}", "trainer.progress=off", f"trainer.epochs={epochs}",
           f"data.subset={subset}", f"trainer.seed={seed}", *extra, *(["trainer.refit=false"] if screening else [])]
    if policy == "trivial":
        return out + ["augment=trivial"]
    out.append("augment=policy")
    if isinstance(policy, dict):  # {"mode": ..., "spec": ((tech, axis, value), ...)}: a proposal of the default search
        out.append(f"augment.mode={policy['mode']}")
        policy = policy["spec"]
    for tech, axis, value in policy:
        out.append(f"augment.techniques.{tech}.{axis}={value}")
        if tech in ON_OFF:
            out.append(f"augment.techniques.{tech}.m=1.0")
    return out


def refit_job(overrides: list[str], epochs: int) -> dict:
    """Only the refit of a job (`mfexp.job.refit`: same initial weights, loaders and schedule as a full run's
    refit, so the same model), then its test outcome: what delivering a policy trained without refit costs."""
    from hydra import compose

    from mfexp import job as R
    from mfexp.loader import make_loader
    from mfexp.train import predict

    _init()
    cfg = compose("config", overrides=overrides)
    start = time.perf_counter()
    prepared = R.prepare(cfg)
    channels_last = prepared.device.type == "cuda" if str(cfg.trainer.channels_last) == "auto" else \
        str(cfg.trainer.channels_last).lower() == "true"
    model = prepared.model.to(prepared.device)
    seconds = R.refit(cfg, model, prepared.train_set, prepared.splits.val, prepared.policy, epochs, prepared.device,
                      channels_last)
    prob, y = predict(model, make_loader(prepared.splits.test, cfg.trainer.batch_size * 2, train=False), prepared.device,
                      channels_last)
    return {"refit_epochs": epochs, "refit_seconds": seconds, "refit_job_seconds": time.perf_counter() - start,
            "test_error": float((prob.argmax(1) != y).mean()), "test_correct": (prob.argmax(1) == y).astype(int).tolist(),
            "test_true": y.tolist(), "test_pred": prob.argmax(1).tolist()}


def _init() -> None:
    from hydra import initialize_config_dir

    from mfexp.config import register_configs

    if "init" not in _CFG:
        register_configs()
        initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3").__enter__()
        _CFG["init"] = True


def train_job(overrides: list[str], test: bool, probe: dict | None = None) -> dict:
    """One training in a worker process: val loss, and test error when asked.

    ``probe``: {technique: [m, ...]} to score by density matching after the fit (mfexp/density.py),
    returned as ``density`` with the seconds it took."""
    from hydra import compose

    from mfexp import density
    from mfexp import job as R

    _init()
    cfg = compose("config", overrides=[*overrides, f"trainer.evaluate_test={str(test).lower()}"])
    scored: dict = {}

    def after_fit(trained) -> None:
        # The first fit (training split only), before the refit: what validation says about the policy
        # (per-image loss and prediction, for the delivery rules) and what that very model scores on test.
        y = trained.val_labels
        scored.update(val_true=y.tolist(), val_pred=trained.val_prob.argmax(1).tolist(),
                      val_nll=np.round(-np.log(np.clip(trained.val_prob[np.arange(len(y)), y], 1e-12, None)), 6).tolist(),
                      fit_seconds=trained.seconds, n_train=len(prepared.train_set), n_val=len(prepared.splits.val))
        if test:
            prob, yt = R.evaluate(trained, prepared.splits.test, cfg.trainer.batch_size)
            scored.update(fit_test_pred=prob.argmax(1).tolist(), fit_test_error=float((prob.argmax(1) != yt).mean()))
        if probe:
            t0 = time.perf_counter()
            targets = {k: v._target_ for k, v in compose("config", overrides=["augment=policy"]).augment.techniques.items()}
            s = density.score(trained.model, prepared.splits.val, prepared.train_set.labels, targets, probe,
                              device=trained.device, channels_last=trained.channels_last,
                              batch_size=cfg.trainer.batch_size * 2, seed=cfg.trainer.seed)
            scored.update(density=s.to_dict(), density_seconds=time.perf_counter() - t0)

    start = time.perf_counter()
    try:
        prepared = R.prepare(cfg)
        trained = R.execute(prepared, after_fit=after_fit)  # as `python -m mfexp`, untracked
    except Exception as e:  # noqa: BLE001 - a failed candidate is a data point, not the end
        return {"val_loss": None, "error": f"{type(e).__name__}: {e}"}
    out = {"val_loss": trained.history.best_val_loss, "epochs_run": len(trained.history.val_loss),
           "refit_epochs": trained.refit_epochs, "refit_seconds": trained.refit_seconds,
           "seconds": time.perf_counter() - start, "subset": cfg.data.subset, **scored}
    if test:
        prob, y = trained.test_prob, trained.test_labels
        out["test_error"] = float((prob.argmax(1) != y).mean())
        out["test_correct"] = (prob.argmax(1) == y).astype(int).tolist()
        out["test_true"], out["test_pred"] = y.tolist(), prob.argmax(1).tolist()
    return out


class Bench:
    def __init__(self, args, pool):
        import yaml

        self.args, self.pool = args, pool
        search = yaml.safe_load((ROOT / "conf/search/staged.yaml").read_text())
        self.order, self.space, self.rungs = search["order"], search["space"], search["rungs"]
        self.eta, self.noise_seeds = search["eta"], search["noise_seeds"]
        # density matching: the search=density preset over SearchConf's defaults
        d = SearchConf()
        self.density_order = yaml.safe_load((ROOT / "conf/search/density.yaml").read_text())["order"]
        self.density_keep, self.density_top, self.density_rr = d.density_keep, d.density_top, d.density_rr
        self.density_magnitudes = d.density_magnitudes
        self.extra = [f"trainer.device={args.device}", f"trainer.num_workers={args.workers}", *args.override]

    def run(self, policy, epochs, subset, seed, test=False, probe=None) -> dict:
        ov = overrides_for(policy, self.args.data, epochs, subset, seed, self._extra(seed))
        return self.pool.submit(train_job, ov, test, probe).result()

    def _extra(self, seed: int) -> list[str]:
        """Overrides for every job of a seed; ``--vary-split``: the validation split is drawn with the seed too."""
        return [*self.extra, *([f"data.seed={seed}"] if self.args.vary_split else [])]

    def many(self, jobs) -> list[dict]:
        """Screening runs: (policy, epochs, subset, seed, test); never refit."""
        futures = [self.pool.submit(train_job, overrides_for(p, self.args.data, e, s, seed, self._extra(seed), screening=True), t)
                   for p, e, s, seed, t in jobs]
        return [f.result() for f in futures]

    def full(self, policy, seed, probe=None) -> dict:
        return self.run(policy, self.args.epochs, 1.0, seed, test=True, probe=probe)

    def default(self, r: dict, seed: int) -> dict:
        """The default search: density matching's proposals, each trained at full budget (the fit is the
        candidate; its refit is what delivery would cost), every per-image outcome kept for the delivery rules."""
        from mfexp.density import Scores, propose

        s = SearchConf()
        none_run = r["none"]
        choice, proposals = propose(Scores.from_dict(none_run["density"]), s.density_keep, s.density_top,
                                    s.density_rr, s.density_proposals)
        print(f"[default s{seed}] {choice.reason}; proposals " + ", ".join(p.name for p in proposals), flush=True)
        out = {"reason": choice.reason, "proposals": {}, "policies": {}}
        r["default"] = out
        specs = {}
        for p in proposals:  # the candidates: fits on the training split, no refit (as the sweep trains them)
            specs[p.name] = {"mode": p.mode, "spec": tuple(x for t, m, rr in p.techniques for x in ((t, "m", m), (t, "rr", rr)))}
            out["policies"][p.name] = {"mode": p.mode, "techniques": [list(x) for x in p.techniques], "adds": p.adds}
            ov = overrides_for(specs[p.name], self.args.data, self.args.epochs, 1.0, seed, self._extra(seed), screening=True)
            x = out["proposals"][p.name] = self.pool.submit(train_job, ov, True).result()
            for k in ("test_error", "test_correct", "test_true", "test_pred"):  # the first fit's: kept as fit_test_*
                x.pop(k, None)
        # What would be delivered, by every rule the table compares: only those candidates are refit (the refit is
        # the same model a full run makes, mfexp.job.refit), so each rule's delivered test error is known.
        needed = {delivered(r, rule, correct, refit=False)["role"] for rule, correct in rule_variants(list(RULES))}
        for name in sorted(needed & set(specs)):
            ov = overrides_for(specs[name], self.args.data, self.args.epochs, 1.0, seed, self._extra(seed))
            x = out["proposals"][name]
            x.update(self.pool.submit(refit_job, ov, x["epochs_run"]).result())
            x["seconds"] += x["refit_job_seconds"]
        spent = sum(image_epochs(r, refit=False) for r in out["proposals"].values())
        out["full_epochs"] = spent / max(image_epochs(none_run, refit=False) / none_run["epochs_run"], 1)
        out["cost_multiple_with_refit"] = spent / image_epochs(none_run, refit=True)
        return out

    def probe(self) -> dict:
        """technique -> m values density matching scores (as the sweeper's search=density)."""
        from hydra_plugins.mfexp_sweeper.density_search import DensitySearch

        return DensitySearch.probes(self.density_order, self.density_magnitudes, {t: t not in ON_OFF for t in self.density_order})

    def density(self, none_run: dict) -> dict:
        """The policy density matching builds from the no-policy run's scores: no screening training."""
        from hydra_plugins.mfexp_sweeper.density_search import DensitySearch
        from hydra_plugins.mfexp_sweeper.search import Candidate

        outcome = DensitySearch(self.density_order, self.density_keep, self.density_top, self.density_rr,
                                log=lambda m: print(f"[density] {m}", flush=True)).run(
            none_run["density"], Result(Candidate((), 0), none_run["val_loss"]))
        return {"policy": list(outcome.policy), "kept": outcome.kept, "rejected": outcome.rejected,
                "note": outcome.note, "full_epochs": 0.0, "probe_seconds": none_run.get("density_seconds")}

    # -- strategies ------------------------------------------------------------------------
    def staged(self, seed: int) -> dict:
        E = self.args.epochs
        spent = [0.0]

        def evaluate(cands: list[Candidate]) -> list[Result]:
            jobs = [(c.policy, E, self.rungs[c.rung]["subset"], seed + 1000 * c.seed, False) for c in cands]
            outs = self.many(jobs)
            res = []
            for c, o in zip(cands, outs):
                spent[0] += o.get("epochs_run", 0) * self.rungs[c.rung]["subset"]
                res.append(Result(c, o["val_loss"], None))
            return res

        outcome = StagedSearch(self.order, self.space, len(self.rungs), self.eta, self.noise_seeds,
                               log=lambda m: print(f"[staged s{seed}] {m}", flush=True)).run(evaluate)
        return {"policy": list(outcome.policy), "kept": outcome.kept, "rejected": outcome.rejected,
                "noise": outcome.noise, "screen_gain": outcome.screen_baseline.val_loss - outcome.incumbent.val_loss,
                "full_epochs": spent[0]}

    def choices(self):
        """Per technique: off, or one of its stage values (as (tech, axis, value) tuples)."""
        return [[()] + [tuple((t, a, v) for a, v in vals) for vals in stage_values(self.space[t])] for t in self.order]

    def _screen(self, policies, seed) -> tuple[list, list[float], float]:
        top = self.rungs[-1]["subset"]
        outs = self.many([(p, self.args.epochs, top, seed, False) for p in policies])
        spent = sum(o.get("epochs_run", 0) * top for o in outs)
        return policies, [o["val_loss"] if o["val_loss"] is not None else math.inf for o in outs], spent

    def grid(self, seed: int, n: int) -> dict:
        combos = itertools.product(*[c[:2] for c in self.choices()])  # off / first value: a coarse grid
        policies = [tuple(itertools.chain(*combo)) for combo in itertools.islice(combos, n)]
        return self._pick(*self._screen(policies, seed))

    def random(self, seed: int, n: int) -> dict:
        rng = random.Random(seed)
        policies = [tuple(itertools.chain(*(rng.choice(c) for c in self.choices()))) for _ in range(n)]
        return self._pick(*self._screen(policies, seed))

    def tpe(self, seed: int, n: int) -> dict:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        choices = self.choices()
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, n // 3)))
        policies, losses, spent = [], [], 0.0
        batch = max(1, self.args.jobs // 2)
        while len(policies) < n:
            trials = [study.ask() for _ in range(min(batch, n - len(policies)))]
            pols = [tuple(itertools.chain(*(c[t.suggest_categorical(name, list(range(len(c))))]
                                            for name, c in zip(self.order, choices)))) for t in trials]
            _, ls, sp = self._screen(pols, seed)
            for t, l in zip(trials, ls):
                study.tell(t, l if math.isfinite(l) else None, state=None if math.isfinite(l) else optuna.trial.TrialState.FAIL)
            policies += pols
            losses += ls
            spent += sp
        return self._pick(policies, losses, spent)

    @staticmethod
    def _pick(policies, losses, spent) -> dict:
        i = int(np.argmin(losses))
        return {"policy": list(policies[i]), "full_epochs": spent, "screen_val_loss": losses[i], "candidates": len(policies)}


def image_epochs(run: dict, refit: bool) -> float:
    """Training compute of a run in image-epochs: the fit on the training split, plus the refit on train + validation."""
    fit = run["epochs_run"] * run["n_train"]
    return fit + (run.get("refit_epochs", 0) * (run["n_train"] + run["n_val"]) if refit else 0)


def ci95(xs: list[float]) -> tuple[float, float]:
    """Mean and half-width of a t-interval over seeds."""
    from scipy import stats

    xs = np.asarray(xs, float)
    if len(xs) < 2:
        return float(xs.mean()), float("nan")
    return float(xs.mean()), float(stats.t.ppf(0.975, len(xs) - 1) * xs.std(ddof=1) / math.sqrt(len(xs)))


def kept(r: dict, method: str) -> dict:
    """What the sweep would deliver: of baseline (none), final (the method's policy) and reference (trivial),
    the lowest validation loss, ties to the lower test error (as sweep_run.SweepRun.finish)."""
    runs = [r["none"], r["trivial"], r[method]["final"]]
    best = min(runs, key=lambda x: (x["val_loss"] if x.get("val_loss") is not None else math.inf, x.get("test_error", 1.0)))
    return {"test_error": best.get("test_error"), "role": ["baseline", "reference", "final"][runs.index(best)],
            "wall_seconds": r[method]["wall_seconds"] + r["none"]["seconds"] + r["trivial"]["seconds"],
            "cost_multiple": r[method]["cost_multiple"]}


def sweep_seconds(r: dict, role: str) -> float:
    """Wall time of a default sweep, from its parts as measured: baseline (fit, probes, refit), the candidates'
    fits, the reference (fit and refit), and the delivered candidate's refit."""
    cands = r["default"]["proposals"]
    final = cands[role].get("refit_job_seconds", 0.0) if role in cands else 0.0
    return r["none"]["seconds"] + r["trivial"]["seconds"] + sum(x["fit_seconds"] for x in cands.values()) + final


def summarize(results: dict, columns: list[str], methods: list[str], rule: str = "paired") -> dict:
    """Per column over seeds: test error mean ± 95 % interval, search cost, wall seconds; ``<method> kept``:
    what that sweep delivers after its full-budget check (`kept`)."""
    rows: dict[str, list[dict]] = {}
    for r in results["seeds"].values():
        for col in columns:
            if col in r and col != "default":
                x = r[col]
                final = x["final"] if "final" in x else x
                rows.setdefault(col, []).append({"test_error": final.get("test_error"), "cost_multiple": x.get("cost_multiple", 0.0),
                                                 "wall_seconds": x.get("wall_seconds", x.get("seconds", 0.0))})
        for m in methods:
            if m == "default" and m in r:
                for name, x in [("none", r["none"]), ("trivial", r["trivial"]), *r[m]["proposals"].items()]:
                    # the first fit's test error (before any refit): every policy has one
                    rows.setdefault(f"{name} (no refit)", []).append({"test_error": x.get("fit_test_error"), "cost_multiple": 0.0,
                                                                      "wall_seconds": x.get("fit_seconds", 0.0)})
                d = delivered(r, rule)
                rows.setdefault("default kept", []).append({**d, "cost_multiple": r[m]["cost_multiple_with_refit"],
                                                            "wall_seconds": sweep_seconds(r, d["role"])})
            elif m in r and "none" in r and "trivial" in r:
                rows.setdefault(f"{m} kept", []).append(kept(r, m))
    summary = {}
    for col, xs in rows.items():
        errs = [x["test_error"] for x in xs if x["test_error"] is not None]
        if errs:
            m, h = ci95(errs)
            summary[col] = {"test_error_mean": m, "ci95": h, "n": len(errs), "errors": errs,
                            "cost_multiple": float(np.mean([x["cost_multiple"] for x in xs])),
                            "wall_seconds": float(np.mean([x["wall_seconds"] for x in xs])),
                            **({"roles": [x["role"] for x in xs]} if "role" in xs[0] else {})}
    return summary


def rule_variants(rules: list[str]) -> list[tuple[str, bool]]:
    """(rule, Bonferroni-corrected) pairs the rules table compares."""
    return [(rule, c) for rule in rules for c in ((True, False) if rule in ("paired", "paired_error", "mcnemar") else (False,))]


def delivered(r: dict, rule: str, correct: bool = True, refit: bool = True) -> dict:
    """What the default sweep of one seed delivers under a delivery rule (`delivery.decide`) and its refit's test error
    (``refit=False``: the decision only, before any refit exists)."""
    import numpy as np
    from hydra_plugins.mfexp_sweeper.delivery import Outcomes, decide

    def outcomes(name: str, x: dict) -> Outcomes:
        return Outcomes(name, np.asarray(x["val_nll"], float), np.asarray(x["val_pred"]) != np.asarray(x["val_true"]))

    runs = {"none": r["none"], "trivial": r["trivial"], **r["default"]["proposals"]}
    ok = {k: x for k, x in runs.items() if x.get("val_nll") is not None}
    d = decide(outcomes("none", ok["none"]), [outcomes(k, x) for k, x in ok.items() if k != "none"], rule, correct=correct)
    return {"test_error": runs[d.delivered].get("test_error") if refit else None, "role": d.delivered, "reason": d.reason}


def rules_table(results: dict, rules: list[str]) -> dict:
    """Per delivery rule over the seeds: what the default sweep delivers, its test error, and how often it is worse
    than no policy by more than one test image (the issue's bar); plus the oracle (best refit on test) for scale."""
    seeds = [r for r in results["seeds"].values() if "default" in r]
    out = {}
    for rule, correct in rule_variants(rules):
        rows = [delivered(r, rule, correct) for r in seeds]
        if any(x["test_error"] is None for x in rows):  # a rule added after the run: its pick was never refit
            out[f"{rule}{' (bonferroni)' if correct else ''}"] = {"test_error_mean": float("nan"), "ci95": float("nan"),
                                                               "errors": [], "roles": [x["role"] for x in rows],
                                                               "worse_than_none": -1}
            continue
        errs = [x["test_error"] for x in rows]
        one = [1.0 / len(r["none"]["test_true"]) for r in seeds]
        worse = sum(x["test_error"] - r["none"]["test_error"] > o + 1e-9 for x, r, o in zip(rows, seeds, one))
        m, h = ci95(errs)
        out[f"{rule}{' (bonferroni)' if correct else ''}"] = {"test_error_mean": m, "ci95": h, "errors": errs,
                                                           "roles": [x["role"] for x in rows], "worse_than_none": worse}
    return out


def val_test_agreement(results: dict) -> tuple[int, int]:
    """How often validation and test order a policy against no policy the same way: (agree, comparisons).

    Per seed and policy of the default search (trivial included): its first fit's validation errors against
    the no-policy fit's, and the same two models' test errors; comparisons tied on either side are left out."""
    agree = pairs = 0
    for r in results["seeds"].values():
        if "default" not in r:
            continue
        base = r["none"]
        be = sum(np.asarray(base["val_pred"]) != np.asarray(base["val_true"]))
        for x in [r["trivial"], *r["default"]["proposals"].values()]:
            ve = sum(np.asarray(x["val_pred"]) != np.asarray(x["val_true"]))
            ft, bt = round(x["fit_test_error"] * len(x["fit_test_pred"])), round(base["fit_test_error"] * len(x["fit_test_pred"]))
            if ve != be and ft != bt:
                pairs += 1
                agree += (ve < be) == (ft < bt)
    return agree, pairs


def print_rules(table: dict) -> None:
    print(f"\n{'delivery rule':<26} {'delivered test error':<24} {'per seed':<30} {'worse than none by >1 image':>28}  delivered")
    for name, s in table.items():
        seeds = " ".join(f"{e:.1%}" for e in s["errors"])
        print(f"{name:<26} {s['test_error_mean']:.2%} ± {s['ci95']:.2%}       {seeds:<30} {s['worse_than_none']:>28}  "
              f"{', '.join(s['roles'])}")


def print_table(summary: dict) -> None:
    print(f"\n{'column':<16} {'test error (mean ± 95% CI)':<30} {'per seed':<22} {'search cost':>11} {'wall s':>7}")
    for col, s in summary.items():
        seeds = " ".join(f"{e:.1%}" for e in s["errors"])
        print(f"{col:<16} {s['test_error_mean']:.2%} ± {s['ci95']:.2%} (n={s['n']})   {seeds:<22} {s['cost_multiple']:>10.2f}x "
              f"{s['wall_seconds']:>7.0f}" + (f"  kept: {', '.join(s['roles'])}" if "roles" in s else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/neu-surface-defect"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--short-epochs", type=int, default=15, help="also train none/trivial this long (0: skip)")
    ap.add_argument("--methods", nargs="+", default=["staged", "density", "grid", "random", "tpe"])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers per job")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every job")
    ap.add_argument("--out", default="search_compare.json")
    ap.add_argument("--deadline", type=float, default=0, help="seconds; start no new method after this (0: none)")
    ap.add_argument("--imbalanced", metavar="GOOD", help="run on bench/recipe.py's imbalanced cut of --data: class GOOD "
                    "whole as the defect-free majority, 15 %% of every other class (a symlink tree, read in place)")
    ap.add_argument("--summarize", metavar="JSON", nargs="+", help="only print the tables of saved runs; several files "
                    "of the same cell (run in chunks of seeds) are pooled by seed")
    ap.add_argument("--rule", default=SearchConf().delivery_rule, choices=RULES,
                    help="the delivery rule behind the 'default kept' column (every rule is tabulated as well)")
    ap.add_argument("--vary-split", action="store_true", help="draw the validation split with each seed (data.seed=seed), "
                    "so seeds differ in the split as well as in training")
    args = ap.parse_args()
    if args.summarize:
        files = [json.loads(Path(f).read_text()) for f in args.summarize]
        saved, a = files[0], files[0]["args"]
        for other in files[1:]:
            b = other["args"]
            differ = [k for k in ("data", "epochs", "imbalanced", "methods", "vary_split", "override") if a.get(k) != b.get(k)]
            if differ:
                raise SystemExit(f"--summarize: {' '.join(args.summarize)} are not the same cell ({', '.join(differ)} differ)")
            saved["seeds"].update(other["seeds"])
        columns = ["none", "trivial"] + a["methods"] + ([f"none@{a['short_epochs']}", f"trivial@{a['short_epochs']}"]
                                                       if a["short_epochs"] else [])
        print_table(summarize(saved, columns, a["methods"], args.rule))
        if "default" in a["methods"]:
            print_rules(rules_table(saved, list(RULES)))
            agree, pairs = val_test_agreement(saved)
            print(f"validation errors and test errors (first fits) order a policy against no policy the same way in "
                  f"{agree} of {pairs} comparisons (ties left out)")
        return

    import multiprocessing as mp
    import tempfile

    if args.imbalanced:
        from recipe import imbalanced_cut  # bench/recipe.py

        cut = Path(tempfile.mkdtemp(prefix="neu-imb-")) / "data"
        args.data = str(imbalanced_cut(Path(args.data), cut, args.imbalanced, 0.15))
        args.override = [*args.override, f"data.good_class={args.imbalanced}"]
    started = time.perf_counter()
    results: dict = {"args": vars(args), "seeds": {}}
    lock = threading.Lock()
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        bench = Bench(args, pool)

        def one_seed(seed: int) -> None:
            r: dict = {}
            jobs = [("none", bench.full((), seed, probe=bench.probe() if {"density", "default"} & set(args.methods) else None)),
                    ("trivial", bench.full("trivial", seed))]
            r.update(jobs)
            if args.short_epochs:
                r[f"none@{args.short_epochs}"] = bench.run((), args.short_epochs, 1.0, seed, test=True)
                r[f"trivial@{args.short_epochs}"] = bench.run("trivial", args.short_epochs, 1.0, seed, test=True)
            budget = None
            for method in args.methods:
                if args.deadline and time.perf_counter() - started > args.deadline:
                    print(f"[seed {seed}] deadline: {method} skipped", flush=True)
                    continue
                t0 = time.perf_counter()
                if method == "staged":
                    s = bench.staged(seed)
                    budget = s["full_epochs"]
                elif method == "density":
                    s = bench.density(r["none"])
                elif method == "default":  # trains its own candidates; what it delivers is the rules' (summarize)
                    s = bench.default(r, seed)
                else:
                    n = max(2, round((budget or 1.5 * args.epochs) / (args.epochs * bench.rungs[-1]["subset"])))
                    s = getattr(bench, method)(seed, n)
                if method != "default":
                    s["final"] = bench.full(tuple(tuple(x) for x in s["policy"]), seed)
                s["cost_multiple"] = s["full_epochs"] / args.epochs
                s["wall_seconds"] = time.perf_counter() - t0
                r[method] = s
                with lock:
                    results["seeds"][seed] = r
                    Path(args.out).write_text(json.dumps(results, indent=1))
                if method == "default":
                    print(f"[seed {seed}] default: " + ", ".join(f"{k} {v.get('test_error')}" for k, v in s["proposals"].items())
                          + f"; cost {s['cost_multiple_with_refit']:.2f}x one training with refit", flush=True)
                else:
                    print(f"[seed {seed}] {method}: test error {s['final'].get('test_error')} cost {s['cost_multiple']:.2f}x "
                          f"policy {s['policy']}", flush=True)
            with lock:
                results["seeds"][seed] = r
                Path(args.out).write_text(json.dumps(results, indent=1))

        if args.jobs == 1:  # one job at a time: seeds in turn, so each method's wall time is its own
            for s in args.seeds:
                one_seed(s)
        else:
            threads = [threading.Thread(target=one_seed, args=(s,)) for s in args.seeds]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    columns = ["none", "trivial"] + args.methods + ([f"none@{args.short_epochs}", f"trivial@{args.short_epochs}"]
                                                    if args.short_epochs else [])
    results["summary"] = summarize(results, columns, args.methods, args.rule)
    results["wall_seconds"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(results, indent=1))
    print_table(results["summary"])
    if "default" in args.methods:
        results["rules"] = rules_table(results, list(RULES))
        Path(args.out).write_text(json.dumps(results, indent=1))
        print_rules(results["rules"])
    print(f"wall {results['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
