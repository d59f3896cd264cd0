"""Section 3's ranking check: the sweep's verdict, screening vs full-budget val loss per policy, Spearman's rho.

Called by `mfexp.report.sections` after the full-budget table; it reads the sweep run's ``mfexp.ranking_*``
tags and ``check.*`` metrics (written by the sweeper's ``SweepRun.finish``) and prints every MLflow number
through the page's `Writer`, so each carries its run and metric.
"""
from __future__ import annotations

import json
from html import escape
from mfexp import keys
from mfexp.report.page import Page
from mfexp.report.sweep_data import ROLE_LABELS


def _f4(x: float) -> str:
    return f"{x:.4f}"


def ranking_check(pg: Page) -> None:
    """3.1 Ranking check: did the screening ranking hold at full budget? The verdict and Spearman's rho."""
    w, data, s_id = pg.w, pg.data, pg.s_id
    tags = data.sweep.tags
    add = pg.out.append
    add("<h3>Ranking check: does the screening ranking hold at full budget?</h3>")
    verdict = tags.get(keys.TAG_RANKING_VERDICT)
    if data.delivery:
        pass  # the delivery decision above already says which run is delivered and why
    elif verdict is None:
        add(f'<p class="muted">This sweep has no {escape(keys.TAG_RANKING_VERDICT)} tag (made before the ranking check, '
            "or not finished).</p>")
    else:
        held = data.best_role == ("final" if "final" in data.full else "baseline")
        add(f'<div class="verdict {"yes" if held else "no"}" data-tag="{escape(keys.TAG_RANKING_VERDICT)}">'
            f"<b>Sweep verdict</b>: {escape(verdict)}.</div>")
    rows = [(keys.CHECK_SCREEN_GAIN, "val-loss gain of the searched policy over no policy, screening", lambda v: f"{v:+.4f}"),
            (keys.CHECK_FULL_GAIN, "val-loss gain of the searched policy over no policy, full budget", lambda v: f"{v:+.4f}"),
            (keys.CHECK_RANK_PAIRS, "policies trained at both fidelities", lambda v: f"{v:.0f}"),
            (keys.CHECK_SPEARMAN_RHO, "Spearman's rho, screening vs full-budget val loss", lambda v: f"{v:+.2f}")]
    if any(k in data.sweep.metrics for k, _, _ in rows):
        add('<table><tr><th>quantity</th><th class="num">value</th></tr>')
        for key, label, fmt in rows:
            if key in data.sweep.metrics:
                add(f"<tr><td>{escape(label)}</td>{w.metric(s_id, key, fmt)}</tr>")
        add("</table>")
    agreement = tags.get(keys.TAG_RANKING_AGREEMENT)
    if agreement:
        add(f'<p data-tag="{escape(keys.TAG_RANKING_AGREEMENT)}">{escape(agreement)}.</p>')
    pairs = _ranking_pairs(tags.get(keys.TAG_RANKING_PAIRS))
    if pairs:
        add('<table><tr><th>policy</th><th>full-budget run</th><th class="num">screening val loss (top rung)</th>'
            '<th class="num">full-budget val loss</th></tr>')
        for p in pairs:
            screen_ids = [str(r) for r in p.get("screen_run_ids") or []]
            if len(screen_ids) == 1:
                screen = w.metric(screen_ids[0], keys.BEST_VAL_LOSS, _f4)
            else:  # the no-policy screening runs at several seeds: their mean
                mean = float(p.get("screen_loss", float("nan")))
                screen = w.derived(f"ranking/screen/{p.get('policy', '')}", mean, f"{mean:.4f} (mean of {len(screen_ids)} runs)",
                                   title=f"mean of MLflow metric {keys.BEST_VAL_LOSS} of runs {', '.join(screen_ids)}")
            role = str(p.get("role", ""))
            add(f"<tr><td>{escape(str(p.get('policy', '')))}</td><td>{escape(ROLE_LABELS.get(role, role))}<br>"
                f"<code class=\"muted\">{escape(str(p.get('full_run_id', '')))}</code></td>{screen}"
                f"{w.metric(str(p.get('full_run_id', '')), keys.BEST_VAL_LOSS, _f4)}</tr>")
        add("</table>")
    add('<p class="muted">The screening runs are the candidates at the top screening rung (subset of the data, fewer '
        "epochs) whose policy (tag <code>mfexp.policy</code>) matches a full-budget run. Spearman's rho compares the "
        "order of the two columns; it needs at least three such policies (two always correlate perfectly). A rho near "
        "+1 means screening ranks policies as full training does; near 0 or below, screening cannot be trusted on "
        "this data.</p>")


def _ranking_pairs(text: str | None) -> list[dict]:
    try:
        pairs = json.loads(text) if text else []
    except ValueError:
        return []
    return [p for p in pairs if isinstance(p, dict)] if isinstance(pairs, list) else []
