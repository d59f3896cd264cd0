"""One file -> the 8-bit pixels an image viewer shows: every Pillow mode, bit depth, orientation and size limit.

The rules, applied in this order by `decode` (training and ``python -m mfexp.predict`` both call it):

1. **What is an image** is what Pillow identifies from the bytes, whatever the file is called. A file
   Pillow cannot identify is skipped as "not an image" unless its extension names an image format
   (`is_image_name`): then it is refused by name, as is any identified file that does not decode.
2. **Size**: JPEGs are decoded at the smallest DCT scale (1/1 to 1/8) that keeps both sides at least
   ``image_size``, as ``Image.thumbnail`` does. An image of more than ``max_pixels`` pixels after that
   is refused by name before it is decoded; below it, decoding needs at most about 20 bytes a pixel.
3. **Orientation**: the EXIF orientation tag is applied (``ImageOps.exif_transpose``), as viewers do.
4. **Mode** (`to_display`): to 8-bit gray (``L``) or ``RGB``, mode by mode:
   ``1`` -> 0 / 255; ``L`` as is; 16-bit gray (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, and ``I`` from
   16-bit PNG, PNM or TIFF) -> round(v * 255 / 65535): the full 16-bit range onto 0-255, as viewers
   show such files, so 12-bit data stored in 16-bit files (0-4095) comes out dark, at most 16;
   alpha (``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``, a ``P`` palette with transparency) is composited
   over white, as a viewer shows a transparent image on a white page; ``P``, ``RGBX``, ``YCbCr``,
   ``HSV``, ``LAB`` -> RGB by Pillow; ``CMYK`` -> sRGB through its embedded ICC profile (LittleCMS),
   else by Pillow's formula. Embedded profiles of RGB and gray images are not applied (values are
   taken as sRGB, as torchvision and timm do). Refused as ambiguous, by name: floating-point pixels
   (``F``), 32-bit integers (``I`` from any other source, or values outside 0-65535), unknown modes.
   An animated or multi-page file gives its first frame.
5. **Gray or colour**: an image is gray when it has one channel or when every pixel it shows has
   R = G = B (a gray palette, a gray photo saved as RGB); its gray value is then that R.
6. ``channels=1`` turns colour into gray (ITU-R 601 luma, Pillow's ``convert("L")``) before resizing;
   the image is resized to ``image_size`` squares (bilinear, antialiased); ``channels=3`` repeats a
   gray image's channel after resizing.
"""
from __future__ import annotations

import contextlib
import io
import mimetypes
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from mfexp.errors import DataError

DEFAULT_MAX_PIXELS = 100_000_000  # data.max_image_pixels: 10,000 x 10,000; about 2 GB at the worst mode
GRAY16 = ("I;16", "I;16B", "I;16L", "I;16N")
ALPHA = ("LA", "La", "PA", "P", "RGBA", "RGBa")
TO_RGB = ("RGB", "RGBX", "YCbCr", "HSV", "LAB")
DATA_FORMATS = ("BUFR", "GRIB", "HDF5", "MPEG")  # Pillow identifies these but they hold no picture: not images
# Image formats Pillow cannot read here; a file named so is refused, never skipped.
OTHER_IMAGE_SUFFIXES = {".heic", ".heif", ".avif", ".avifs", ".jxl", ".svg", ".exr", ".hdr", ".dng", ".cr2", ".cr3",
                        ".nef", ".arw", ".orf", ".rw2", ".raf", ".raw"}


def _image_suffixes() -> frozenset[str]:
    Image.init()
    readable = {ext for ext, fmt in Image.EXTENSION.items() if fmt in Image.OPEN and fmt not in DATA_FORMATS}
    typed = {ext for ext, kind in mimetypes.types_map.items() if kind.startswith("image/")}
    return frozenset(readable | typed | OTHER_IMAGE_SUFFIXES)


IMAGE_SUFFIXES = _image_suffixes()


def is_image_name(path: Path) -> bool:
    """Whether the file's extension names an image format (Pillow's, the system's image types, RAW, HEIC...)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


@contextlib.contextmanager
def _own_size_limit():
    """Pillow's decompression-bomb check off (it names no file); `decode` applies ``max_pixels`` itself."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's EXIF / palette notes would break the one-line errors
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def unreadable(path: Path, e: BaseException) -> DataError:
    return DataError(f"{path}: unreadable or corrupt image ({type(e).__name__}: {e})")


