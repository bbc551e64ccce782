"""objrec.savedmodel.decode: each op eagerly and inside tf.data, and against preprocessing's
Pillow."""

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from objrec.savedmodel import decode
from preprocessing import image_io


def run_both_ways(function, *inputs):
    """The op's result eagerly and inside a tf.data map; they must agree."""
    eager = function(*[tf.constant(x) for x in inputs])
    dataset = tf.data.Dataset.from_tensors(tuple(inputs)).map(function)
    in_dataset = next(iter(dataset))
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(in_dataset))
    return np.asarray(eager)


def asymmetric_photo(width: int = 48, height: int = 32) -> Image.Image:
    """Corners of different colours, so any flip or rotation shows."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2, : width // 2] = (250, 20, 20)
    pixels[: height // 2, width // 2 :] = (20, 250, 20)
    pixels[height // 2 :, : width // 2] = (20, 20, 250)
    pixels[height // 2 :, width // 2 :] = (240, 240, 30)
    return Image.fromarray(pixels)


def jpeg_with_exif(image: Image.Image, exif: bytes) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def pillow_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "objrec test camera"  # another tag before it in IFD0
    return exif.tobytes()


def big_endian_exif(orientation: int) -> bytes:
    """A minimal Motorola-order ("MM") EXIF block with only the Orientation tag."""
    tiff = b"MM" + struct.pack(">HI", 42, 8)
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    return b"Exif\x00\x00" + tiff + ifd + struct.pack(">I", 0)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation):
    data = jpeg_with_exif(asymmetric_photo(), pillow_exif(orientation))
    assert run_both_ways(decode.exif_orientation, data) == orientation
    upright = run_both_ways(
        lambda b: decode.apply_orientation(decode.decode_stored(b), decode.exif_orientation(b)),
        data,
    )
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert upright.shape == expected.shape
    assert np.abs(upright.astype(int) - expected).mean() < 1.0


def test_big_endian_exif_is_read():
    data = jpeg_with_exif(asymmetric_photo(), big_endian_exif(6))
    assert run_both_ways(decode.exif_orientation, data) == 6


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xd8\xff", b"\xff\xd8\xffExif\x00\x00MM\x00\x2a\xff\xff\xff\xff", b"x" * 100],
)
def test_missing_or_broken_exif_means_upright(data):
    assert run_both_ways(decode.exif_orientation, data) == 1


@pytest.mark.parametrize("resize_mode", ["shorter_side", "crop", "pad", "stretch"])
def test_resize_policy_sizes_equal_preprocessing(resize_mode):
    for width, height in ((48, 32), (31, 77), (200, 200)):
        image = np.zeros((height, width, 3), np.uint8)
        resized = run_both_ways(
            lambda x, mode=resize_mode: decode.apply_resize_policy(x, 24, mode), image
        )
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        stored = image_io.to_stored_jpeg(buffer.getvalue(), 24, resize_mode, 90, 10**8)
        assert resized.shape[:2] == (stored.height, stored.width)


def natural_photo(width: int, height: int) -> Image.Image:
    """Smooth gradients, edges and noise: JPEG behaves on it as on a photo."""
    rng = np.random.default_rng(width * height)
    yy, xx = np.mgrid[:height, :width]
    pixels = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) % 97 * 2.5], axis=-1)
    pixels[height // 3 : height // 2, width // 4 : width // 2] = (230, 30, 60)
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("kind", "tolerance"),
    [
        ("png", 1.0),
        ("rotated_jpeg", 1.5),
        ("transparent_png", 1.5),
        ("large_jpeg", 2.0),
        ("grey_png", 1.0),
        ("grey_transparent_png", 1.5),
    ],
)
def test_raw_bytes_become_what_preprocessing_stores_then_eval_crops(kind, tolerance):
    """The serving path on raw bytes vs Pillow preprocessing, storage and the eval crop."""
    photo = natural_photo(1600, 1200) if kind == "large_jpeg" else natural_photo(120, 90)
    if kind == "rotated_jpeg":
        data = jpeg_with_exif(photo.transpose(Image.Transpose.ROTATE_90), pillow_exif(6))
    elif kind == "large_jpeg":
        data = jpeg_with_exif(photo, pillow_exif(1))
    elif kind == "transparent_png":
        alpha = Image.linear_gradient("L").resize(photo.size)
        data = png_bytes(Image.merge("RGBA", (*photo.split(), alpha)))
    elif kind == "grey_png":
        data = png_bytes(photo.convert("L"))
    elif kind == "grey_transparent_png":
        alpha = Image.linear_gradient("L").resize(photo.size)
        data = png_bytes(Image.merge("LA", (photo.convert("L"), alpha)))
    else:
        data = png_bytes(photo)
    served = run_both_ways(
        lambda b: decode.decode_raw_image(b, 32, "shorter_side", 28, 10**8, 90), data
    )
    stored = image_io.to_stored_jpeg(data, 32, "shorter_side", 90, 10**8)
    evaluated = decode.eval_crop(decode.decode_stored(stored.jpeg), 32, 28).numpy()
    assert served.shape == evaluated.shape == (28, 28, 3)
    difference = np.abs(served - evaluated).mean()
    print(f"{kind}: mean absolute pixel difference {difference:.3f} (of 255)")
    assert difference < tolerance


def test_decode_raw_batch_marks_each_bad_image_invalid():
    good = jpeg_with_exif(asymmetric_photo(), pillow_exif(1))
    buffer = io.BytesIO()
    Image.new("RGBA", (20, 10), (0, 0, 0, 0)).save(buffer, "PNG")
    transparent = buffer.getvalue()
    batch = tf.constant([good, b"not an image", good[:100], transparent, b""])
    images, valid = decode.decode_raw_batch(batch, 16, "shorter_side", 16, 10**6)
    assert valid.numpy().tolist() == [True, False, False, True, False]
    assert images.shape == (5, 16, 16, 3)
    assert not images.numpy()[1].any()
    np.testing.assert_allclose(images.numpy()[3], 255.0)  # transparency composited on white


def test_each_image_of_a_batch_larger_than_the_parallel_decodes_keeps_its_place():
    """Decoded several at once, every answer is still its own file's, bad files anywhere."""
    count = 3 * decode.PARALLEL_DECODES
    bad = {0, 5, count - 1}
    files = [
        b"not an image" if i in bad else png_bytes(natural_photo(40 + 3 * i, 30 + 2 * i))
        for i in range(count)
    ]
    images, valid = decode.decode_raw_batch(tf.constant(files), 16, "shorter_side", 16, 10**6)
    assert valid.numpy().tolist() == [i not in bad for i in range(count)]
    for i, data in enumerate(files):
        expected = (
            np.zeros((16, 16, 3))
            if i in bad
            else decode.decode_raw_image(tf.constant(data), 16, "shorter_side", 16, 10**6)
        )
        np.testing.assert_array_equal(images.numpy()[i], expected)


