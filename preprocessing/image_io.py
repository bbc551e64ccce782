"""Raw image bytes to the stored JPEG: pure Pillow functions, no Beam, no TensorFlow.

`to_stored_jpeg` is the whole path, in this order:

1. `open_image`: read the header only; reject empty or oversized files, non-images and
   images whose header declares more than `max_pixels` pixels, before any pixel is decoded.
2. `plan_resize`: the scaled and stored sizes, from the upright (EXIF-oriented) size;
   `check_plan` rejects a resized image beyond `max_pixels` or a JPEG's largest side.
3. `request_reduced_decode`: for a JPEG at least four times the scaled size, let libjpeg
   decode at 1/2, 1/4 or 1/8 scale in the DCT domain, never below twice the scaled size.
4. `load_upright`: decode, then apply the EXIF orientation (`ImageOps.exif_transpose`).
5. `to_rgb`: 16-bit to 8-bit (high byte, as TensorFlow's PNG decoder does); transparency
   composited on white; every other mode (L, P, CMYK, ...) converted to RGB.
6. `apply_resize`: `Image.resize(..., BILINEAR)`, which antialiases when shrinking, like
   `tf.image.resize(method="bilinear", antialias=True)`; then the center crop or the padding.
7. `encode_jpeg`: fixed quality and 4:2:0 chroma subsampling, no EXIF: same input, same bytes.

Resize policy for stored size S (`objrec/savedmodel/decode.py` implements the same in TensorFlow):

- `shorter_side`: shorter side S, aspect ratio kept;
- `crop`: `shorter_side`, then the central S x S window, offset `(scaled - S) // 2`;
- `pad`: longer side S, then centered on a black S x S canvas, offset `(S - scaled) // 2`;
- `stretch`: S x S.

Scaled lengths are `max(1, round(length * (S / side)))` in float64 with Python's `round`
(half to even), the arithmetic of `tf.round` in the serving graph, so both get the same sizes.
"""

import dataclasses
import io
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# Rejection reasons (the `reason` of a rejected-*.jsonl entry) that come from image content.
EMPTY_FILE = "empty_file"
FILE_TOO_LARGE = "file_too_large"
NOT_AN_IMAGE = "not_an_image"
TOO_MANY_PIXELS = "too_many_pixels"
RESIZED_TOO_LARGE = "resized_too_large"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
UNSUPPORTED_MODE = "unsupported_mode"

# DCT-domain scaling shrinks without a proper low-pass filter; stopping at twice the scaled
# size leaves the last halving to the antialiased bilinear resize, as in the serving graph.
# Measured on a 300 x 200 noise JPEG cropped to 64: largest difference from
# tf.image.resize(antialias=True) 21 when drafting to 1x, 1 at 2x; a 4000 x 3000 photo to
# shorter side 256 decodes in 8.6 ms at 2x, 6.6 ms at 1x, 66 ms in full.
DRAFT_OVERSAMPLING = 2
# Uncompressed 16-bit RGBA, the most bytes per pixel any decodable file needs: a larger file
# cannot be an image within --max_pixels (a video, an archive) and is never read whole.
MAX_BYTES_PER_PIXEL = 8
# libjpeg cannot write a side longer than 65,500 pixels (JPEG_MAX_DIMENSION).
JPEG_MAX_SIDE = 65_500
# Explicit, so the stored bytes do not depend on a Pillow or libjpeg default.
JPEG_SUBSAMPLING = "4:2:0"
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)

# EXIF orientations 5-8 rotate by 90 or 270 degrees: the upright image has width and height swapped.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
# Pillow's 16-bit grey modes, and "I" (32-bit integer), which holds 16-bit samples in practice.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})

Size = tuple[int, int]  # (width, height), Pillow's order.


