"""Image decoding and the fixed input mapping.

An image already at the model's resolution is used as is. An image no larger than the resolution on
either side (32x32 CIFAR-10 or GTSRB at 128) is upscaled whole to res x res (bilinear): such images are
tight crops already, and the center crop would cut 12.5 % of the object (head-only mcunet-5fps, 1000/500
CIFAR-10 images: 62.0 % whole vs 59.6 % center-cropped, 55.0 % at 64 and 48.6 % at 32; docs/datasets.md).
Any other image is resized so its shorter side is round(res / 0.875) (bilinear) and center-cropped to
res x res, the usual ImageNet evaluation transform. Pixels k (uint8 RGB) become int8 k - 128 (quant/arith.pixels_to_int8).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..quant.arith import pixels_to_int8

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}


def decode_errors() -> tuple:
    """What PIL raises for a file that does not decode (a decompression bomb included): every
    decoder of user images catches exactly these."""
    from PIL import Image, UnidentifiedImageError

    return (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError)


def decode_rgb(path):
    """Open an image file as an RGB PIL image; DatasetError names the file if it does not decode."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
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


def load_pixels(path, resolution: int) -> np.ndarray:
    """uint8 (res, res, 3) pixels of an image file, evaluation transform."""
    return np.asarray(resize_center_crop(decode_rgb(path), resolution), dtype=np.uint8)


def load_int8(paths, resolution: int) -> np.ndarray:
    """int8 NHWC batch of image files (evaluation transform + fixed input mapping)."""
    return pixels_to_int8(np.stack([load_pixels(p, resolution) for p in paths]))


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
