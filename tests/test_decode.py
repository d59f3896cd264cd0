"""Decoding (issue 17): every Pillow mode gives the 8-bit values an image viewer shows, or is refused by name.

Each image is generated here with known pixel values, saved in the format that gives the mode under
test (or built in memory where Pillow cannot save that mode) and decoded by `mfexp.decode`.
"""
from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfexp.decode import decode, to_display
from mfexp.errors import DataError


def _png(path: Path, arr: np.ndarray, mode: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path, **kw)
    return path


def giant_png(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width`` x ``height`` 8-bit gray pixels (the pixel data is a stub)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    head = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------- pixels decoded right, mode by mode
def test_8_bit_gray_bilevel_and_rgb(tmp_path):
    g = np.arange(16, dtype=np.uint8).reshape(4, 4) * 17  # 0 .. 255
    assert np.array_equal(decode(_png(tmp_path / "l.png", g), 4)[..., 0], g)
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1").save(tmp_path / "bits.png")
    assert Image.open(tmp_path / "bits.png").mode == "1"
    assert decode(tmp_path / "bits.png", 2)[..., 0].tolist() == [[0, 255], [255, 0]]
    rgb = np.dstack([g, 255 - g, np.full_like(g, 9)])
    assert np.array_equal(decode(_png(tmp_path / "rgb.png", rgb), 4), rgb)
    assert decode(_png(tmp_path / "gray_rgb.png", np.dstack([g, g, g])), 4).shape == (4, 4, 1)  # shows gray: gray
    assert np.array_equal(decode(tmp_path / "l.png", 4, channels=3), np.dstack([g, g, g]))
    r, g_, b = (rgb[..., i].astype(int) for i in range(3))
    luma = (r * 299 + g_ * 587 + b * 114 + 500) // 1000
    assert np.abs(decode(tmp_path / "rgb.png", 4, channels=1)[..., 0].astype(int) - luma).max() <= 1


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_gray_is_rescaled_from_the_full_range(tmp_path, fmt):
    path = tmp_path / f"deep.{fmt.lower()}"
    Image.fromarray(np.array([[0, 257, 4095, 32768, 65535]], dtype=np.uint16)).save(path, fmt)
    assert Image.open(path).mode.startswith("I;16")
    # round(v * 255 / 65535); Pillow's own convert("L") clips, which made every pixel 255
    assert decode(path, 5)[0, :, 0].tolist() == [0, 1, 16, 128, 255]


def test_16_bit_big_endian_and_pnm(tmp_path):
    pgm = tmp_path / "deep.pgm"
    pgm.write_bytes(b"P5 4 1 65535\n" + np.array([0, 257, 32768, 65535], ">u2").tobytes())
    assert Image.open(pgm).mode in ("I", "I;16B")
    assert decode(pgm, 4)[0, :, 0].tolist() == [0, 1, 128, 255]
    big = Image.frombytes("I;16B", (2, 2), np.array([0, 65535, 257, 4095], ">u2").tobytes())
    assert np.asarray(to_display(big, Path("x"))).tolist() == [[0, 255], [1, 16]]


def test_float_and_32_bit_pixels_are_refused_by_name(tmp_path):
    for arr, mode in ((np.full((2, 2), 0.5, np.float32), "F"), (np.full((2, 2), 70000, np.int32), "I")):
        path = tmp_path / f"{mode}.tif"
        Image.fromarray(arr).save(path)
        assert Image.open(path).mode == mode
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: (floating-point|32-bit integer) pixels"):
            decode(path, 2)


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.array([[[200, 10, 10, 255], [200, 10, 10, 0]], [[0, 0, 0, 128], [50, 60, 70, 255]]], np.uint8)
    out = decode(_png(tmp_path / "rgba.png", rgba), 2).astype(int)
    assert out[0, 0].tolist() == [200, 10, 10] and out[0, 1].tolist() == [255, 255, 255]
    assert np.abs(out[1, 0] - 127).max() <= 1 and out[1, 1].tolist() == [50, 60, 70]
    la = decode(_png(tmp_path / "la.png", np.array([[[100, 255], [100, 0]]], np.uint8), "LA"), 2)
    assert la.shape == (2, 2, 1) and la[0, :, 0].tolist() == [100, 255]  # gray with alpha stays gray
    for mode, value, expected in (("La", (100, 0), 255), ("PA", (0, 0), 255), ("RGBa", (50, 60, 70, 255), [50, 60, 70])):
        assert np.asarray(to_display(Image.new(mode, (1, 1), value), Path("x")))[0, 0].tolist() == expected


def test_palette_images_gray_colour_and_transparent(tmp_path):
    g = np.arange(9, dtype=np.uint8).reshape(3, 3) * 30
    Image.fromarray(g).convert("P").save(tmp_path / "gray_palette.png")
    assert Image.open(tmp_path / "gray_palette.png").mode == "P"
    assert np.array_equal(decode(tmp_path / "gray_palette.png", 3), g[..., None])  # a gray palette is gray
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255])
    p.putdata([0, 1])
    p.save(tmp_path / "colour.png")
    assert decode(tmp_path / "colour.png", 2)[0].tolist() == [[255, 0, 0], [0, 0, 255]]
    p.save(tmp_path / "transparent.png", transparency=1)
    assert decode(tmp_path / "transparent.png", 2)[0].tolist() == [[255, 0, 0], [255, 255, 255]]


