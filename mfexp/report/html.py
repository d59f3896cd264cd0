"""The self-contained HTML report: inline CSS, charts embedded as base64 PNGs, no executable script, no links out.

`render` runs the sections of `mfexp.report.sections` in order and wraps them in one page, with
every number shown (and its provenance) also embedded as JSON for report.json and the tests.
"""
from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path

from mfexp import keys
from mfexp.report.registry import Registration
from mfexp.report.page import Page
from mfexp.report.sections import SECTIONS
from mfexp.report.stats import Bootstrap
from mfexp.report.sweep_data import SweepData

CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#1f2933;max-width:1080px;margin:0 auto;padding:24px 28px 60px;line-height:1.45}
h1{font-size:1.7em;margin:0 0 4px} h2{font-size:1.3em;margin:34px 0 8px;padding-bottom:4px;border-bottom:2px solid #e4e7eb}
h3{font-size:1.05em;margin:20px 0 6px} .sub{color:#616e7c;margin:0 0 18px;font-size:.92em}
table{border-collapse:collapse;margin:8px 0 14px;font-size:.9em} th,td{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#f5f7fa;font-weight:600} td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.kv th{width:210px;background:none;color:#52606d;font-weight:500}
figure{margin:10px 0 22px} figure img{max-width:100%;height:auto;border:1px solid #e4e7eb} figcaption{font-size:.85em;color:#616e7c;margin-top:4px}
.summary{display:flex;gap:14px;flex-wrap:wrap;margin:14px 0 8px} .card{flex:1 1 200px;border:1px solid #e4e7eb;border-radius:8px;padding:10px 14px;background:#fafbfc}
.card .big{font-size:1.6em;font-weight:700} .card .label{font-size:.8em;color:#616e7c;text-transform:uppercase;letter-spacing:.04em}
.good{color:#1e7d3c} .bad{color:#b42336} .muted{color:#7b8794}
.verdict{padding:10px 14px;border-radius:8px;margin:10px 0} .verdict.yes{background:#e6f4ea;border:1px solid #a8d5b5} .verdict.no{background:#fdf3e1;border:1px solid #efd19c}
.notes{background:#fff8e6;border:1px solid #efd19c;border-radius:8px;padding:8px 14px 8px 30px;font-size:.9em}
code{background:#f0f2f5;padding:1px 4px;border-radius:3px;font-size:.9em} .pill{display:inline-block;padding:1px 8px;border-radius:10px;background:#e6f4ea;color:#1e7d3c;font-weight:600}
.policy-id{font-size:1.05em;margin:6px 0} .pill.challenger{background:#fdf3e1;color:#8a5a00} footer{margin-top:40px;font-size:.8em;color:#7b8794}
"""


def render(data: SweepData, boot: Bootstrap, charts: dict[str, Path], reg: Registration | None) -> tuple[str, dict]:
    """The HTML page and the JSON payload (every number shown, with its run and metric)."""
    pg = Page(data, boot, charts, reg)
    for section in SECTIONS:
        section(pg)
    return _page(pg)


def _page(pg: Page) -> tuple[str, dict]:
    data, best, w, engine, reg = pg.data, pg.best, pg.w, pg.engine, pg.reg
    b_id, o_id, s_id, boot = pg.b_id, pg.o_id, pg.s_id, pg.boot
    payload = {
        "experiment": data.experiment_name, "sweep_run_id": s_id, "engine_version": engine,
        "best_role": data.best_role, "best_run_id": o_id, "baseline_run_id": b_id,
        "policy": best.run.policy, "searched_policy": data.searched.policy, "axes": data.axes,
        "kept": data.kept, "rejected": data.rejected, "classes": data.classes,
        "bootstrap": boot.as_dict(), "registry": reg.as_dict() if reg else None, "notes": data.notes,
        "ranking_verdict": data.sweep.tags.get(keys.TAG_RANKING_VERDICT),
        "ranking_agreement": data.sweep.tags.get(keys.TAG_RANKING_AGREEMENT),
        "inspection": pg.inspection, "gallery": pg.gallery,  # sections 7-8
        "values": w.values,
        # the data behind the search's charts (docs/report.md, "report.json")
        "parallel_coordinates": [{"name": p.name, "label": p.label, "role": p.role, "run_id": p.run_id,
                                  "fidelity": p.fidelity, "mode": p.mode, "axes": dict(zip(data.axes, p.values)),
                                  "val_loss": p.val_loss, "val_error": p.val_error, "delivered": p.delivered}
                                 for p in data.policies],
        "val_loss_by_technique": [{"technique": s.technique, "step": s.stage, "run_id": s.run_id, "fidelity": data.step_fidelity,
                                   "val_loss_before": s.before, "val_loss_after": s.after, "change": s.after - s.before}
                                  for s in data.steps],
        "density_scores": data.density, "proposals": data.proposals, "delivery": data.delivery,
    }
    title = f"mfexp report · {data.experiment_name} · {best.run.policy}"
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(pg.out) +
            f'\n<script type="application/json" id="mfexp-report-data">{_json_for_html(payload)}</script>\n</body></html>\n')
    return page, payload


def clean(o):
    """JSON-ready: NaN/inf become null, numpy scalars plain numbers."""
    if isinstance(o, dict):
        return {str(k): clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _json_for_html(payload: dict) -> str:
    return json.dumps(clean(payload), allow_nan=False).replace("</", "<\\/")
