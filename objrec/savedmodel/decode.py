"""The serving graph's image decode, and the evaluation view training shares with it.

Each public function works on one image (HWC) so that it runs the same eagerly, inside
`tf.data.Dataset.map` and inside the SavedModel. Pixel values stay in [0, 255] float32 until
the model's own normalisation layer.

`decode_raw_batch` is what the exported `serving_default` signature runs on raw files: format
and pixel-count checks from the headers (every GIF frame's own size) before any decode, EXIF
orientation, transparency on white, the resize policy preprocessing stored with, the JPEG round
trip of storage, then evaluation's centre crop (`eval_crop`, which the trainer's evaluation
uses too, so that served and evaluated inputs are the same pixels).

The resize policies mirror `preprocessing.image_io` (Pillow), so that raw bytes sent to the
served model become the same input as a stored record after evaluation's centre crop:

- `shorter_side`: the shorter side becomes `image_size`, aspect ratio kept.
- `crop`: `shorter_side`, then the central `image_size` square.
- `pad`: the longer side becomes `image_size`, then black padding to a centered square.
- `stretch`: `image_size` square, aspect ratio ignored.
"""

import tensorflow as tf

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GIF_MAGIC = b"GIF8"
_BMP_MAGIC = b"BM"


def resize(image: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Bilinear resize with antialiasing, as Pillow's `Image.resize(..., BILINEAR)` does."""
    size = tf.stack([height, width])
    return tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear", antialias=True)


def _scaled_size(height, width, target, use_longer_side: bool):
    """Size whose shorter (or longer) side is `target`, rounded like Pillow's `round()`."""
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    side = tf.maximum(height, width) if use_longer_side else tf.minimum(height, width)
    scale = tf.cast(target, tf.float64) / side
    new_height = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), 1)
    new_width = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), 1)
    return new_height, new_width


def center_crop(
    image: tf.Tensor, crop_height: int | tf.Tensor, crop_width: int | tf.Tensor
) -> tf.Tensor:
    """The central `crop_height` x `crop_width` window; offsets floor like Pillow's."""
    shape = tf.shape(image)
    top = (shape[0] - crop_height) // 2
    left = (shape[1] - crop_width) // 2
    return tf.image.crop_to_bounding_box(image, top, left, crop_height, crop_width)


def apply_resize_policy(image: tf.Tensor, image_size: int, resize_mode: str) -> tf.Tensor:
    """Resizes a decoded RGB image as preprocessing stored it (see the module docstring)."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    if resize_mode == "stretch":
        return resize(image, image_size, image_size)
    if resize_mode == "pad":
        new_height, new_width = _scaled_size(height, width, image_size, use_longer_side=True)
        resized = resize(image, new_height, new_width)
        top = (image_size - new_height) // 2
        left = (image_size - new_width) // 2
        return tf.image.pad_to_bounding_box(resized, top, left, image_size, image_size)
    new_height, new_width = _scaled_size(height, width, image_size, use_longer_side=False)
    resized = resize(image, new_height, new_width)
    if resize_mode == "crop":
        return center_crop(resized, image_size, image_size)
    if resize_mode == "shorter_side":
        return resized
    raise ValueError(f"unknown resize_mode {resize_mode!r}")


def eval_crop(image: tf.Tensor, image_size: int, input_size: int) -> tf.Tensor:
    """Evaluation's view of a stored image: the central square, scaled to the model input.

    The square's side is `min(h, w) * input_size / image_size` (never more than the image), so
    with the defaults a 256-pixel image gives its central 224 pixels unchanged (224 / 256 = 87.5%).
    """
    shape = tf.shape(image)
    shorter = tf.minimum(shape[0], shape[1])
    fraction = min(1.0, input_size / image_size)
    side = tf.maximum(tf.cast(tf.math.floor(tf.cast(shorter, tf.float32) * fraction), tf.int32), 1)
    side = tf.minimum(side, shorter)
    square = center_crop(image, side, side)
    return tf.reshape(resize(square, input_size, input_size), [input_size, input_size, 3])


def decode_stored(encoded: tf.Tensor) -> tf.Tensor:
    """Decodes a JPEG to uint8 RGB HWC, with the accurate DCT (as Pillow's libjpeg decodes)."""
    return tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")


def _declared_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
    """Width x height declared in the file header, read without decoding any pixel data."""

    def unpack(offset: int, length: int, little_endian: bool) -> tf.Tensor:
        raw = tf.io.decode_raw(tf.strings.substr(image_bytes, offset, length), tf.uint8)
        raw = tf.cast(raw, tf.int64)
        weights = [256**i for i in range(length)]
        weights = weights if little_endian else weights[::-1]
        return tf.reduce_sum(raw * tf.constant(weights, tf.int64))

    def png():  # IHDR: width and height, big-endian uint32 at bytes 16 and 20.
        return unpack(16, 4, False) * unpack(20, 4, False)

    def gif():  # The logical screen, or the frames when they need more (see gif_pixels).
        screen = unpack(6, 2, True) * unpack(8, 2, True)
        return tf.maximum(screen, gif_pixels(image_bytes))

    def bmp():  # BITMAPINFOHEADER: little-endian int32 at bytes 18 and 22 (height may be < 0).
        width = unpack(18, 4, True)
        height = unpack(22, 4, True)
        height = tf.where(height >= 2**31, 2**32 - height, height)
        return width * height

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(image_bytes), tf.int64)
        return shape[0] * shape[1]

    prefix = tf.strings.substr(image_bytes, 0, 8)
    branch = tf.where(
        tf.strings.substr(prefix, 0, 3) == _JPEG_MAGIC,
        0,
        tf.where(
            prefix == _PNG_MAGIC,
            1,
            tf.where(
                tf.strings.substr(prefix, 0, 4) == _GIF_MAGIC,
                2,
                tf.where(tf.strings.substr(prefix, 0, 2) == _BMP_MAGIC, 3, 4),
            ),
        ),
    )
    unknown = lambda: tf.constant(-1, tf.int64)  # noqa: E731
    return tf.switch_case(branch, [jpeg, png, gif, bmp, unknown])


