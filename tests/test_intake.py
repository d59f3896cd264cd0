"""Data intake (issue 17): what a folder yields per class and split, what is skipped and refused, and when.

Folders are built here the way real ones look (images in sub-folders, stray files, hidden files,
tiny classes, copies across splits) and read by `mfexp.data.load_splits`; refusals also go through
the real entry point, which must answer with one line and exit 2 before any MLflow run exists.
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_decode import giant_png

from mfexp import data as data_mod
from mfexp.errors import DataError


def _png(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def _tree(root: Path, counts: dict[str, int], split: str = "train", size: int = 12, sub: str = "") -> Path:
    """Unique gray PNGs (pixels from class, index and split), optionally in a sub-folder of each class folder."""
    for ci, (cls, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            px = np.random.default_rng([ci, i, len(split), len(sub)]).integers(0, 256, (size, size), dtype=np.uint8)
            _png(root / split / cls / sub / f"{cls}_{i:03d}.png", px)
    return root


def load(root: Path, **kw) -> data_mod.Splits:
    kw.setdefault("image_size", 8)
    return data_mod.load_splits.__wrapped__(str(root), **kw)  # bypass the memo: files change between calls


# ---------------------------------------------------------------------------- images silently skipped
def test_class_folders_are_read_recursively_and_what_is_skipped_is_counted(tmp_path, caplog):
    _tree(tmp_path, {"good": 4, "dent": 3})
    _tree(tmp_path, {"good": 5}, sub="batch_2024_01")  # images one sub-folder down, as ImageFolder reads them
    _tree(tmp_path, {"good": 2}, sub="batch_2024_02/cam_b")
    good = tmp_path / "train" / "good"
    (good / "notes.txt").write_text("lot 42")
    (good / "batch_2024_01" / "Thumbs.db").write_bytes(b"\x00" * 64)
    (good / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (good / "._good_000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork, not a PNG
    (good / ".thumbnails").mkdir()
    _png(good / ".thumbnails" / "t.png", np.zeros((4, 4), np.uint8))
    _png(good / "scan_0001", np.full((12, 12), 7, np.uint8), format="PNG")  # no extension: a PNG by its bytes
    (tmp_path / "train" / "README.md").write_text("labels by QA")
    (tmp_path / "val").mkdir()  # a split mfexp does not read
    with caplog.at_level(logging.WARNING, logger="mfexp"):
        s = load(tmp_path, val_fraction=0.25, test_fraction=0.25)
    read = {c: s.train.counts()[c] + s.val.counts()[c] + s.test.counts()[c] for c in s.classes}
    assert read == {"dent": 3, "good": 4 + 5 + 2 + 1}  # every image, at any depth, whatever its name
    assert "train/good/batch_2024_02/cam_b/good_000.png" in s.train.paths + s.val.paths + s.test.paths
    skipped = s.intake["skipped"]
    assert skipped["not_images"] == ["train/good/batch_2024_01/Thumbs.db", "train/good/notes.txt"]
    assert sorted(skipped["hidden"]) == ["train/good/.DS_Store", "train/good/._good_000.png", "train/good/.thumbnails/"]
    assert skipped["outside_class_folders"] == ["val/", "train/README.md"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(f"{tmp_path}: ignored 2 files that are not images (")
    assert "3 hidden files or folders" in lines[0] and "2 entries outside train/<class>/ and test/<class>/" in lines[0]


@pytest.mark.parametrize("name, content", [
    ("broken.png", b"\x89PNG\r\n\x1a\n garbage"),
    ("empty.jpg", b""),
    ("photo.heic", b"\x00\x00\x00\x18ftypheic"),  # an image format Pillow cannot read here
    ("drawing.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
    ("moved.png", None),  # a link whose target is gone
])
def test_a_file_named_as_an_image_that_cannot_be_read_is_refused(tmp_path, name, content):
    _tree(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "train" / "b" / "deep").mkdir()
    target = tmp_path / "train" / "b" / "deep" / name
    target.write_bytes(content) if content is not None else target.symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path / 'train/b/deep' / name))}: unreadable or corrupt image"):
        load(tmp_path)


# ---------------------------------------------------------------------------- tiny classes
@pytest.mark.parametrize("rare", [1, 2])
def test_a_class_too_small_for_three_splits_stops_with_its_name_and_count(tmp_path, rare):
    _tree(tmp_path, {"good": 10, "crack": rare})
    with pytest.raises(DataError, match=rf"train/crack: class 'crack' has {rare} image\(s\); it needs at least 3"):
        load(tmp_path)


def test_a_rare_class_gets_an_image_in_every_split(tmp_path):
    _tree(tmp_path, {"good": 30, "crack": 3, "pit": 4})
    s = load(tmp_path)
    for part in (s.train, s.val, s.test):
        assert part.counts()["crack"] == 1 and part.counts()["pit"] >= 1
    assert sum(p.counts()["pit"] for p in (s.train, s.val, s.test)) == 4
    assert data_mod.subset(s.train, 0.1, 0).counts()["crack"] == 1  # screening subsets keep every class too


def test_with_a_test_folder_two_images_suffice_and_every_class_needs_a_test_image(tmp_path):
    _tree(tmp_path, {"good": 10, "crack": 2})
    _tree(tmp_path, {"good": 3, "crack": 1}, split="test")
    s = load(tmp_path)
    assert (s.train.counts()["crack"], s.val.counts()["crack"], s.test.counts()["crack"]) == (1, 1, 1)
    for f in (tmp_path / "test" / "crack").iterdir():
        f.unlink()
    (tmp_path / "test" / "crack").rmdir()
    with pytest.raises(DataError, match=r"test: no test images of class\(es\) \['crack'\]"):
        load(tmp_path)


# ---------------------------------------------------------------------------- leakage between splits
def test_copies_across_splits_are_reported_before_training(tmp_path, caplog):
    _tree(tmp_path, {"good": 8, "dent": 6})
    _tree(tmp_path, {"good": 2, "dent": 2}, split="test")
    for cls, i in (("good", 3), ("dent", 5)):
        (tmp_path / "test" / cls / f"copy_{i}.png").write_bytes((tmp_path / "train" / cls / f"{cls}_{i:03d}.png").read_bytes())
    with caplog.at_level(logging.WARNING, logger="mfexp"):
        s = load(tmp_path)
    assert s.intake["copies_across_splits"] == 2
    assert s.intake["copy_example"] == ["train/dent/dent_005.png", "test/dent/copy_5.png"]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"{tmp_path}: 2 file(s) of the validation or test split are byte-identical to a file of an "
                           "earlier split (e.g. test/dent/copy_5.png = train/dent/dent_005.png)")
    with pytest.raises(DataError, match=r"2 file\(s\) .* \(data.duplicates=refuse\)$"):
        load(tmp_path, duplicates="refuse")
    for cls in ("good", "dent"):
        for f in (tmp_path / "test" / cls).glob("copy_*"):
            f.unlink()
    assert load(tmp_path, duplicates="refuse").intake["copies_across_splits"] == 0


# ---------------------------------------------------------------------------- gray or colour, folder-wide
def test_gray_or_colour_follows_what_the_images_show(tmp_path):
    g = np.random.default_rng(0).integers(0, 250, (8, 8), dtype=np.uint8)
    for k, cls in enumerate(("a", "b")):
        for i in range(3):
            _png(tmp_path / "train" / cls / f"{i}.png", g + 3 * k + i)
    Image.fromarray(g).convert("P").save(tmp_path / "train" / "a" / "palette.png")
    _png(tmp_path / "train" / "b" / "rgb_gray.png", np.dstack([g, g, g]))
    s = load(tmp_path)
    assert s.train.images.shape[-1] == 1  # L, a gray palette and gray RGB pixels: gray
    _png(tmp_path / "train" / "b" / "colour.png", np.dstack([g, g // 2, g]))
    s = load(tmp_path)
    every = np.concatenate([s.train.images, s.val.images, s.test.images])
    assert every.shape[-1] == 3 and (every[..., 0] == every[..., 2]).all()  # gray images repeat their channel


# ---------------------------------------------------------------------------- the command line: one line, exit 2, no run
def _giant(root: Path) -> None:
    (root / "train" / "b" / "giant.png").write_bytes(giant_png(20000, 20000))


def _heic(root: Path) -> None:
    (root / "train" / "b" / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")


def _copies(root: Path) -> None:
    _tree(root, {"a": 1, "b": 1}, split="test")
    (root / "test" / "b" / "again.png").write_bytes((root / "train" / "b" / "b_000.png").read_bytes())


CLI_REFUSALS = {  # name: (spoil the data, extra overrides, the message after "mfexp: error: ")
    "tiny_class": (lambda r: _tree(r, {"c": 1}), [], r".*/train/c: class 'c' has 1 image\(s\); it needs at least 3, .*"),
    "giant_image": (_giant, [], r".*/train/b/giant\.png: 20000 x 20000 pixels is more than data\.max_image_pixels=100000000 .*"),
    "unreadable_heic": (_heic, [], r".*/train/b/IMG_0001\.HEIC: unreadable or corrupt image \(.*"),
    "copies_refused": (_copies, ["data.duplicates=refuse"], r".*: 1 file\(s\) of .* \(e\.g\. test/b/again\.png = train/b/b_000\.png\).*"),
    "16_bit_float": (lambda r: Image.fromarray(np.zeros((4, 4), np.float32)).save(r / "train" / "a" / "f.tif"), [],
                     r".*/train/a/f\.tif: floating-point pixels .*"),
}


@pytest.mark.parametrize("case", list(CLI_REFUSALS))
def test_refusals_are_one_line_exit_2_before_any_run(case, tmp_path, mlflow_store, monkeypatch, capsys):
    from conftest import TINY_TRAIN, patch_fit

    from mfexp.__main__ import main

    def no_training(*a, **k):
        raise AssertionError("training started")

    root = _tree(tmp_path / "d", {"a": 4, "b": 4})
    spoil, extra, message = CLI_REFUSALS[case]
    spoil(root)
    patch_fit(monkeypatch, no_training)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["mfexp", "data=folder", f"data.root={root}", *TINY_TRAIN, *mlflow_store.overrides, *extra])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert re.fullmatch("mfexp: error: " + message, err[0]), err[0]
    assert mlflow_store.runs() == []
