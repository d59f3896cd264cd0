"""Which files under a data folder are read: class folders walked recursively, hidden entries ignored, the rest counted.

Every file below a class folder, at any depth, goes to `mfexp.decode.decode`, which decides by its
bytes whether it is an image. What is not read is collected in `Skipped` and reported in one line:
hidden entries (a name starting with ``.``: ``.DS_Store``, ``.git/``, macOS ``._*`` files), files that
are not images, and entries outside the class folders (a file directly in ``train/``, a ``val/`` folder
beside ``train/``). Symbolic links are followed; a folder reached twice (a link loop) is read once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES = 3  # names shown per reason in the one-line summary


@dataclass
class Skipped:
    """What was not read, by reason; relative paths (folders end with ``/``)."""

    not_images: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.not_images or self.hidden or self.outside)

    def as_dict(self) -> dict[str, list[str]]:
        return {"not_images": self.not_images, "hidden": self.hidden, "outside_class_folders": self.outside}

    def line(self, where: str, outside_what: str = "outside the class folders") -> str | None:
        """One line counting everything skipped, with a few names per reason; None when nothing was."""
        parts = []
        for items, one, many in ((self.not_images, "file that is not an image", "files that are not images"),
                                 (self.hidden, "hidden file or folder", "hidden files or folders"),
                                 (self.outside, f"entry {outside_what}", f"entries {outside_what}")):
            if items:
                more = ", ..." if len(items) > EXAMPLES else ""
                parts.append(f"{len(items)} {one if len(items) == 1 else many} ({', '.join(items[:EXAMPLES])}{more})")
        return f"{where}: ignored {'; '.join(parts)}" if parts else None


def hidden(name: str) -> bool:
    return name.startswith(".")


def walk(folder: Path, relative_to: Path, skipped: Skipped) -> list[Path]:
    """Every non-hidden file below ``folder`` at any depth, sorted by its path relative to ``folder``.

    Hidden entries go to ``skipped.hidden`` (as paths relative to ``relative_to``), not entered."""
    seen: set[tuple[int, int]] = set()
    files: list[tuple[str, Path]] = []
    for top, dirs, names in os.walk(folder, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        here = Path(top)
        for d in sorted(dirs):
            if hidden(d):
                skipped.hidden.append(_rel(here / d, relative_to) + "/")
        dirs[:] = sorted(d for d in dirs if not hidden(d))
        for n in names:
            p = here / n
            if hidden(n):
                skipped.hidden.append(_rel(p, relative_to))
            elif p.is_file() or not p.exists():  # a broken link stays: decoding names it
                files.append((p.relative_to(folder).as_posix(), p))
            else:  # a pipe, socket or device: never opened
                skipped.not_images.append(_rel(p, relative_to))
    return [p for _, p in sorted(files, key=lambda f: f[0])]


def class_folders(split_dir: Path, relative_to: Path, skipped: Skipped) -> list[Path]:
    """The non-hidden folders of ``split_dir`` (sorted by name); its files and hidden entries are skipped."""
    found = []
    for p in sorted(split_dir.iterdir(), key=lambda p: p.name):
        if hidden(p.name):
            skipped.hidden.append(_rel(p, relative_to) + ("/" if p.is_dir() else ""))
        elif p.is_dir():
            found.append(p)
        else:
            skipped.outside.append(_rel(p, relative_to))
    return found


def _rel(p: Path, base: Path) -> str:
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)