class ImageError(ValueError):
    """An input that cannot become a stored image; `reason` is one of this module's codes."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class ResizePlan:
    """Resize to `scaled_size`, then center-crop or center-pad that to `stored_size`."""

    scaled_size: Size
    stored_size: Size


@dataclasses.dataclass(frozen=True)
class StoredImage:
    """The JPEG that goes into a record, and its size."""

    jpeg: bytes
    width: int
    height: int


def configure_pillow(max_pixels: int) -> None:
    """Aligns Pillow's decompression-bomb guard with `max_pixels`; call once per process.

    `open_image` checks `max_pixels` itself. Pillow's own guard (an error above twice
    `Image.MAX_IMAGE_PIXELS`) then only backs it up instead of rejecting allowed images, and
    its warning above `MAX_IMAGE_PIXELS` would only repeat the explicit check. Both are
    process-wide settings: they are set here once, not per image from several threads.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def check_file_size(size: int, max_pixels: int) -> None:
    """Rejects empty files and files too large to be an image of at most `max_pixels`."""
    if size == 0:
        raise ImageError(EMPTY_FILE, "the file has zero bytes")
    if size > MAX_BYTES_PER_PIXEL * max_pixels:
        raise ImageError(
            FILE_TOO_LARGE,
            f"{size:,} bytes; an image within --max_pixels {max_pixels:,} needs at most "
            f"{MAX_BYTES_PER_PIXEL * max_pixels:,}",
        )


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Opens `data` lazily (header only) and checks its declared size against `max_pixels`."""
    check_file_size(len(data), max_pixels)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        # Pillow's guard fires first above twice Image.MAX_IMAGE_PIXELS; its message has the size.
        raise ImageError(TOO_MANY_PIXELS, f"{error} (--max_pixels {max_pixels:,})") from None
    except UnidentifiedImageError:
        raise ImageError(
            NOT_AN_IMAGE,
            f"no image format recognised in the first bytes {data[:8]!r} "
            "(not an image, or cut off inside its header)",
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            TOO_MANY_PIXELS,
            f"{image.format} header declares {width}x{height} = {width * height:,} pixels, "
            f"more than --max_pixels {max_pixels:,}",
        )
    return image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1-8), 1 when absent or out of range."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return orientation if orientation in range(1, 9) else 1


def upright_size(size: Size, orientation: int) -> Size:
    """The size after `ImageOps.exif_transpose` for this orientation."""
    width, height = size
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


def _scale(length: int, scale: float) -> int:
    return max(1, round(length * scale))


def _scale_side_to(size: Size, side: int, image_size: int) -> Size:
    scale = image_size / side
    return (_scale(size[0], scale), _scale(size[1], scale))


def plan_resize(size: Size, image_size: int, resize_mode: str) -> ResizePlan:
    """The resize policy (see the module docstring) for an upright image of `size`."""
    square = (image_size, image_size)
    if resize_mode == "shorter_side":
        scaled = _scale_side_to(size, min(size), image_size)
        return ResizePlan(scaled_size=scaled, stored_size=scaled)
    if resize_mode == "crop":
        return ResizePlan(_scale_side_to(size, min(size), image_size), square)
    if resize_mode == "pad":
        return ResizePlan(_scale_side_to(size, max(size), image_size), square)
    if resize_mode == "stretch":
        return ResizePlan(square, square)
    raise ValueError(f"unknown resize_mode {resize_mode!r}")


def check_plan(plan: ResizePlan, max_pixels: int) -> None:
    """Rejects plans whose resized image exceeds `max_pixels` or a JPEG's largest side.

    With sane limits only a long, thin image gets here: `shorter_side` turns 10 x 10,000
    into 256 x 256,000, which no JPEG can hold and `crop` would first allocate in full.
    """
    scaled_width, scaled_height = plan.scaled_size
    stored_width, stored_height = plan.stored_size
    too_many_pixels = scaled_width * scaled_height > max_pixels
    if too_many_pixels or max(stored_width, stored_height) > JPEG_MAX_SIDE:
        raise ImageError(
            RESIZED_TOO_LARGE,
            f"resizing gives {scaled_width}x{scaled_height} pixels (limits: --max_pixels "
            f"{max_pixels:,}, JPEG side {JPEG_MAX_SIDE:,}); is it a very long, thin image?",
        )


def request_reduced_decode(image: Image.Image, scaled_size: Size, orientation: int) -> None:
    """Lets libjpeg decode a large JPEG at a reduced scale, never below twice `scaled_size`.

    `draft` picks the largest of 1/8, 1/4, 1/2 that keeps both sides at least the requested
    size, so a 4000 x 3000 photo bound for 341 x 256 asks for 682 x 512 and decodes at 1/4
    (1000 x 750): 16 times fewer pixels to decode. Not a JPEG: no-op.
    """
    if image.format != "JPEG":
        return
    width, height = upright_size(scaled_size, orientation)
    # draft works before orientation is applied: request the size in the file's own axes.
    image.draft("RGB", (width * DRAFT_OVERSAMPLING, height * DRAFT_OVERSAMPLING))


def load_upright(image: Image.Image) -> Image.Image:
    """Decodes the pixels and applies the EXIF orientation."""
    image.load()
    return ImageOps.exif_transpose(image)


def _decode_failure(error: Exception) -> ImageError:
    # Pillow reports a file that ends early as OSError("image file is truncated ...").
    if isinstance(error, OSError) and "truncated" in str(error).lower():
        return ImageError(TRUNCATED, f"the image data ends early: {error}")
    return ImageError(CORRUPT, f"{type(error).__name__}: {error}")


def _high_byte(image: Image.Image) -> Image.Image:
    # TensorFlow's decode_png(dtype=uint8) keeps the high byte of 16-bit samples (40000 -> 156);
    # Pillow's convert("L") would clip everything above 255 to white instead.
    pixels = np.asarray(image).astype(np.int64) >> 8
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparent pixels (RGBA, LA, P or colour-key transparency) over white."""
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _high_byte(image)
    if image.has_transparency_data:
        return _composite_on_white(image)
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageError(UNSUPPORTED_MODE, f"colour mode {image.mode}: {error}") from None


