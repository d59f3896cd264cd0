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

from hydra_plugins.mfexp_sweeper.search import Candidate, Result, stage_values  # noqa: E402
from hydra_plugins.mfexp_sweeper.staged import StagedSearch  # noqa: E402

ON_OFF = {"flip", "d4"}
_CFG = {}


def overrides_for(policy, data_root: str, epochs: int, subset: float, seed: int, extra: list[str],
                  screening: bool = False) -> list[str]:
    out = ["data=folder", f"data.root={data_root}", "trainer.progress=false", f"trainer.epochs={epochs}",
           f"data.subset={subset}", f"trainer.seed={seed}", *extra, *(["trainer.refit=false"] if screening else [])]
    if policy == "trivial":
        return out + ["augment=trivial"]
    out.append("augment=policy")
    for tech, axis, value in policy:
        out.append(f"augment.techniques.{tech}.{axis}={value}")
        if tech in ON_OFF:
            out.append(f"augment.techniques.{tech}.m=1.0")
    return out


def train_job(overrides: list[str], test: bool, probe: dict | None = None) -> dict:
    """One training in a worker process: val loss, and test error when asked.

    ``probe``: {technique: [m, ...]} to score by density matching after the fit (mfexp/density.py),
    returned as ``density`` with the seconds it took."""
    from hydra import compose, initialize_config_dir

    from mfexp import density
    from mfexp import job as R
    from mfexp.config import register_configs

    if "init" not in _CFG:
        register_configs()
        initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3").__enter__()
        _CFG["init"] = True
    cfg = compose("config", overrides=[*overrides, f"trainer.evaluate_test={str(test).lower()}"])
    scored: dict = {}

    def after_fit(trained) -> None:
        t0 = time.perf_counter()
        targets = {k: v._target_ for k, v in compose("config", overrides=["augment=policy"]).augment.techniques.items()}
        s = density.score(trained.model, prepared.splits.val, prepared.train_set.labels, targets, probe, device=trained.device,
                          channels_last=trained.channels_last, batch_size=cfg.trainer.batch_size * 2, seed=cfg.trainer.seed)
        scored.update(density=s.to_dict(), density_seconds=time.perf_counter() - t0)

    start = time.perf_counter()
    try:
        prepared = R.prepare(cfg)
        trained = R.execute(prepared, after_fit=after_fit if probe else None)  # as `python -m mfexp`, untracked
    except Exception as e:  # noqa: BLE001 - a failed candidate is a data point, not the end
        return {"val_loss": None, "error": f"{type(e).__name__}: {e}"}
    out = {"val_loss": trained.history.best_val_loss, "epochs_run": len(trained.history.val_loss),
           "seconds": time.perf_counter() - start, "subset": cfg.data.subset, **scored}
    if test:
        prob, y = trained.test_prob, trained.test_labels
        out["test_error"] = float((prob.argmax(1) != y).mean())
        out["test_correct"] = (prob.argmax(1) == y).astype(int).tolist()
    return out


class Bench:
    def __init__(self, args, pool):
        import yaml

        self.args, self.pool = args, pool
        search = yaml.safe_load((ROOT / "conf/search/staged.yaml").read_text())
        self.order, self.space, self.rungs = search["order"], search["space"], search["rungs"]
        self.eta, self.noise_seeds = search["eta"], search["noise_seeds"]
        # density matching: the search=density preset over SearchConf's defaults
        from hydra_plugins.mfexp_sweeper.config import SearchConf

        d = SearchConf()
        self.density_order = yaml.safe_load((ROOT / "conf/search/density.yaml").read_text())["order"]
        self.density_keep, self.density_top, self.density_rr = d.density_keep, d.density_top, d.density_rr
        self.density_magnitudes = d.density_magnitudes
        self.extra = [f"trainer.device={args.device}", f"trainer.num_workers={args.workers}", *args.override]

    def run(self, policy, epochs, subset, seed, test=False, probe=None) -> dict:
        ov = overrides_for(policy, self.args.data, epochs, subset, seed, self.extra)
        return self.pool.submit(train_job, ov, test, probe).result()

    def many(self, jobs) -> list[dict]:
        """Screening runs: (policy, epochs, subset, seed, test); never refit."""
        futures = [self.pool.submit(train_job, overrides_for(p, self.args.data, e, s, seed, self.extra, screening=True), t)
                   for p, e, s, seed, t in jobs]
        return [f.result() for f in futures]

    def full(self, policy, seed, probe=None) -> dict:
        return self.run(policy, self.args.epochs, 1.0, seed, test=True, probe=probe)

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


def summarize(results: dict, columns: list[str], methods: list[str]) -> dict:
    """Per column over seeds: test error mean ± 95 % interval, search cost, wall seconds; ``<method> kept``:
    what that sweep delivers after its full-budget check (`kept`)."""
    rows: dict[str, list[dict]] = {}
    for r in results["seeds"].values():
        for col in columns:
            if col in r:
                x = r[col]
                final = x["final"] if "final" in x else x
                rows.setdefault(col, []).append({"test_error": final.get("test_error"), "cost_multiple": x.get("cost_multiple", 0.0),
                                                 "wall_seconds": x.get("wall_seconds", x.get("seconds", 0.0))})
        for m in methods:
            if m in r and "none" in r and "trivial" in r:
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
    ap.add_argument("--summarize", metavar="JSON", help="only print the table of a saved run")
    args = ap.parse_args()
    if args.summarize:
        saved = json.loads(Path(args.summarize).read_text())
        a = saved["args"]
        columns = ["none", "trivial"] + a["methods"] + ([f"none@{a['short_epochs']}", f"trivial@{a['short_epochs']}"]
                                                       if a["short_epochs"] else [])
        print_table(summarize(saved, columns, a["methods"]))
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
            jobs = [("none", bench.full((), seed, probe=bench.probe() if "density" in args.methods else None)),
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
                else:
                    n = max(2, round((budget or 1.5 * args.epochs) / (args.epochs * bench.rungs[-1]["subset"])))
                    s = getattr(bench, method)(seed, n)
                s["final"] = bench.full(tuple(tuple(x) for x in s["policy"]), seed)
                s["cost_multiple"] = s["full_epochs"] / args.epochs
                s["wall_seconds"] = time.perf_counter() - t0
                r[method] = s
                with lock:
                    results["seeds"][seed] = r
                    Path(args.out).write_text(json.dumps(results, indent=1))
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
    results["summary"] = summarize(results, columns, args.methods)
    results["wall_seconds"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(results, indent=1))
    print_table(results["summary"])
    print(f"wall {results['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
