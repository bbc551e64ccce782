"""preprocessing.image_io: raw bytes to the stored JPEG, on tiny images made with Pillow."""

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import ExifTags, Image

from preprocessing import image_io

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, image_format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def halves(size: tuple[int, int], left, right, mode: str = "RGB") -> Image.Image:
    """An image whose left half is `left` and right half is `right`."""
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def stored(data: bytes, image_size: int = 32, resize_mode: str = "shorter_side", **limits):
    result = image_io.to_stored_jpeg(
        data, image_size, resize_mode, jpeg_quality=95, max_pixels=limits.get("max_pixels", 10**8)
    )
    return result, Image.open(io.BytesIO(result.jpeg))


def close_to(pixel, colour, tolerance: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, colour, strict=True))


@pytest.mark.parametrize(
    "size, resize_mode, scaled, stored_size",
    [
        ((48, 32), "shorter_side", (48, 32), (48, 32)),
        ((20, 40), "shorter_side", (32, 64), (32, 64)),  # upscaling is allowed
        ((48, 32), "crop", (48, 32), (32, 32)),
        ((48, 32), "pad", (32, 21), (32, 32)),  # 32 * 32 / 48 = 21.33
        ((48, 32), "stretch", (32, 32), (32, 32)),
        ((3, 2), "shorter_side", (4, 3), (4, 3)),  # 4.5 rounds half to even, like tf.round
        ((5, 2), "shorter_side", (8, 3), (8, 3)),  # 7.5 rounds half to even: 8
        ((1000, 1), "pad", (32, 1), (32, 32)),  # never below one pixel
    ],
)
def test_plan_resize(size, resize_mode, scaled, stored_size):
    image_size = 3 if size in ((3, 2), (5, 2)) else 32
    plan = image_io.plan_resize(size, image_size, resize_mode)
    assert plan == image_io.ResizePlan(scaled_size=scaled, stored_size=stored_size)


@pytest.mark.parametrize(
    "resize_mode, expected_size",
    [("shorter_side", (36, 24)), ("crop", (24, 24)), ("pad", (24, 24)), ("stretch", (24, 24))],
)
def test_stored_size_per_resize_mode(resize_mode, expected_size):
    result, decoded = stored(encode(halves((48, 32), RED, BLUE), "PNG"), 24, resize_mode)
    assert (result.width, result.height) == decoded.size == expected_size
    assert decoded.mode == "RGB"


def test_crop_keeps_the_center_and_pad_adds_black_bars():
    # 64 x 32, red up to x = 23, then blue. Crop to 32 keeps x 16..47: red at its x 0..7.
    image = Image.new("RGB", (64, 32), BLUE)
    image.paste(RED, (0, 0, 24, 32))
    _, cropped = stored(encode(image, "PNG"), 32, "crop")
    assert close_to(cropped.getpixel((2, 16)), RED)
    assert close_to(cropped.getpixel((12, 16)), BLUE)
    # Pad: 64 x 32 -> 32 x 16 centered at y = 8..23 on black.
    _, padded = stored(encode(image, "PNG"), 32, "pad")
    assert close_to(padded.getpixel((16, 2)), (0, 0, 0))
    assert close_to(padded.getpixel((16, 16)), BLUE)
    assert close_to(padded.getpixel((16, 29)), (0, 0, 0))


def test_exif_rotated_jpeg_is_stored_upright():
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # the camera's "rotate 90 degrees clockwise to view"
    data = encode(halves((32, 16), RED, BLUE), "JPEG", quality=95, exif=exif.tobytes())
    result, decoded = stored(data, 16)
    assert decoded.size == (16, 32)  # portrait once upright
    assert close_to(decoded.getpixel((8, 4)), RED)  # the left half is now on top
    assert close_to(decoded.getpixel((8, 27)), BLUE)
    assert ExifTags.Base.Orientation not in decoded.getexif()


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_become_white(mode):
    # Clear black | opaque black: the clear half must come out white, not black.
    image = halves((32, 32), (0, 0, 0, 0), (0, 0, 0, 255), "RGBA").convert(mode)
    _, decoded = stored(encode(image, "PNG"), 32)
    assert close_to(decoded.getpixel((4, 16)), WHITE)
    assert close_to(decoded.getpixel((28, 16)), (0, 0, 0))


def test_palette_colour_key_transparency_becomes_white():
    image = Image.new("P", (32, 32), 1)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    image.paste(0, (0, 0, 16, 32))
    _, decoded = stored(encode(image, "PNG", transparency=0), 32)  # index 0 is transparent
    assert close_to(decoded.getpixel((4, 16)), WHITE)
    assert close_to(decoded.getpixel((28, 16)), (0, 200, 0))