def test_header_over_the_pixel_limit_is_invalid_before_decoding():
    buffer = io.BytesIO()
    asymmetric_photo(400, 300).save(buffer, "PNG")
    _, valid = decode.decode_raw_batch(
        tf.constant([buffer.getvalue()]), 16, "shorter_side", 16, max_pixels=400 * 300 - 1
    )
    assert not valid.numpy()[0]


def test_eval_crop_takes_the_central_input_fraction():
    image = np.arange(256 * 300 * 3, dtype=np.float32).reshape(256, 300, 3)
    cropped = run_both_ways(lambda x: decode.eval_crop(x, 256, 224), image)
    np.testing.assert_array_equal(cropped, image[16:240, 38:262])


def gif_bytes(frames: int, width: int, height: int, screen: tuple[int, int] | None = None):
    """An animated GIF of distinct noise frames; `screen` overwrites the logical screen size."""
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8), "L").convert("P")
        for _ in range(frames)
    ]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:])
    data = bytearray(buffer.getvalue())
    if screen:
        data[6:10] = struct.pack("<HH", *screen)
    return bytes(data)


@pytest.mark.parametrize(
    ("frames", "width", "height", "screen", "valid"),
    [
        (1, 20, 20, None, True),  # 400 pixels
        (1, 40, 40, (1, 1), False),  # a 1 x 1 screen hiding a 1,600-pixel frame
        (3, 20, 20, None, False),  # 3 frames of 400: 1,200 pixels decoded
    ],
)
def test_the_pixel_limit_counts_every_gif_frame(frames, width, height, screen, valid):
    data = gif_bytes(frames, width, height, screen)
    assert int(decode.gif_pixels(tf.constant(data))) == frames * width * height
    _, decoded = decode.decode_raw_batch(
        tf.constant([data]), 16, "shorter_side", 16, max_pixels=1000
    )
    assert bool(decoded.numpy()[0]) is valid


def test_a_gif_with_broken_blocks_is_invalid():
    data = gif_bytes(1, 10, 10)
    assert int(decode.gif_pixels(tf.constant(data[:30]))) == -1
    first_block = 13 + 3 * 2 ** ((data[10] & 7) + 1)  # after the global colour table
    broken = data[:first_block] + b"\x99" + data[first_block + 1 :]
    assert int(decode.gif_pixels(tf.constant(broken))) == -1
