"""Progress that suits where output goes: an animated tqdm bar on a terminal, a log line per epoch in a file.

``trainer.progress`` (and any loop that wants the same behaviour) takes one of:

* ``auto`` (default): the animated bar when stderr is a terminal, else ``lines``;
* ``bar``: always the tqdm bar on stderr (it redraws: hundreds of refreshes per epoch in a file);
* ``lines``: no bar; the ``mfexp`` logger writes one line per epoch, and within an epoch longer than
  ``trainer.progress_interval`` seconds one line per that many seconds (the batch group done so far);
* ``off``: nothing between the run's start line and its verdict.

The booleans of earlier versions still work: ``true`` is ``auto``, ``false`` is ``lines`` (no bar, yet a
long run still says how far it is). The epoch lines are also written under the bar, so a terminal keeps
a line per finished epoch after its bar is cleared.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator

from tqdm.auto import tqdm

from mfexp.errors import ConfigError

MODES = ("auto", "bar", "lines", "off")
ALIASES = {"true": "auto", "false": "lines", "none": "off"}
log = logging.getLogger("mfexp")


def check(setting) -> str:
    """The mode named by a ``trainer.progress`` value (``True``/``"false"`` included); ConfigError otherwise."""
    name = str(setting).strip().lower()
    name = ALIASES.get(name, name)
    if name not in MODES:
        raise ConfigError(f"trainer.progress={setting}: use {', '.join(MODES)}")
    return name


def resolve(setting, stream=None) -> str:
    """``bar``, ``lines`` or ``off``: ``auto`` becomes ``bar`` when ``stream`` (default stderr, where tqdm draws) is a terminal."""
    mode = check(setting)
    if mode != "auto":
        return mode
    stream = sys.stderr if stream is None else stream
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or exotic stream: no terminal
        return "lines"


def _length(iterable: Iterable) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


class _Lines:
    """Iterates like tqdm; logs ``desc: i/n, postfix (elapsed)`` at most once per ``interval`` seconds."""

    def __init__(self, iterable: Iterable, desc: str, interval: float, clock: Callable[[], float]):
        self.iterable, self.desc, self.interval, self.clock = iterable, desc, interval, clock
        self.postfix, self.total = "", _length(iterable)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def __iter__(self) -> Iterator:
        start = last = self.clock()
        for i, item in enumerate(self.iterable, start=1):
            yield item
            now = self.clock()
            if self.interval > 0 and now - last >= self.interval and (self.total is None or i < self.total):
                last = now
                done = f"{i}/{self.total}" if self.total is not None else str(i)
                log.info("%s: %s%s (%.0f s)", self.desc, done, f", {self.postfix}" if self.postfix else "", now - start)


class _Quiet:
    def __init__(self, iterable: Iterable):
        self.iterable = iterable

    def set_postfix(self, **values) -> None:
        pass

    def __iter__(self) -> Iterator:
        return iter(self.iterable)


def bar(iterable: Iterable, desc: str, setting="auto", interval: float = 60.0, stream=None,
        clock: Callable[[], float] = time.monotonic):
    """Wrap ``iterable`` (an epoch's batches) for ``setting``: a tqdm bar, a line per ``interval`` seconds, or nothing.

    The result iterates like ``iterable`` and has tqdm's ``set_postfix(**values)``."""
    mode = resolve(setting, stream)
    if mode == "bar":
        # One iterator, made here: tqdm.auto's constructor calls iter() on what it wraps, and a second
        # DataLoader iterator would draw from the loader's generator, so the sample order would depend
        # on the display mode. Given an iterator, every mode trains on the same stream.
        return tqdm(iter(iterable), total=_length(iterable), desc=desc, leave=False, file=stream)
    if mode == "lines":
        return _Lines(iterable, desc, interval, clock)
    return _Quiet(iterable)


def epoch_line(setting, text: str, stream=None) -> None:
    """Log one finished epoch (``text``) unless progress is ``off``."""
    if resolve(setting, stream) != "off":
        log.info(text)


def epoch_lines(on_epoch: Callable[[int, dict], None], setting, label: str, total: int,
                clock: Callable[[], float] = time.perf_counter) -> Callable[[int, dict], None]:
    """``on_epoch`` that first logs ``label e/total: metric value, ... (seconds)`` for each finished epoch (`epoch_line`)."""
    last = [clock()]

    def call(epoch: int, metrics: dict) -> None:
        now = clock()
        values = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        epoch_line(setting, f"{label} {epoch + 1}/{total}: {values} ({now - last[0]:.1f} s)")
        last[0] = now
        on_epoch(epoch, metrics)

    return call
