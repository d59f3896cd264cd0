"""Names from the user's data made safe for MLflow keys and artifact paths, and the check of every key before a run opens.

MLflow refuses a metric, param or tag key outside ``[/\\w.\\- :]`` (no colon on Windows), longer than
250 characters, or not a normalised relative path; stores differ beyond that (a file store on a
case-insensitive disk maps ``Crack`` and ``crack`` to one file; MySQL compares keys without case).
`key_names` maps class names to names that every store takes, and every writer and reader of a
per-class key (``test_recall/<class>``, ``synth.count.<class>``, ``samples/<class>.png``) goes through
it; the original names stay where people read them (``dataset.json``, which also holds the mapping,
the predictions CSVs, the verdict, the report).
"""
from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata
from collections import Counter
from typing import Iterable, Mapping

from mfexp.errors import ConfigError, DataError

MAX_KEY = 250  # MLflow's limit on a metric, param or tag key
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value
MAX_TAG_VALUE = 8000  # MLflow's limit on a tag value
MAX_NAME = 64  # a class name inside a key: leaves room for any prefix mfexp puts before it
KEY = re.compile(r"[A-Za-z0-9_\-. :/]*")  # what every MLflow store takes in a key (ASCII only)
KEPT = re.compile(r"[A-Za-z0-9_\-]([A-Za-z0-9_\-. ]*[A-Za-z0-9_\-])?")  # a class name used unchanged
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}  # Windows


def _digest(name: str, n: int) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def _changed(name: str, n: int) -> str:
    """ASCII letters kept (accents dropped: ``ö`` -> ``o``), every other run of characters one ``_``, then ``-<hash>``."""
    folded = "".join(ch if ch.isascii() else "" if unicodedata.combining(ch) else "_"
                     for ch in unicodedata.normalize("NFKD", name))
    base = re.sub(r"[^A-Za-z0-9_\-.]+", "_", folded).strip("_.- ")[: MAX_NAME - n - 1].strip("_.- ")
    return f"{base or 'class'}-{_digest(name, n)}"


def key_names(names: Iterable[str]) -> dict[str, str]:
    """``{original: name used in MLflow keys and artifact paths}`` for a set of class names.

    A name made of ASCII letters, digits, ``_``, ``-``, inner spaces and dots (at most 64 characters,
    not a Windows device name) is kept as it is. Any other name becomes its readable ASCII part plus
    ``-`` and 6 hex digits of its sha256 (``scratch (minor)`` -> ``scratch_minor-5c0d5a``). Names that
    would still coincide, also when compared without case, all take a 12-digit hash instead. The
    mapping is deterministic, independent of order and injective; raises DataError in the (2^-48)
    case that it cannot be.
    """
    names = list(dict.fromkeys(str(n) for n in names))

    def kept(n: str) -> bool:
        return len(n) <= MAX_NAME and KEPT.fullmatch(n) is not None and ".." not in n and n.lower() not in RESERVED

    out = {n: n if kept(n) else _changed(n, 6) for n in names}
    clash = Counter(v.lower() for v in out.values())
    out = {n: _changed(n, 12) if clash[v.lower()] > 1 else v for n, v in out.items()}
    if len({v.lower() for v in out.values()}) < len(out):
        raise DataError(f"class names {names} cannot be told apart in MLflow keys; rename a class folder")
    return out


def class_key(prefix: str, name: str, classes: Iterable[str]) -> str:
    """The per-class key ``<prefix><safe name>`` (``class_key("test_recall/", "scratch (minor)", classes)``)."""
    return prefix + key_names(classes)[name]


def bad_key(key: str) -> str | None:
    """Why MLflow (some store) would refuse ``key`` as a metric, param or tag key; None when it is fine."""
    if not key:
        return "empty"
    if len(key) > MAX_KEY:
        return f"longer than {MAX_KEY} characters"
    if not KEY.fullmatch(key):
        return "only ASCII letters, digits, _ - . : / and spaces are allowed"
    norm = posixpath.normpath(key)
    if norm != key or norm.startswith(("..", "/")):
        return "not a plain relative path (no //, ./, .. or leading /)"
    return None


def check_run_keys(params: Mapping[str, object], tags: Mapping[str, object]) -> None:
    """Raise ConfigError naming the first param or tag MLflow would refuse (key or value), before a run opens."""
    for what, items, limit in (("param", params, MAX_PARAM_VALUE), ("tag", tags, MAX_TAG_VALUE)):
        for k, v in items.items():
            why = bad_key(str(k))
            if why is None and len(str(v)) > limit:
                why = f"its value is longer than {limit} characters"
            if why is not None:
                raise ConfigError(f"MLflow {what} '{k}' would be refused ({why}); rename the config key or shorten its value")