# GIF blocks (GIF89a specification): extension, image descriptor, trailer.
_GIF_EXTENSION, _GIF_IMAGE, _GIF_TRAILER = 0x21, 0x2C, 0x3B
_GIF_HEADER_BYTES = 13  # "GIF89a" and the logical screen descriptor
_GIF_DESCRIPTOR_BYTES = 10  # separator, left, top, width, height (uint16 each), flags


def gif_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
    """The pixels TensorFlow's GIF decoder allocates: every frame's own raster and a canvas of
    the largest frame width x height, whatever the logical screen declares; -1 when the block
    structure is broken (the file is then no GIF to decode).

    Walks the blocks without decoding: an iteration per block or data sub-block (of at most
    255 bytes), so a 1.6 MB file of 60 frames takes about 6,600 iterations.
    """
    data = tf.cast(tf.io.decode_raw(image_bytes, tf.uint8), tf.int64)
    size = tf.size(data, out_type=tf.int64)
    data = tf.concat([data, tf.constant([-1], tf.int64)], axis=0)  # -1: past the end

    def at(position):
        return tf.gather(data, tf.clip_by_value(tf.cast(position, tf.int64), 0, size))

    def u16(position):
        return at(position) + 256 * at(position + 1)

    def color_table(flags):  # bytes of a colour table, present when the flag's top bit is set
        return tf.where(
            flags >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags % 8), 0
        )

    # State: position, inside data sub-blocks?, frame pixel sum, widest, tallest, done, broken.
    def step(position, in_blocks, total, widest, tallest, done, broken):
        byte = at(position)
        if_blocks = (position + 1 + tf.maximum(byte, 0), byte > 0)
        is_image = byte == _GIF_IMAGE
        width, height = u16(position + 5), u16(position + 7)
        after_image = (
            position + _GIF_DESCRIPTOR_BYTES + color_table(at(position + 9)) + 1
        )  # the LZW code size byte, then data sub-blocks
        next_position = tf.where(
            in_blocks,
            if_blocks[0],
            tf.where(is_image, after_image, position + 2),  # an extension: label, then blocks
        )
        next_in_blocks = tf.where(in_blocks, if_blocks[1], is_image | (byte == _GIF_EXTENSION))
        top_level = ~in_blocks
        new_frame = top_level & is_image
        ended = top_level & (byte == _GIF_TRAILER)
        bad = (byte < 0) | (top_level & ~is_image & (byte != _GIF_EXTENSION) & ~ended)
        return (
            next_position,
            next_in_blocks,
            total + tf.where(new_frame, width * height, 0),
            tf.maximum(widest, tf.where(new_frame, width, 0)),
            tf.maximum(tallest, tf.where(new_frame, height, 0)),
            ended | bad,
            broken | bad,
        )

    start = _GIF_HEADER_BYTES + color_table(at(10))
    zero = tf.constant(0, tf.int64)
    state = (start, tf.constant(False), zero, zero, zero, tf.constant(False), tf.constant(False))
    _, _, total, widest, tallest, _, broken = tf.while_loop(
        lambda *state: ~state[5], step, state, parallel_iterations=1
    )
    return tf.where(broken, tf.constant(-1, tf.int64), tf.maximum(total, widest * tallest))


