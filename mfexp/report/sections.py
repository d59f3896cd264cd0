"""The report's sections, one function each, in page order (`SECTIONS`); `mfexp.report.html` puts them into one page.

Each takes the `mfexp.report.page.Page` and appends HTML to it; the search's own sections (what was
trained, why it was delivered) live in `mfexp.report.search_sections`, the ranking check in
`mfexp.report.ranking`.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from html import escape

from mfexp import keys
from mfexp.report import gallery, inspection
from mfexp.report.charts import axis_label
from mfexp.report.page import Page, ci_pp, f4, img, kv, pct, pp, safe_uri
from mfexp.report.ranking import ranking_check
from mfexp.report.search_sections import delivery_section, density_section, policies_trained
from mfexp.report.sweep_data import ROLE_LABELS


def _policy_table(ev, axes: list[str]) -> str:
    settings = ev.settings(axes)
    if not settings:
        return '<p class="muted">No technique: train without augmentation or synthetic data.</p>'
    rows = [('<table><tr><th>technique</th><th class="num">magnitude (m)</th><th class="num">replacement rate (rr)</th>'
             '<th class="num">ratio (r)</th></tr>')]
    for tech, vals in settings.items():
        cells = "".join(f'<td class="num">{vals[k]:g}</td>' if k in vals else '<td class="num muted">–</td>'
                        for k in ("m", "rr", "r"))
        rows.append(f"<tr><td>{escape(tech)}</td>{cells}</tr>")
    return "".join(rows) + "</table>"


def _title(pg: Page) -> None:
    """The title line: sweep, policy, engine, where the numbers come from."""
    data, best, s_id, engine = pg.data, pg.best, pg.s_id, pg.engine
    add = pg.out.append
    add(f"<h1>Benchmark report: {escape(data.experiment_name)}</h1>")
    add(f'<p class="sub">Policy search <code>{escape(s_id)}</code> · policy <b>{escape(best.run.policy)}</b> · '
        f"policy engine mfexp {escape(engine)} · generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from MLflow "
        f"<code>{escape(safe_uri(data.tracking_uri))}</code></p>")


def _summary(pg: Page) -> None:
    """Three cards (baseline error, optimal error, relative reduction), the bootstrap verdict, the notes."""
    data, boot, e0, e1, rel, real, opt, rr = pg.data, pg.boot, pg.e0, pg.e1, pg.rel, pg.real, pg.opt, pg.rr
    add = pg.out.append
    add('<div class="summary">')
    add(f'<div class="card"><div class="label">test error, baseline</div><div class="big">{escape(pct(e0))}</div></div>')
    add(f'<div class="card"><div class="label">test error, {escape(opt)}</div><div class="big {"good" if e1 < e0 else "bad" if e1 > e0 else ""}">{escape(pct(e1))}</div></div>')
    add(f'<div class="card"><div class="label">relative error reduction</div><div class="big {"good" if rel > 0 else "bad" if rel < 0 else ""}">'
        f"{escape(pct(rel))}</div><div class=\"muted\">{boot.level:.0%} CI "
        f"{escape(pct(rr.low) + ' … ' + pct(rr.high)) if rr else 'n/a'}</div></div>")
    add("</div>")
    if data.best_role == "baseline":
        verdict = "<b>No gain to test</b>: the delivered model is the baseline itself."
    elif real:
        verdict = (f"<b>The gain is real</b> at the {boot.level:.0%} level: the paired-bootstrap interval of the error "
                   f"reduction, {ci_pp(boot.error_reduction)}, excludes zero (the best model was not better in "
                   f"{boot.p_not_better:.1%} of {boot.samples} resamples of the {boot.n} test images).")
    else:
        verdict = (f"<b>Not shown to be real</b> at the {boot.level:.0%} level: the paired-bootstrap interval of the "
                   f"error reduction, {ci_pp(boot.error_reduction)}, includes zero or lies below it "
                   f"({boot.p_not_better:.1%} of {boot.samples} resamples show no improvement). More test images or "
                   "several seeds would settle it.")
    add(f'<div class="verdict {"yes" if real else "no"}">{verdict}</div>')
    if data.notes:
        add('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in data.notes) + "</ul>")


def _dataset_and_model(pg: Page) -> None:
    """1. Dataset and model."""
    data, charts, base, p, ds = pg.data, pg.charts, pg.base, pg.p, pg.ds
    add = pg.out.append
    add("<h2>1. Dataset and model</h2>")
    counts = ds.get("counts", {})
    add(kv([
        ("data", escape(_data_desc(p))),
        ("classes", escape(", ".join(data.classes)) + (f" (good class: <b>{escape(str(ds['good_class']))}</b>)" if ds.get("good_class") else "")),
        ("images", escape(", ".join(f"{s} {sum(c.values())}" for s, c in counts.items()))),
        ("image size / channels", escape(f"{ds.get('image_size', p.get('data.image_size', '?'))} px, {ds.get('channels', '?')} channel(s)")),
        ("dataset fingerprint", f"<code>{escape(base.run.fingerprint)}</code>"),
        ("model", escape(f"{p.get('model.name', '?')} (timm)") + (f", {p['model.stem']} stem" if p.get("model.stem", "stock") != "stock" else "")
         + (", pretrained" if p.get("model.pretrained") == "True" else ", from scratch")
         + (escape(f", checkpoint {p['model.checkpoint']}") if p.get("model.checkpoint") not in (None, "None") else "")),
        ("training", escape(f"epochs {p.get('trainer.epochs', '?')}, batch {p.get('trainer.batch_size', '?')}, "
                            f"{p.get('trainer.optimizer', '?')} lr {p.get('trainer.lr', '?')}, {p.get('trainer.schedule', '?')} schedule, "
                            f"seed {p.get('trainer.seed', '?')}")),
    ]))
    add(img(charts["class_distribution"], "class distribution",
             "Images per class and split (from the baseline run's <code>dataset.json</code>)."))


def _policy(pg: Page) -> None:
    """2. Training policy: the optimal policy, kept and rejected techniques, search cost, parallel coordinates."""
    w, data, charts, best, o_id, s_id, engine = pg.w, pg.data, pg.charts, pg.best, pg.o_id, pg.s_id, pg.engine
    add = pg.out.append
    add("<h2>2. Training policy</h2>")
    add(f'<p class="policy-id">Policy: <b>{escape(best.run.policy)}</b> &nbsp;·&nbsp; Policy engine: <b>mfexp '
        f"{escape(engine)}</b></p>")
    add(f"<p>The optimal policy is the policy of the run the sweep delivered, the {escape(ROLE_LABELS[data.best_role])} run "
        f"<code>{escape(o_id)}</code> (mode <code>{escape(best.mode)}</code>).</p>")
    add(_policy_table(best, data.axes))
    if "final" in data.full and data.best_role != "final":
        fin = data.full["final"]
        add(f"<p>The search's own winner, <b>{escape(fin.run.policy)}</b> (the green line below), did not beat it at full "
            "budget (see section 3):</p>")
        add(_policy_table(fin, data.axes))
    reasons = {}
    try:
        reasons = json.loads(data.sweep.tags.get(keys.TAG_REJECTED_REASONS, "{}")) or {}
    except ValueError:
        pass
    kept = ", ".join(data.kept) or "none"
    rejected = ", ".join(f"{t} ({reasons[t]})" if isinstance(reasons, dict) and t in reasons else t for t in data.rejected) or "none"
    labels = ("kept, in search order", "rejected")
    if data.sweep.params.get("search.backend") == "density":  # the ranking's top techniques make the nested candidates
        labels = ("nested sequence (density ranking)", "not in the nested sequence")
        if any(p.get("kind") == "diverse" for p in data.proposals):
            kept += "; diverse samples every admitted technique"
    add(kv([(labels[0], escape(kept)), (labels[1], escape(rejected)),
             ("search order (axes)", escape(", ".join(axis_label(a) for a in data.axes)))]))
    add("<h3>Search cost</h3>")
    wall = data.sweep_metric(keys.SEARCH_WALL_SECONDS)
    add('<table><tr><th>quantity</th><th class="num">value</th></tr>')
    add(f"<tr><td>candidate runs (finished)</td>{w.derived('finished_candidates', len(data.candidates), str(len(data.candidates)))}</tr>")
    for key, label, fmt in [(keys.SEARCH_CANDIDATES, "candidate runs (all)", lambda v: f"{v:.0f}"),
                            (keys.SEARCH_CANDIDATE_EPOCHS, "screening compute, in full-data epochs", lambda v: f"{v:.2f}"),
                            (keys.SEARCH_COST_MULTIPLE, "search compute / one full training (fit + refit)", lambda v: f"{v:.2f} ×"),
                            (keys.SEARCH_WALL_SECONDS, "search wall-clock time", lambda v: f"{v / 60:.1f} min"),
                            (keys.SEARCH_NOISE, "validation-loss noise between seeds (screening)", lambda v: f"{v:.4f}")]:
        if key in data.sweep.metrics and not (data.step_fidelity == "full budget" and key in (keys.SEARCH_NOISE,
                                                                                             keys.SEARCH_CANDIDATE_EPOCHS)):
            add(f"<tr><td>{escape(label)}</td>{w.metric(s_id, key, fmt)}</tr>")
    add("</table>")
    if wall is None:
        add('<p class="muted">The sweep logged no search.* cost metrics (not finished?).</p>')
    policies_trained(pg)
    density_section(pg)


def _full_budget_runs(pg: Page) -> None:
    """3. Full-budget runs: baseline, searched policy, reference."""
    w, data = pg.w, pg.data
    add = pg.out.append
    add("<h2>3. Full-budget runs</h2>")
    add('<table><tr><th>run</th><th>policy</th><th class="num">best val loss</th><th class="num">test error</th>'
        '<th class="num">test accuracy</th><th class="num">macro F1</th><th class="num">train time</th></tr>')
    for role, ev in data.full.items():
        rid = ev.run.run_id
        star = ' <span class="pill">best</span>' if role == data.best_role else ""
        add(f"<tr><td>{escape(ROLE_LABELS[role])}{star}<br><code class=\"muted\">{escape(rid)}</code></td><td>{escape(ev.run.policy)}</td>"
            f"{w.metric(rid, keys.BEST_VAL_LOSS, f4)}{w.metric(rid, keys.TEST_ERROR_RATE)}{w.metric(rid, keys.TEST_ACCURACY)}"
            f"{w.metric(rid, keys.TEST_MACRO_F1, lambda v: f'{v:.3f}')}{w.metric(rid, keys.TRAIN_SECONDS, lambda v: f'{v:.0f} s')}</tr>")
    add("</table>")
    if data.delivery:
        delivery_section(pg)
    else:
        add("<p class=\"muted\">Best run: lowest best validation loss at full budget, ties broken by test error rate "
            "(a sweep made before the delivery rule).</p>")
    if keys.TAG_RANKING_AGREEMENT in data.sweep.tags or not data.delivery:  # a sweep that screened
        ranking_check(pg)


def _waterfall(pg: Page) -> None:
    """4. Validation-loss improvement per kept technique."""
    w, data, charts = pg.w, pg.data, pg.charts
    add = pg.out.append
    add("<h2>4. Validation-loss improvement per technique</h2>")
    full = data.step_fidelity == "full budget"
    if data.screen_start is not None:
        st = data.screen_start
        add('<table><tr><th>step</th><th>stage</th><th class="num">best val loss</th><th class="num">change</th></tr>')
        add(f"<tr><td>{'baseline' if full else 'screening baseline'} (no policy)</td><td>0</td>"
            f"{w.metric(st.run_id, keys.BEST_VAL_LOSS, f4)}<td></td></tr>")
        for s in data.steps:
            add(f"<tr><td>+ {escape(s.technique)}</td><td>{s.stage}</td>{w.metric(s.run_id, keys.BEST_VAL_LOSS, f4)}"
                f"{w.derived(f'waterfall/{s.technique}', s.after - s.before, f'{s.after - s.before:+.4f}')}</tr>")
        add("</table>")
    caption = ("From the baseline to the last nested candidate, all at full budget (every epoch, the whole training "
               "split, before any refit): bar i is the change in validation loss from adding the i-th technique of density "
               "matching's ranking to the i − 1 before it. A bar is what the technique did in training, whether or not "
               "its policy was delivered." if full else
               "From the no-policy screening run to the optimal policy: each bar is the drop in best validation loss "
               "bought by one kept technique, measured between successive stage winners of the search at screening "
               "fidelity (subset of the data and epochs), not at full budget. Rejected techniques add no bar.")
    add(img(charts["val_loss_waterfall"], "validation loss per technique", caption))


def _recall_precision(pg: Page) -> None:
    """5. Recall and precision per class, with paired-bootstrap intervals."""
    w, data, boot, charts, base, best, b_id, o_id, opt = pg.w, pg.data, pg.boot, pg.charts, pg.base, pg.best, pg.b_id, pg.o_id, pg.opt
    add = pg.out.append
    add("<h2>5. Recall and precision per class</h2>")
    add(f"<p>Baseline vs {escape(opt)} on the same {boot.n} test images. Intervals: paired bootstrap, "
        f"{boot.samples} resamples, {boot.level:.0%} percentile interval of the difference.</p>")
    for metric, chart in (("recall", "recall"), ("precision", "precision")):
        ci = boot.recall_delta if metric == "recall" else boot.precision_delta
        add(f"<h3>{metric.capitalize()}</h3>")
        add(f'<table><tr><th>class</th><th class="num">support</th><th class="num">baseline</th><th class="num">optimal</th>'
            f'<th class="num">Δ</th><th class="num">{boot.level:.0%} CI of Δ</th></tr>')
        for c in data.classes:
            key = data.class_key(metric, c)
            d = best.metric(key) - base.metric(key)
            cls = "good" if ci[c].low > 0 else "bad" if ci[c].high < 0 else ""
            add(f"<tr><td>{escape(c)}</td>{w.metric(b_id, data.class_key('support', c), lambda v: f'{v:.0f}')}"
                f"{w.metric(b_id, key)}{w.metric(o_id, key)}{w.derived(f'delta/{key}', d, pp(d), 'num ' + cls)}"
                f'<td class="num">{escape(ci_pp(ci[c]))}</td></tr>')
        add("</table>")
        add(img(charts[chart], f"{metric} per class",
                 ("Recall = TP / (TP + FN): the share of a class's images found." if metric == "recall" else
                  "Precision = TP / (TP + FP): the share of a class's predictions that are right.")
                 + " Top: baseline vs optimal; bottom: difference with its bootstrap interval."))


def _error_rate(pg: Page) -> None:
    """6. Error rate and its reduction; confusion matrices."""
    w, boot, charts, b_id, o_id, e0, e1, rel, opt, rr = pg.w, pg.boot, pg.charts, pg.b_id, pg.o_id, pg.e0, pg.e1, pg.rel, pg.opt, pg.rr
    add = pg.out.append
    add("<h2>6. Error rate</h2>")
    add('<table><tr><th>quantity</th><th class="num">value</th><th class="num">' + f"{boot.level:.0%}" + " CI</th></tr>")
    add(f"<tr><td>baseline error rate</td>{w.metric(b_id, keys.TEST_ERROR_RATE)}<td class=\"num\">{pct(boot.error_baseline.low)} … {pct(boot.error_baseline.high)}</td></tr>")
    add(f"<tr><td>{escape(opt)} error rate</td>{w.metric(o_id, keys.TEST_ERROR_RATE)}<td class=\"num\">{pct(boot.error_best.low)} … {pct(boot.error_best.high)}</td></tr>")
    add(f"<tr><td>absolute reduction</td>{w.derived('error_reduction', e0 - e1, pp(e0 - e1))}<td class=\"num\">{ci_pp(boot.error_reduction)}</td></tr>")
    add(f"<tr><td>relative reduction</td>{w.derived('relative_error_reduction', rel, pct(rel))}"
        f"<td class=\"num\">{(pct(rr.low) + ' … ' + pct(rr.high)) if rr else 'n/a'}</td></tr>")
    add("</table>")
    add(img(charts["error_rate"], "error rate", "Error = 1 − accuracy. The relative reduction is the figure that "
             "matters: going from 90 % to 95 % accuracy halves the error."))
    add(img(charts["confusion_matrices"], "confusion matrices", "Confusion matrices on the test split: baseline (left), "
             "optimal (right). Rows: true class; columns: predicted class."))


def _registry(pg: Page) -> None:
    """9. Model registry: version, alias and why."""
    reg = pg.reg
    add = pg.out.append
    add("<h2>9. Model registry</h2>")
    if reg is None:
        add('<p class="muted">Not registered (registration was turned off).</p>')
    elif not reg.registered:
        add(f"<p class=\"bad\">Not registered: {escape(reg.reason)}</p>")
    else:
        inc = reg.incumbent
        add(kv([
            ("registered model", f"<code>{escape(reg.name)}</code> version {escape(str(reg.version))}"),
            ("alias", f'<span class="pill {escape(reg.alias or "")}">@{escape(reg.alias or "")}</span>'),
            ("why", escape(reg.reason)),
            ("previous champion", escape(f"version {inc.version} (run {inc.run_id}, test error {pct(inc.test_error_rate)})")
             if inc else "none"),
            ("load it", (f"<code>mlflow.pyfunc.load_model(\"models:/{escape(reg.name)}@{escape(reg.alias or '')}\")</code> "
                         "→ class probabilities for float32 (N, C, H, W) pixels in [0, 1]")),
        ]))


def _how_to_read(pg: Page) -> None:
    """How to read this report, and the footer."""
    data, s_id, engine = pg.data, pg.s_id, pg.engine
    add = pg.out.append
    add("<h2>How to read this report</h2>")
    add("<p>All numbers are read back from MLflow: the metrics of the runs named next to them (hover a number for its "
        "run and metric) and the runs' logged <code>test_predictions.csv</code> and <code>dataset.json</code>. The "
        "intervals resample the test images with replacement and score both models on each resample, so they measure "
        "how sure this test set is about the difference between these two trained models; they do not include "
        "seed-to-seed training variation. See <code>docs/report.md</code>.</p>")
    add(f"<footer>mfexp {escape(engine)} · sweep {escape(s_id)} · experiment {escape(data.experiment_name)} "
        f"({escape(data.experiment_id)})</footer>")


def _data_desc(p: dict) -> str:
    kind = p.get("data.kind", "?")
    if kind == "folder":
        return f"image folder {p.get('data.root', '?')}"
    if kind == "demo":
        return "built-in demo data (generated surface-inspection images)"
    return kind


SECTIONS = (_title, _summary, _dataset_and_model, _policy, _full_budget_runs, _waterfall, _recall_precision,
            _error_rate, inspection.section, gallery.section, _registry, _how_to_read)
