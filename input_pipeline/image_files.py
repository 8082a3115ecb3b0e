"""Decoding image files with PIL into this project's layout: uint8 (H, W, 3), upright.

Whatever the file stores, the pipeline downstream sees one layout:

- EXIF orientation is applied first (`ImageOps.exif_transpose`), so a phone photo stored sideways
  with an orientation tag comes out upright.
- 8-bit grayscale ('L', '1') is replicated to three channels.
- 16-bit and 32-bit grayscale ('I;16*', 'I', 'F'; e.g. X-rays exported as 16-bit PNG) is scaled
  by the image's own (min, max) range onto 0..255: a scan that uses 1000..5000 of 0..65535 keeps
  its contrast instead of turning almost black (/257) or white (clipping at 255). A constant image
  decodes to zeros.
- Transparency ('RGBA', 'LA', 'PA', and palette or RGB images with a transparency entry) is
  composited over BLACK: out = colour * alpha / 255. Black because the medical images this
  project targets (fundus photographs, X-rays, slide scans) sit on a dark surround, so a
  transparent margin becomes the background the content already has, and because it is plain
  premultiplied alpha; dropping alpha instead would resurrect whatever colour the fully
  transparent pixels happen to store.
- Palette ('P') images are expanded to their palette colours; CMYK, YCbCr, LAB, HSV are converted
  to RGB by PIL.

A file that PIL cannot open or fully decode (truncated, corrupted, not an image) raises
`UnreadableImageError` naming the file; `file_list_source.py` decides what to do about it.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from PIL import ImageOps

# Extensions (lower case) that the folder sources list as images; others (e.g. CSVs, thumbnails
# databases) are ignored.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm",
                    ".pgm")
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class UnreadableImageError(OSError):
  """An image file that could not be opened or decoded; the message names the file."""


def is_image_file(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scale_to_uint8(values: np.ndarray) -> np.ndarray:
  """Maps an array onto 0..255 by its own (min, max) range (constant arrays give zeros)."""
  values = values.astype(np.float64)
  low, high = float(values.min()), float(values.max())
  if high <= low:
    return np.zeros(values.shape, np.uint8)
  return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def composite_over_black(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
  """uint8 colour (H, W, C) premultiplied by uint8 alpha (H, W): colour * alpha / 255, rounded."""
  product = colour.astype(np.uint32) * alpha.astype(np.uint32)[..., None]
  return ((product + 127) // 255).astype(np.uint8)


def pil_to_rgb_uint8(image: Image.Image) -> np.ndarray:
  """A loaded PIL image (any mode, orientation already applied) as uint8 (H, W, 3)."""
  mode = image.mode
  if mode in _HIGH_DEPTH_MODES:
    gray = scale_to_uint8(np.asarray(image))
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))
  if mode == "P" or (mode in ("RGB", "L") and "transparency" in image.info):
    # A palette may hold an alpha entry (tRNS chunk); expanding to RGBA keeps it.
    image = image.convert("RGBA")
    mode = "RGBA"
  if mode in _ALPHA_MODES:
    rgba = np.asarray(image.convert("RGBA"))
    return np.ascontiguousarray(composite_over_black(rgba[..., :3], rgba[..., 3]))
  if mode in ("L", "1"):
    gray = np.asarray(image.convert("L"))
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))
  if mode != "RGB":
    image = image.convert("RGB")
  return np.ascontiguousarray(np.asarray(image))


def decode_image_file(path: str) -> np.ndarray:
  """The image at `path` as an upright uint8 (H, W, 3) array; `UnreadableImageError` if the file
  is missing, truncated, corrupted or not an image."""
  try:
    with Image.open(path) as image:
      image.load()   # decodes now: a truncated file fails here, not later in a crop
      image = ImageOps.exif_transpose(image)
      return pil_to_rgb_uint8(image)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
    # PIL reports bad data as OSError (truncated, unidentified), SyntaxError (broken PNG chunks)
    # or ValueError (bad headers), depending on the plugin.
    raise UnreadableImageError(f"cannot decode image file {path}: {error}") from error
