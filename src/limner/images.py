"""Reading input images safely, and the pixel-space edits around the pipelines."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from limner.errors import InputFileError, InvalidRequestError

MAX_INPUT_PIXELS = 8192 * 8192  # a decompression bomb is refused before it is decoded


def load_image(path: str | os.PathLike, *, what: str = "image") -> Image.Image:
    """Open an input image fully, or raise `InputFileError` saying why not."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFileError(f"{what} file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_INPUT_PIXELS:
                    raise InputFileError(
                        f"{what} {path} is {img.width}x{img.height}, larger than limner accepts "
                        f"({MAX_INPUT_PIXELS} pixels)"
                    )
                img.load()
                return img.copy()
    except InputFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputFileError(f"{what} {path} is too large to decode safely: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputFileError(f"{what} {path} is not a readable image: {err}") from None


def fit_size(
    width: int | None, height: int | None, image: Image.Image, multiple: int = 8
) -> tuple[int, int]:
    """The size to generate at: the requested one, or the image's rounded down to `multiple`."""
    w = width or image.width - image.width % multiple
    h = height or image.height - image.height % multiple
    if w < 64 or h < 64:
        raise InvalidRequestError(
            f"the input image is {image.width}x{image.height}; it must be at least 64x64"
        )
    return w, h


def prepare_input(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """RGB at the generation size (resized with Lanczos when it differs: A1111's "Just resize")."""
    image = flatten_alpha(image)
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def flatten_alpha(image: Image.Image) -> Image.Image:
    """RGB; transparent pixels become white instead of whatever colour they hid."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def check_mask(mask: Image.Image, image: Image.Image) -> None:
    if mask.size != image.size:
        raise InvalidRequestError(
            f"the mask is {mask.width}x{mask.height} but the image is {image.width}x{image.height}; "
            "they must be the same size"
        )
    # Read as the pipeline reads masks (luminance >= 50% is repainted), so RGB and RGBA
    # masks are checked too, and a dim grey mask that would repaint nothing is refused.
    if mask.convert("L").getextrema()[1] < 128:
        raise InvalidRequestError(
            "the mask has no white area (pixels at least 50% grey): paint the area to repaint in white"
        )


def overlay_unmasked(
    generated: Image.Image, original: Image.Image, mask: Image.Image, blur: int
) -> Image.Image:
    """Keep the original pixels outside the mask, blending across a blurred edge (A1111's
    inpainting overlay with "Mask blur"), so that untouched areas stay bit-identical."""
    alpha = mask.convert("L")
    if blur > 0:
        alpha = alpha.filter(ImageFilter.GaussianBlur(blur))
    # Pixels the blur leaves at 0 keep the original exactly.
    return Image.composite(generated, original, alpha)


def extend_canvas(
    image: Image.Image, left: int, right: int, up: int, down: int, overlap: int = 8
) -> tuple[Image.Image, Image.Image]:
    """Outpainting: a larger canvas with the image placed inside, and the mask to repaint.

    The new area starts as the image's edge pixels stretched outwards, so that a strength
    below 1 has colours to build on; the mask covers the new area and reaches `overlap`
    pixels into the image, so the seam itself is repainted.
    """
    array = np.asarray(image.convert("RGB"))
    canvas = np.pad(array, ((up, down), (left, right), (0, 0)), mode="edge")
    h, w = canvas.shape[:2]
    mask = np.full((h, w), 255, dtype=np.uint8)
    top = up + (overlap if up else 0)
    bottom = up + image.height - (overlap if down else 0)
    start = left + (overlap if left else 0)
    end = left + image.width - (overlap if right else 0)
    mask[top:bottom, start:end] = 0
    return Image.fromarray(canvas), Image.fromarray(mask)