def decode(path: Path, image_size: int, channels: int | None = None,
           max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray | None:
    """The image at ``path`` as uint8 ``(image_size, image_size, C)``; None when the file is not an image.

    ``C`` is ``channels`` when given (1 or 3), else 1 for a gray image and 3 for a colour one (module
    docstring, rules 1-6). Raises DataError naming the file when it should be an image and cannot be
    read, is larger than ``max_pixels`` pixels, or its pixels have no unambiguous 8-bit value."""
    path = Path(path)
    with _own_size_limit():
        try:
            im = Image.open(path)
        except UnidentifiedImageError as e:
            if is_image_name(path):
                raise unreadable(path, e) from None
            return None
        except Exception as e:  # noqa: BLE001 - whatever a plugin raises on bad bytes is the file's fault
            raise unreadable(path, e) from None
        with im:
            if im.format in DATA_FORMATS:
                return None
            try:
                shown = _shown(im, path, image_size, max_pixels)
                if channels == 1 and shown.mode == "RGB":
                    shown = shown.convert("L")
                if shown.size != (image_size, image_size):
                    shown = shown.resize((image_size, image_size), Image.BILINEAR)
                arr = np.asarray(shown, dtype=np.uint8)
            except DataError:
                raise
            except Exception as e:  # noqa: BLE001
                raise unreadable(path, e) from None
    arr = arr[..., None] if arr.ndim == 2 else arr
    return np.repeat(arr, 3, axis=2) if channels == 3 and arr.shape[2] == 1 else arr


def _shown(im: Image.Image, path: Path, image_size: int, max_pixels: int) -> Image.Image:
    im.draft(None, (image_size, image_size))  # JPEG: DCT scaling; other formats: no-op
    w, h = im.size
    if w * h > max_pixels:
        raise DataError(f"{path}: {w} x {h} pixels is more than data.max_image_pixels={max_pixels} "
                        f"(decoding needs up to about {20 * w * h / 1e9:.1f} GB); raise it to read this image")
    im.load()
    ImageOps.exif_transpose(im, in_place=True)
    return to_display(im, path)


def to_display(im: Image.Image, path: Path) -> Image.Image:
    """A loaded image of any mode as ``L`` (gray) or ``RGB``, as a viewer shows it (module docstring, rules 4-5)."""
    mode = im.mode
    if mode == "L":
        return im
    if mode == "1":
        return im.convert("L")
    if mode in GRAY16 or mode == "I":
        return _gray16(im, path)
    if mode == "F":
        raise DataError(f"{path}: floating-point pixels (Pillow mode F) have no defined 8-bit value; "
                        "save the image with 8 or 16 bits per sample")
    if mode in ALPHA:
        rgba = (im.convert("LA") if mode == "La" else im).convert("RGBA")
        rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    elif mode in TO_RGB:
        rgb = im.convert("RGB")
    elif mode == "CMYK":
        rgb = _cmyk(im, path)
    else:
        raise DataError(f"{path}: Pillow mode {mode} is not supported; save the image as 8-bit gray or RGB")
    r, g, b = rgb.split()
    if ImageChops.difference(r, g).getbbox() is None and ImageChops.difference(g, b).getbbox() is None:
        return r  # every pixel gray
    return rgb


def _gray16(im: Image.Image, path: Path) -> Image.Image:
    if im.mode == "I":
        bits = getattr(im, "tag_v2", {}).get(258, (16,)) if im.format == "TIFF" else None
        if not (im.format in ("PNG", "PPM") or (bits is not None and tuple(bits)[:1] == (16,))):
            raise DataError(f"{path}: 32-bit integer pixels (Pillow mode I, {im.format}) have no defined white level; "
                            "save the image with 8 or 16 bits per sample")
    a = np.asarray(im)
    if im.mode == "I":
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise DataError(f"{path}: pixel values {lo}..{hi} lie outside the 16-bit range 0..65535")
    a = a.astype(np.uint32)
    a *= 255
    a += 32767
    a //= 65535  # round(v * 255 / 65535)
    return Image.fromarray(a.astype(np.uint8))


def _cmyk(im: Image.Image, path: Path) -> Image.Image:
    icc = im.info.get("icc_profile")
    if not icc:
        return im.convert("RGB")
    from PIL import ImageCms

    try:
        return ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
                                         outputMode="RGB")
    except Exception as e:  # noqa: BLE001 - PyCMSError, OSError: a profile LittleCMS cannot use
        raise DataError(f"{path}: its embedded CMYK colour profile cannot convert it to RGB ({type(e).__name__}: {e})") from None
