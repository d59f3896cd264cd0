"""The search's own report sections: every policy trained (parallel coordinates), density matching's scores, the delivery decision.

Called by `mfexp.report.sections` inside sections 2 and 3. They read `SweepData.policies`,
`.density`, `.proposals` and `.delivery` (the sweep run's ``mfexp.delivery`` tag, written by the
sweeper's delivery rule) and print every MLflow number through the page's `Writer`.
"""
from __future__ import annotations

from html import escape

from mfexp import keys
from mfexp.report.page import Page, f4, img, pct


def policies_trained(pg: Page) -> None:
    """Every distinct policy the sweep trained, as a table and as parallel coordinates."""
    w, data = pg.w, pg.data
    add = pg.out.append
    add("<h3>Policies trained</h3>")
    if not data.policies:
        add('<p class="muted">No finished run of this sweep has a policy to show.</p>')
        return
    add('<table><tr><th>what</th><th>policy</th><th>fidelity</th><th class="num">val loss</th>'
        '<th class="num">val error</th><th>delivered</th></tr>')
    for line in data.policies:
        err = (w.derived(f"val_error/{line.run_id}", line.val_error, pct(line.val_error),
                         title="validation images misclassified by the fit on the training split (before any refit)")
               if line.val_error is not None else '<td class="num muted">n/a</td>')
        mode = " (trivial mode)" if line.mode == "trivial" else ""
        pill = '<span class="pill">delivered</span>' if line.delivered else ""
        add(f"<tr><td>{escape(line.label)}</td><td>{escape(line.name)}{mode}<br><code class=\"muted\">"
            f"{escape(line.run_id)}</code></td><td>{escape(line.fidelity)}</td>{w.metric(line.run_id, keys.BEST_VAL_LOSS, f4)}"
            f"{err}<td>{pill}</td></tr>")
    add("</table>")
    add(img(pg.charts["parallel_coordinates"], "parallel coordinates of the policies trained",
            "Every distinct policy the sweep trained, one line each; green: the delivered one, red: trained and not "
            "delivered; dashed: trivial mode (each image gets one technique at a random magnitude up to m). One axis "
            "per setting in search order; the suffix says what the axis is: magnitude (m), replacement rate (rr) — the "
            "share of examples the technique is applied to — or ratio (r) — synthetic images as a share of the "
            "original training set. An on/off technique (flip) has its rr axis only."))


def density_section(pg: Page) -> None:
    """Density matching's scores (technique x magnitude) and what it proposed from them."""
    data = pg.data
    add = pg.out.append
    if not data.density or "density_scores" not in pg.charts:
        return
    add("<h3>Density matching: what the baseline's model still reads in augmented images</h3>")
    add("<p>Before its refit, the baseline's model classified the validation images once clean and once per probe (one "
        "technique at one magnitude applied to every image). A probe that keeps the model's loss low keeps the images "
        "inside what it learned as their class; one that drives it up changes what a class looks like on this data "
        "(a quarter turn of an oriented texture, a faint defect washed out). Those techniques are refused.</p>")
    add(img(pg.charts["density_scores"], "density matching scores",
            "Share of what the baseline learned that survives each probe: (H − loss) / (H − clean loss), H the loss of "
            "predicting the class frequencies. 100 %: read as well as the clean images; 0 %: back to the class prior."))
    if data.proposals:
        rows = []
        for p in data.proposals:
            settings = ", ".join(f"{t} m={m:g} rr={rr:g}" for t, m, rr in p.get("techniques", []))
            rows.append(f"<tr><td>{escape(str(p.get('name')))}</td><td>{escape(str(p.get('kind')))}"
                        f"{' (trivial mode)' if p.get('mode') == 'trivial' else ''}</td><td>{escape(settings)}</td>"
                        f"<td>{escape(str(p.get('status')))}</td></tr>")
        add("<p>The candidates built from these scores, each trained at the full budget without refit:</p>")
        add("<table><tr><th>candidate</th><th>kind</th><th>settings</th><th>status</th></tr>" + "".join(rows) + "</table>")


def delivery_section(pg: Page) -> None:
    """How the sweep chose what it delivers: every challenger against the baseline on the same validation images."""
    w, data = pg.w, pg.data
    add = pg.out.append
    d = data.delivery
    if not d:
        return
    verdict = data.sweep.tags.get(keys.TAG_RANKING_VERDICT, "")
    add("<h3>Delivery: is any policy better than the baseline beyond noise?</h3>")
    add(f'<div class="verdict {"yes" if data.best_role != "baseline" else "no"}" data-tag="{escape(keys.TAG_RANKING_VERDICT)}">'
        f"<b>Decision</b>: {escape(verdict)}.</div>")
    base = d.get("baseline") or {}
    rule = str(d.get("rule"))
    what = {"paired": "A challenger must make fewer validation errors than the baseline and lower its validation loss by "
                      "more than the paired bootstrap's noise (the lower bound of the gain above zero).",
            "paired_error": "A challenger's error-rate reduction must have a lower bound above zero.",
            "val_error": "A challenger must make fewer validation errors (ties: lower loss).",
            "val_loss": "A challenger must have a lower validation loss, by any amount."}.get(rule, "")
    add(f"<p>Rule <code>{escape(rule)}</code> (tag <code>{escape(keys.TAG_DELIVERY_RULE)}</code>), one-sided "
        f"level {float(d.get('level', 0)):.1%} per comparison, on the {d.get('n')} validation images that every policy was "
        f"scored on after its fit on the training split and before any refit. {escape(what)} See docs/search.md, "
        "\"Delivery\".</p>")
    add('<table><tr><th>policy</th><th class="num">val loss</th><th class="num">val errors</th>'
        '<th class="num">loss gain</th><th class="num">its lower bound</th><th>passes</th></tr>')
    add(f"<tr><td>baseline (no policy)</td>{w.metric(base.get('run_id') or '', keys.BEST_VAL_LOSS, f4)}"
        f"<td class=\"num\">{base.get('val_errors')}</td><td></td><td></td><td></td></tr>")
    for c in d.get("challengers", []):
        name, gain, low = str(c.get("name")), float(c["loss_gain"]), float(c["loss_gain_low"])
        add(f"<tr><td>{escape(name)}</td>{w.metric(c.get('run_id') or '', keys.BEST_VAL_LOSS, f4)}"
            f"<td class=\"num\">{c.get('errors')}</td>{w.derived(f'delivery/{name}/loss_gain', gain, f'{gain:+.4f}')}"
            f"{w.derived(f'delivery/{name}/loss_gain_low', low, f'{low:+.4f}')}<td>{'yes' if c.get('passed') else 'no'}</td></tr>")
    add("</table>")