def test_other_colour_modes(tmp_path):
    cmyk = Image.frombytes("CMYK", (3, 1), bytes([0, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 255]))
    cmyk.save(tmp_path / "cmyk.tif")
    assert Image.open(tmp_path / "cmyk.tif").mode == "CMYK"
    assert decode(tmp_path / "cmyk.tif", 3)[0].tolist() == [[255, 255, 255], [0, 255, 255], [0, 0, 0]]
    shown = {m: np.asarray(to_display(Image.new(m, (1, 1), v), Path("x")))[0, 0].tolist()
             for m, v in (("YCbCr", (128, 128, 128)), ("HSV", (0, 255, 255)), ("RGBX", (10, 20, 30, 0)), ("LAB", (0, 128, 128)))}
    assert shown["YCbCr"] == 128 and shown["HSV"] == [255, 0, 0] and shown["RGBX"] == [10, 20, 30]
    assert max(shown["LAB"]) <= 1  # L* = 0 is black


@pytest.mark.parametrize("orientation, turns", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, turns):
    stored = np.arange(9, dtype=np.uint8).reshape(3, 3) * 20
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "o.png", exif=exif)
    assert np.array_equal(decode(tmp_path / "o.png", 3)[..., 0], np.rot90(stored, turns))  # as a viewer shows it


def test_phone_jpeg_turned_sideways_is_shown_upright(tmp_path):
    stored = np.zeros((64, 64), np.uint8)
    stored[:, 32:] = 255  # left half dark as stored; the tag says: turn 90 degrees clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = decode(tmp_path / "phone.jpg", 16)[..., 0].astype(int)
    assert shown[:6].mean() < 20 and shown[-6:].mean() > 235  # dark half on top


# ---------------------------------------------------------------------------- giant images
def test_an_image_over_the_pixel_limit_is_named_and_the_setting_allows_it(tmp_path):
    big = _png(tmp_path / "scan.png", np.full((300, 200), 77, np.uint8))
    with pytest.raises(DataError, match=rf"^{re.escape(str(big))}: 200 x 300 pixels is more than data.max_image_pixels=50000"):
        decode(big, 16, max_pixels=50_000)
    assert (decode(big, 16, max_pixels=60_000) == 77).all()
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((2400, 1600), 200, np.uint8)).save(photo)
    out = decode(photo, 16, max_pixels=100_000)  # decoded at 1/8 scale (200 x 300) by JPEG's DCT scaling
    assert out.shape == (16, 16, 1) and np.abs(out.astype(int) - 200).max() <= 2


def test_a_giant_header_is_refused_before_decoding(tmp_path):
    path = tmp_path / "giant.png"  # 20000 x 20000 says the header; Pillow would raise DecompressionBombError naming no file
    path.write_bytes(giant_png(20000, 20000))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: 20000 x 20000 pixels is more than data.max_image_pixels="):
        decode(path, 16)