# EXIF lives in a JPEG's APP1 segment, at most 64 KiB, right after the start of the file.
_EXIF_HEADER = b"Exif\x00\x00"
_EXIF_SEARCH_BYTES = 65536
_ORIENTATION_TAG = 0x0112
_MAX_IFD_ENTRIES = 64


def _uint(data: tf.Tensor, offset: tf.Tensor, length: int, little_endian: tf.Tensor):
    """Unsigned integer of `length` bytes at `offset` (the caller keeps it in bounds)."""
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, length), tf.uint8), tf.int64)
    powers = tf.constant([256**i for i in range(length)], tf.int64)
    return tf.reduce_sum(raw * tf.where(little_endian, powers, tf.reverse(powers, [0])))


def exif_orientation(image_bytes: tf.Tensor) -> tf.Tensor:
    """The EXIF Orientation tag (1-8) of a JPEG, 1 when there is none or it is unreadable.

    Reads IFD0 of the APP1 "Exif" segment with string ops only: a malformed segment gives 1,
    never an error. Offsets are clamped and the data padded so every read stays in bounds.
    """
    head = tf.strings.substr(image_bytes, 0, _EXIF_SEARCH_BYTES)
    head_length = tf.cast(tf.strings.length(head), tf.int64)
    parts = tf.strings.split(head, _EXIF_HEADER, maxsplit=1)
    found = tf.size(parts) > 1
    padding = tf.constant(b"\x00" * (12 * _MAX_IFD_ENTRIES + 16))
    data = tf.strings.join([head, padding])
    tiff = tf.minimum(tf.cast(tf.strings.length(parts[0]), tf.int64) + 6, head_length)
    little_endian = tf.strings.substr(data, tiff, 2) == b"II"
    ifd = tf.minimum(tiff + _uint(data, tiff + 4, 4, little_endian), head_length)
    count = tf.minimum(_uint(data, ifd, 2, little_endian), _MAX_IFD_ENTRIES)
    entries = tf.io.decode_raw(tf.strings.substr(data, ifd + 2, 12 * _MAX_IFD_ENTRIES), tf.uint8)
    entries = tf.reshape(tf.cast(entries, tf.int64), [_MAX_IFD_ENTRIES, 12])

    def short_at(column: int) -> tf.Tensor:  # a 2-byte field of every entry
        first, second = entries[:, column], entries[:, column + 1]
        return tf.where(little_endian, first + 256 * second, 256 * first + second)

    is_orientation = (short_at(0) == _ORIENTATION_TAG) & (
        tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64) < count
    )
    # A SHORT value sits left-justified in the entry's 4-byte value field (bytes 8-9).
    value = tf.reduce_max(tf.where(is_orientation, short_at(8), 0))
    usable = found & (value >= 1) & (value <= 8)
    return tf.cast(tf.where(usable, value, 1), tf.int32)


def apply_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Turns an HWC image upright for its EXIF orientation, as Pillow's exif_transpose."""

    def transposed():
        return tf.transpose(image, [1, 0, 2])

    branches = [
        lambda: image,  # 1: upright
        lambda: tf.reverse(image, [1]),  # 2: mirrored left-right
        lambda: tf.reverse(image, [0, 1]),  # 3: rotated 180
        lambda: tf.reverse(image, [0]),  # 4: mirrored top-bottom
        transposed,  # 5: transposed
        lambda: tf.reverse(transposed(), [1]),  # 6: needs 90 degrees clockwise
        lambda: tf.reverse(transposed(), [0, 1]),  # 7: transversed
        lambda: tf.reverse(transposed(), [0]),  # 8: needs 90 degrees counter-clockwise
    ]
    return tf.switch_case(orientation - 1, branches)