def test_sixteen_bit_png_matches_tensorflow_decoding():
    values = np.array([[0, 255, 256, 32768, 40000, 65535]] * 6, dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    ours = np.asarray(image_io.to_rgb(image_io.load_upright(image_io.open_image(data, 10**6))))
    tensorflow = tf.io.decode_png(data, channels=3, dtype=tf.uint8).numpy()
    np.testing.assert_array_equal(ours, tensorflow)  # 40000 -> 156, not clipped to 255


@pytest.mark.parametrize("mode, colour", [("CMYK", (0, 255, 255, 0)), ("L", 128), ("1", 1)])
def test_other_colour_modes_become_rgb(mode, colour):
    image_format = "JPEG" if mode == "CMYK" else "PNG"
    _, decoded = stored(encode(Image.new(mode, (32, 32), colour), image_format), 32)
    assert decoded.mode == "RGB"
    expected = {"CMYK": RED, "L": (128, 128, 128), "1": WHITE}[mode]
    assert close_to(decoded.getpixel((16, 16)), expected, 20)


def test_large_jpeg_is_decoded_at_reduced_scale_close_to_a_full_decode():
    # Noise is the worst case for DCT-domain scaling, which has no antialiasing filter.
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=95)
    image = image_io.open_image(data, 10**8)
    image_io.request_reduced_decode(image, (32, 32), orientation=1)
    assert image.size == (64, 64)  # 1/4: the smallest scale that keeps twice 32
    reduced = np.asarray(image_io.decode_for_storage(data, 32, "shorter_side", 10**8), np.int16)
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((32, 32), Image.BILINEAR))
    assert reduced.shape == (32, 32, 3)
    # Decoding straight to 32 x 32 (1/8) would differ by up to 24 and 4.1 on average.
    assert np.abs(reduced - full).max() <= 8
    assert np.abs(reduced - full).mean() < 2


def test_small_jpeg_is_not_reduced():
    image = image_io.open_image(encode(Image.new("RGB", (100, 60)), "JPEG"), 10**8)
    image_io.request_reduced_decode(image, (30, 18), orientation=1)  # 100 < 4 x 30: scale 1
    assert image.size == (100, 60)


def test_encoding_is_deterministic():
    data = encode(halves((40, 30), RED, BLUE), "PNG")
    assert stored(data, 24)[0] == stored(data, 24)[0]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring `width` x `height` RGB pixels that holds the data of one row at most."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes(1 + 3 * min(width, 1000)))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


NOISE = Image.effect_noise((64, 64), 60).convert("RGB")


