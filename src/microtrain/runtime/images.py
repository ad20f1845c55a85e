"""Image decoding and the fixed input mapping.

An image already at the model's resolution is used as is. An image no larger than the resolution on
either side (32x32 CIFAR-10 or GTSRB at 128) is upscaled whole to res x res (bilinear): such images are
tight crops already, and the center crop would cut 12.5 % of the object (head-only mcunet-5fps, 1000/500
CIFAR-10 images: 62.0 % whole vs 59.6 % center-cropped, 55.0 % at 64 and 48.6 % at 32; docs/datasets.md).
Any other image is resized so its shorter side is round(res / 0.875) (bilinear) and center-cropped to
res x res, the usual ImageNet evaluation transform. Pixels k (uint8 RGB) become int8 k - 128 (quant/arith.pixels_to_int8).
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..quant.arith import pixels_to_int8

# decoded-pixel cap, checked from the header before any pixel is decoded: a 12000x12000 PNG would
# otherwise take over a gigabyte (a 50 MP photo is still accepted)
MAX_PIXELS = int(os.environ.get("MICROTRAIN_MAX_PIXELS", 64_000_000))

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}


def decode_errors() -> tuple:
    """What PIL raises for a file that does not decode (a decompression bomb included): every
    decoder of user images catches exactly these."""
    from PIL import Image, UnidentifiedImageError

    return (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError)


class TooLargeImage(ValueError):
    """An image above MAX_PIXELS (a ValueError, so every decoder's decode_errors() clause catches it)."""


@contextmanager
def open_image(path):
    """Image.open with microtrain's pixel cap instead of PIL's DecompressionBomb warning/error."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap below says it in one line
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise TooLargeImage(f"image too large ({e.args[0].split(',')[0]}); limit {MAX_PIXELS:,} pixels "
                            "(MICROTRAIN_MAX_PIXELS)") from None
    with im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise TooLargeImage(f"image too large: {w}x{h} = {w * h:,} pixels, limit {MAX_PIXELS:,} "
                                "(MICROTRAIN_MAX_PIXELS)")
        yield im


def decode_rgb(path):
    """Open an image file as an RGB PIL image; DatasetError names the file if it does not decode."""
    try:
        with open_image(path) as im:
            im.load()
            return im.convert("RGB")
    except TooLargeImage as e:
        raise DatasetError(f"{path}: {e}") from None
    except decode_errors() as e:
        raise DatasetError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None


def resize_center_crop(im, resolution: int, crop_ratio: float = 0.875):
    from PIL import Image

    w, h = im.size
    if (w, h) == (resolution, resolution):
        return im
    if w <= resolution and h <= resolution:  # a small tight crop: upscale it whole (module docstring)
        return im.resize((resolution, resolution), Image.BILINEAR)
    short = round(resolution / crop_ratio)
    scale = short / min(w, h)
    nw, nh = max(short, round(w * scale)), max(short, round(h * scale))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    return im.crop((left, top, left + resolution, top + resolution))


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """uint8 RGB pixels (..., W, 3) in the model's input channels: 3 as they are; 1 (a grayscale model such as
    TFLM's person_detect) the ITU-R 601-2 luma of PIL's "L" mode, L = R 299/1000 + G 587/1000 + B 114/1000
    (PIL's integer rounding), taken after the resize/crop and before the k - 128 mapping."""
    if channels == 3:
        return pixels
    if channels != 1:
        raise DatasetError(f"image input with {channels} channels: only RGB (3) and grayscale (1) models read images")
    from PIL import Image

    px = np.ascontiguousarray(pixels, dtype=np.uint8)
    flat = px.reshape((-1,) + px.shape[-2:])  # one tall RGB image: PIL converts pixel by pixel
    luma = np.asarray(Image.fromarray(flat.reshape(-1, px.shape[-2], 3)).convert("L"), dtype=np.uint8)
    return luma.reshape(px.shape[:-1] + (1,))


def load_pixels(path, resolution: int, channels: int = 3) -> np.ndarray:
    """uint8 (res, res, channels) pixels of an image file, evaluation transform (to_channels for 1 channel)."""
    return to_channels(np.asarray(resize_center_crop(decode_rgb(path), resolution), dtype=np.uint8), channels)


def load_int8(paths, resolution: int, channels: int = 3) -> np.ndarray:
    """int8 NHWC batch of image files (evaluation transform + fixed input mapping)."""
    return pixels_to_int8(np.stack([load_pixels(p, resolution, channels) for p in paths]))


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