def _to_rgb_on_white(image: tf.Tensor) -> tf.Tensor:
    """Any of 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels to float RGB, alpha on white."""
    image = tf.cast(image, tf.float32)

    def on_white(colour: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
        alpha = alpha / 255.0
        return colour * alpha + 255.0 * (1.0 - alpha)

    def grey() -> tf.Tensor:
        return tf.concat([image[..., :1]] * 3, axis=-1)

    # Only a layout with alpha is composited: for an opaque one the composite is the colour
    # itself (x * 1 + 255 * 0), bit for bit, and skipping it saves 9 of the 15 ms a 640x480
    # JPEG took to decode (2 CPU cores). Every branch is traced whatever the static channel
    # count, so each slices what any count has (alpha is the last channel of LA and RGBA).
    rgb = tf.switch_case(
        tf.shape(image)[-1] - 1,
        [
            grey,
            lambda: on_white(grey(), image[..., -1:]),
            lambda: image[..., :3],
            lambda: on_white(image[..., :3], image[..., -1:]),
        ],
    )
    return tf.ensure_shape(rgb, [None, None, 3])


def jpeg_round_trip(image: tf.Tensor, quality: int) -> tf.Tensor:
    """What storing as JPEG does to pixels: encode at `quality` (4:2:0, as preprocessing
    writes), decode again."""
    encoded = tf.io.encode_jpeg(tf.cast(image, tf.uint8), quality=quality, chroma_downsampling=True)
    return tf.cast(decode_stored(encoded), tf.float32)


def decode_raw_image(
    image_bytes: tf.Tensor,
    image_size: int,
    resize_mode: str,
    input_size: int,
    max_pixels: int,
    jpeg_quality: int | None = None,
) -> tf.Tensor:
    """Raw file bytes to model input, as preprocessing followed by evaluation would make it:
    EXIF orientation (JPEG), transparency on white, the resize policy, the JPEG round trip
    of storage (when `jpeg_quality` is given), the center crop.

    Raises InvalidArgumentError for an unknown format, a header declaring more than
    `max_pixels` pixels (checked before any decode) or undecodable data; the batch function
    `decode_raw_batch` turns those errors into `valid = False`.
    """
    pixels = _declared_pixels(image_bytes)
    checks = [
        tf.debugging.assert_positive(pixels, message="not a JPEG, PNG, GIF or BMP image"),
        tf.debugging.assert_less_equal(
            pixels, tf.constant(max_pixels, tf.int64), message="image has too many pixels"
        ),
    ]
    with tf.control_dependencies(checks):
        is_jpeg = tf.strings.substr(image_bytes, 0, 3) == _JPEG_MAGIC
        # JPEG through decode_jpeg: it returns RGB for grey and YCbCr files alike, with the
        # accurate integer DCT that Pillow's libjpeg uses too.
        decoded = tf.cond(
            is_jpeg,
            lambda: apply_orientation(decode_stored(image_bytes), exif_orientation(image_bytes)),
            lambda: tf.io.decode_image(image_bytes, expand_animations=False),
        )
    rgb = _to_rgb_on_white(decoded)
    stored = tf.round(tf.clip_by_value(apply_resize_policy(rgb, image_size, resize_mode), 0, 255))
    if jpeg_quality:
        stored = jpeg_round_trip(stored, jpeg_quality)
    return eval_crop(stored, image_size, input_size)


# Images of one request decoded at once. A fixed bound, not tf.data.AUTOTUNE: with autotuning
# off (see `_per_request_options`), AUTOTUNE means min(16, the machine's schedulable CPUs),
# which on a large node is 16 whatever the pod's CPU limit. Decoding is CPU-bound, so more
# calls than the serving pod's 4 CPUs (k8s/base) gain nothing, and each call in flight holds
# its image's decoded pixels (up to `max_pixels`), so the bound also caps a request's memory.
PARALLEL_DECODES = 4


def _per_request_options() -> tf.data.Options:
    """A dataset made per request: tf.data's graph rewrites and autotuning cost more than they
    save (measured: 86 ms of a 224x224 request with them, 5 ms without)."""
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False
    return options


def decode_raw_batch(
    image_bytes: tf.Tensor,
    image_size: int,
    resize_mode: str,
    input_size: int,
    max_pixels: int,
    jpeg_quality: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes a batch of raw files; one bad file never fails the others.

    Returns float32 images [n, input_size, input_size, 3] (zeros where invalid) and a bool
    `valid` [n]. Graph ops cannot catch an op error, but `tf.data`'s `ignore_errors` can: each
    image is decoded as one dataset element (up to `PARALLEL_DECODES` at once) and a failing
    element is simply dropped. A sentinel element (index n) keeps the batch non-empty when
    every image fails.
    """
    count = tf.shape(image_bytes)[0]
    decoded = (
        tf.data.Dataset.from_tensor_slices((tf.range(count), image_bytes))
        .map(
            lambda index, data: (
                index,
                decode_raw_image(
                    data, image_size, resize_mode, input_size, max_pixels, jpeg_quality
                ),
            ),
            num_parallel_calls=PARALLEL_DECODES,
            # In order: the sentinel must come last (`indices` also carries each position).
            deterministic=True,
        )
        .ignore_errors()
    )
    sentinel = tf.data.Dataset.from_tensors((count, tf.zeros([input_size, input_size, 3])))
    batch = decoded.concatenate(sentinel).batch(tf.cast(count + 1, tf.int64))
    indices, images = batch.with_options(_per_request_options()).get_single_element()
    positions = indices[:, tf.newaxis]
    shape = tf.stack([count + 1, input_size, input_size, 3])
    all_images = tf.scatter_nd(positions, images, shape)
    valid = tf.scatter_nd(positions, tf.ones_like(indices, tf.bool), [count + 1])
    return all_images[:count], valid[:count]