@pytest.mark.parametrize(
    "data, reason, words",
    [
        (b"", image_io.EMPTY_FILE, "zero bytes"),
        (b"name,label\ncat.jpg,cat\n", image_io.NOT_AN_IMAGE, "no image format"),
        (truncated(encode(NOISE, "JPEG")), image_io.TRUNCATED, "ends early"),
        (truncated(encode(NOISE, "PNG")), image_io.TRUNCATED, "ends early"),
        # Declares 50,000 x 50,000 and holds no pixels: rejected from the header alone.
        (png_header_only(50_000, 50_000), image_io.TOO_MANY_PIXELS, "2500000000 pixels"),
        (encode(Image.new("RGB", (200, 100)), "PNG"), image_io.TOO_MANY_PIXELS, "20,000"),
        (encode(Image.new("RGB", (2, 400)), "PNG"), image_io.RESIZED_TOO_LARGE, "32x6400"),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png", "header-bomb", "over-limit", "thin"],
)
def test_unusable_inputs_are_rejected_with_a_precise_reason(data, reason, words):
    with pytest.raises(image_io.ImageError) as raised:
        image_io.to_stored_jpeg(data, 32, "shorter_side", jpeg_quality=90, max_pixels=10_000)
    assert raised.value.reason == reason
    assert words in raised.value.detail


def test_corrupt_pixel_data_is_rejected_as_corrupt():
    data = bytearray(encode(NOISE, "PNG"))
    data[60:90] = bytes(30)  # inside the compressed pixel data
    with pytest.raises(image_io.ImageError) as raised:
        image_io.to_stored_jpeg(bytes(data), 32, "crop", jpeg_quality=90, max_pixels=10**6)
    assert raised.value.reason == image_io.CORRUPT
    assert "broken data stream" in raised.value.detail


# Every format and colour mode the issue names, each file made with Pillow (or by hand where
# Pillow cannot write it). Left half one colour, right half another, so that both the colour
# conversion and the geometry are checked on pixels.

GREEN, GREY = (0, 200, 0), (128, 128, 128)


def png_16_bit(samples: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG of `samples` (height, width, channels), which Pillow cannot write."""
    height, width = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def sixteen_bit_halves(left: tuple[int, ...], right: tuple[int, ...]) -> np.ndarray:
    samples = np.empty((32, 32, len(left)), np.uint16)
    samples[:, :16], samples[:, 16:] = left, right
    return samples


def palette_with_transparency() -> Image.Image:
    image = Image.new("P", (32, 32), 1)
    image.putpalette([0, 0, 0, *GREEN] + [0] * 762)
    image.paste(0, (0, 0, 16, 32))
    return image


def clear_left_half(mode: str) -> Image.Image:
    return halves((32, 32), (0, 0, 0, 0), (0, 0, 200, 255), "RGBA").convert(mode)


BLUE_200 = (0, 0, 200)
# (file bytes, expected colour of the left half, of the right half)
FORMATS_AND_MODES = {
    "jpeg-rgb": (lambda: encode(halves((32, 32), RED, BLUE), "JPEG", quality=95), RED, BLUE),
    "jpeg-l": (lambda: encode(halves((32, 32), 0, 128, "L"), "JPEG"), (0, 0, 0), GREY),
    "jpeg-cmyk": (
        lambda: encode(halves((32, 32), (0, 255, 255, 0), (0, 0, 0, 0), "CMYK"), "JPEG"),
        RED,
        WHITE,
    ),
    "png-rgb": (lambda: encode(halves((32, 32), RED, BLUE), "PNG"), RED, BLUE),
    "png-l": (lambda: encode(halves((32, 32), 0, 128, "L"), "PNG"), (0, 0, 0), GREY),
    "png-la": (lambda: encode(clear_left_half("LA"), "PNG"), WHITE, (23, 23, 23)),
    "png-p-transparency": (
        lambda: encode(palette_with_transparency(), "PNG", transparency=0),
        WHITE,
        GREEN,
    ),
    "png-rgba": (lambda: encode(clear_left_half("RGBA"), "PNG"), WHITE, BLUE_200),
    # 16 bit: the high byte, as tf.io.decode_png(dtype=uint8): 40000 -> 156, 1000 -> 3.
    "png-16-bit-grey": (
        lambda: png_16_bit(sixteen_bit_halves((40000,), (65535,)), 0),
        (156, 156, 156),
        WHITE,
    ),
    "png-16-bit-rgb": (
        lambda: png_16_bit(sixteen_bit_halves((40000, 1000, 65535), (0, 65535, 0)), 2),
        (156, 3, 255),
        (0, 255, 0),
    ),
    "png-16-bit-rgba": (
        lambda: png_16_bit(sixteen_bit_halves((0, 0, 0, 0), (0, 0, 65535, 65535)), 6),
        WHITE,
        (0, 0, 255),
    ),
    "png-16-bit-la": (
        lambda: png_16_bit(sixteen_bit_halves((0, 0), (40000, 65535)), 4),
        WHITE,
        (156, 156, 156),
    ),
    "gif-p": (lambda: encode(halves((32, 32), RED, BLUE).convert("P"), "GIF"), RED, BLUE),
    "gif-p-transparency": (
        lambda: encode(palette_with_transparency(), "GIF", transparency=0),
        WHITE,
        GREEN,
    ),
    "bmp-rgb": (lambda: encode(halves((32, 32), RED, BLUE), "BMP"), RED, BLUE),
    "bmp-l": (lambda: encode(halves((32, 32), 0, 128, "L"), "BMP"), (0, 0, 0), GREY),
    "bmp-p": (lambda: encode(halves((32, 32), RED, BLUE).convert("P"), "BMP"), RED, BLUE),
    "webp-rgb": (lambda: encode(halves((32, 32), RED, BLUE), "WEBP", quality=95), RED, BLUE),
    "webp-rgba": (lambda: encode(clear_left_half("RGBA"), "WEBP", lossless=True), WHITE, BLUE_200),
    "tiff-rgb": (lambda: encode(halves((32, 32), RED, BLUE), "TIFF"), RED, BLUE),
    "tiff-l": (lambda: encode(halves((32, 32), 0, 128, "L"), "TIFF"), (0, 0, 0), GREY),
    "tiff-rgba": (lambda: encode(clear_left_half("RGBA"), "TIFF"), WHITE, BLUE_200),
    "tiff-cmyk": (
        lambda: encode(halves((32, 32), (0, 255, 255, 0), (0, 0, 0, 0), "CMYK"), "TIFF"),
        RED,
        WHITE,
    ),
    "tiff-16-bit-grey": (
        lambda: encode(Image.fromarray(sixteen_bit_halves((40000,), (65535,))[..., 0]), "TIFF"),
        (156, 156, 156),
        WHITE,
    ),
}


@pytest.mark.parametrize("case", FORMATS_AND_MODES)
def test_every_format_and_colour_mode_is_stored_as_rgb(case):
    make_file, left, right = FORMATS_AND_MODES[case]
    data = make_file()
    source = Image.open(io.BytesIO(data))
    assert source.format == case.split("-")[0].upper()  # the file is what the case says
    result, decoded = stored(data, 16)
    assert (result.width, result.height) == decoded.size == (16, 16)
    assert decoded.mode == "RGB"
    assert close_to(decoded.getpixel((3, 8)), left, 14), decoded.getpixel((3, 8))
    assert close_to(decoded.getpixel((12, 8)), right, 14), decoded.getpixel((12, 8))


def test_the_cases_cover_every_mode_the_issue_names():
    modes = {Image.open(io.BytesIO(make())).mode for make, _, _ in FORMATS_AND_MODES.values()}
    # Pillow opens 16-bit RGB(A) PNGs as RGB(A) (high bytes) and 16-bit grey as I;16.
    assert {"L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16"} <= modes
    formats = {Image.open(io.BytesIO(make())).format for make, _, _ in FORMATS_AND_MODES.values()}
    assert formats == {"JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"}


def test_sixteen_bit_rgb_png_matches_tensorflow_decoding():
    data = png_16_bit(sixteen_bit_halves((40000, 1000, 65535), (256, 32768, 255)), 2)
    ours = np.asarray(image_io.to_rgb(image_io.load_upright(image_io.open_image(data, 10**6))))
    tensorflow = tf.io.decode_png(data, channels=3, dtype=tf.uint8).numpy()
    np.testing.assert_array_equal(ours, tensorflow)


@pytest.mark.parametrize("image_format", ["GIF", "WEBP", "TIFF"])
def test_animations_and_multi_page_files_keep_their_first_frame(image_format):
    first, second = Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)
    params = {"lossless": True} if image_format == "WEBP" else {}
    data = encode(first, image_format, save_all=True, append_images=[second], **params)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    _, decoded = stored(data, 16)
    assert close_to(decoded.getpixel((8, 8)), RED)


# Four quadrants of an upright 256 x 128 picture; the colour of each at (x, y) of a 32 x 16 copy.
QUADRANTS = {(8, 4): RED, (24, 4): GREEN, (8, 12): BLUE, (24, 12): (255, 255, 0)}


def upright_quadrants() -> np.ndarray:
    pixels = np.empty((128, 256, 3), np.uint8)
    pixels[:64, :128], pixels[:64, 128:] = RED, GREEN
    pixels[64:, :128], pixels[64:, 128:] = BLUE, (255, 255, 0)
    return pixels


# What a camera writes so that a viewer applying EXIF orientation k shows the upright picture.
CAMERA_WRITES = {
    1: lambda upright: upright,
    2: lambda upright: upright[:, ::-1],  # mirrored
    3: lambda upright: upright[::-1, ::-1],  # upside down
    4: lambda upright: upright[::-1],  # mirrored vertically
    5: lambda upright: upright.transpose(1, 0, 2),
    6: lambda upright: np.rot90(upright, 1),  # the viewer turns it 90 degrees clockwise
    7: lambda upright: np.rot90(upright, 2).transpose(1, 0, 2),
    8: lambda upright: np.rot90(upright, -1),
}


@pytest.mark.parametrize("orientation", CAMERA_WRITES)
def test_every_exif_orientation_is_stored_upright_also_when_decoded_at_reduced_scale(
    orientation,
):
    written = np.ascontiguousarray(CAMERA_WRITES[orientation](upright_quadrants()))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    data = encode(Image.fromarray(written), "JPEG", quality=95, exif=exif.tobytes())
    _, decoded = stored(data, 16)  # 256 x 128 bound for 32 x 16: decoded at 1/4 scale
    assert decoded.size == (32, 16)  # landscape, as the upright picture
    for (x, y), colour in QUADRANTS.items():
        assert close_to(decoded.getpixel((x, y)), colour, 20), (x, y, decoded.getpixel((x, y)))


def test_a_rotated_large_jpeg_is_drafted_in_its_own_axes():
    # 128 x 256 on file, orientation 6: upright 256 x 128, bound for 32 x 16. In the file's
    # axes that is 16 x 32, so draft asks for 32 x 64: 1/4 scale.
    written = np.ascontiguousarray(CAMERA_WRITES[6](upright_quadrants()))
    image = image_io.open_image(encode(Image.fromarray(written), "JPEG"), 10**8)
    image_io.request_reduced_decode(image, scaled_size=(32, 16), orientation=6)
    assert image.size == (32, 64)
