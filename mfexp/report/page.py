"""What every report section works with: the `Page` (data, bootstrap, charts, shared numbers) and the `Writer`.

Every number from MLflow goes through `Writer.metric`, which writes its provenance: ``data-run``
(run id), ``data-metric`` (metric key) and ``data-value`` (the exact float); derived numbers
(differences, ratios) carry ``data-derived``. The sections (`mfexp.report.sections`,
`mfexp.report.ranking`, `mfexp.report.search_sections`) each take a `Page` and append HTML to it.
"""
from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from mfexp import keys
from mfexp.report.charts import optimal_label
from mfexp.report.registry import Registration
from mfexp.report.stats import Bootstrap, Interval
from mfexp.report.sweep_data import SweepData


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f} %"


def pp(x: float, digits: int = 1) -> str:
    return f"{100 * x:+.{digits}f} pp"


def ci_pp(i: Interval) -> str:
    return f"[{100 * i.low:+.1f}, {100 * i.high:+.1f}] pp"


def safe_uri(uri: str) -> str:
    return re.sub(r"//[^/@]*@", "//", uri)  # drop user:password@ from server URIs


class Writer:
    """Builds the HTML; every MLflow number goes through `metric` so its provenance is recorded."""

    def __init__(self, data: SweepData):
        self.data = data
        self.values: list[dict] = []  # the numbers shown, for report.json

    def metric(self, run_id: str, key: str, fmt=pct, cls: str = "num") -> str:
        run = next((r for r in [self.data.sweep, *(e.run for e in self.data.full.values()), *self.data.candidates]
                    if r.run_id == run_id), None)
        value = None if run is None else run.metrics.get(key)
        if value is None:
            return f'<td class="{cls} muted">n/a</td>'
        self.values.append({"run_id": run_id, "metric": key, "value": value})
        return (f'<td class="{cls}" data-run="{escape(run_id)}" data-metric="{escape(key)}" data-value="{value!r}" '
                f'title="MLflow metric {escape(key)} of run {escape(run_id)}: {value!r}">{escape(fmt(value))}</td>')

    def derived(self, name: str, value: float, text: str, cls: str = "num", title: str = "") -> str:
        self.values.append({"derived": name, "value": value})
        hover = f' title="{escape(title)}"' if title else ""
        return f'<td class="{cls}" data-derived="{escape(name)}" data-value="{value!r}"{hover}>{escape(text)}</td>'


def img(path: Path, alt: str, caption: str) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{b64}" alt="{escape(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def kv(rows: list[tuple[str, str]]) -> str:
    return '<table class="kv">' + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def f4(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}"


@dataclass
class Page:
    """What every section reads: the data, the bootstrap, the charts, the registration, and the numbers shared by sections."""

    data: SweepData
    boot: Bootstrap
    charts: dict[str, Path]
    reg: Registration | None
    out: list[str] = field(default_factory=list)
    inspection: dict | None = None  # section 7's numbers for report.json, set by that section
    gallery: dict | None = None  # section 8's counts for report.json

    def __post_init__(self) -> None:
        data, boot = self.data, self.boot
        self.w = Writer(data)
        self.base, self.best = data.baseline, data.best
        self.b_id, self.o_id, self.s_id = self.base.run.run_id, self.best.run.run_id, data.sweep.run_id
        self.e0, self.e1 = self.base.metric(keys.TEST_ERROR_RATE), self.best.metric(keys.TEST_ERROR_RATE)
        self.rel = (self.e0 - self.e1) / self.e0 if self.e0 > 0 else float("nan")
        self.rr = boot.relative_reduction
        self.real = boot.error_reduction.low > 0
        self.p = data.best.run.params
        self.ds = self.base.dataset
        self.opt = optimal_label(data)
        self.engine = data.engine_version