def apply_resize(image: Image.Image, plan: ResizePlan) -> Image.Image:
    """Resizes to `plan.scaled_size`, then center-crops or center-pads to `plan.stored_size`."""
    scaled = image.resize(plan.scaled_size, resample=Image.Resampling.BILINEAR)
    (width, height), (stored_width, stored_height) = scaled.size, plan.stored_size
    if (width, height) == (stored_width, stored_height):
        return scaled
    if width >= stored_width and height >= stored_height:
        left, top = (width - stored_width) // 2, (height - stored_height) // 2
        return scaled.crop((left, top, left + stored_width, top + stored_height))
    canvas = Image.new("RGB", plan.stored_size, BLACK)
    canvas.paste(scaled, ((stored_width - width) // 2, (stored_height - height) // 2))
    return canvas


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """Baseline JPEG with fixed settings: the same pixels always give the same bytes."""
    buffer = io.BytesIO()
    image.save(
        buffer,
        format="JPEG",
        quality=quality,
        subsampling=JPEG_SUBSAMPLING,
        optimize=False,
        progressive=False,
    )
    return buffer.getvalue()


def decode_for_storage(
    data: bytes, image_size: int, resize_mode: str, max_pixels: int
) -> Image.Image:
    """Raw bytes to the upright, RGB, resized image that gets stored (before JPEG encoding).

    Raises:
        ImageError: with a reason code and a precise detail, for any input that cannot be used.
    """
    try:
        image = open_image(data, max_pixels)
        orientation = exif_orientation(image)
        plan = plan_resize(upright_size(image.size, orientation), image_size, resize_mode)
        check_plan(plan, max_pixels)
        request_reduced_decode(image, plan.scaled_size, orientation)
        return apply_resize(to_rgb(load_upright(image)), plan)
    except ImageError:
        raise
    except Exception as error:  # noqa: BLE001
        # Pillow's decoders raise many types on malformed data (OSError, SyntaxError,
        # struct.error, ValueError, ...); one bad file must never fail a million-image job.
        raise _decode_failure(error) from None


def to_stored_jpeg(
    data: bytes, image_size: int, resize_mode: str, jpeg_quality: int, max_pixels: int
) -> StoredImage:
    """Raw image file bytes to the JPEG stored in `image/encoded` (see the module docstring).

    Raises:
        ImageError: with a reason code and a precise detail, for any input that cannot be used.
    """
    image = decode_for_storage(data, image_size, resize_mode, max_pixels)
    return StoredImage(encode_jpeg(image, jpeg_quality), width=image.width, height=image.height)
