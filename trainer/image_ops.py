"""Training's augmentation of stored images: random crops, flips, rotation and erasing, and the
mixing of a batch's images and labels (mixup, CutMix).

Each op works on one image (HWC), or `mix_batch` on one batch, with an explicit stateless seed,
so it runs the same eagerly and inside `tf.data.Dataset.map`. Evaluation's view (`eval_crop`)
and the resize are the serving graph's, from `objrec.savedmodel.decode`.
"""

import dataclasses
import math

import tensorflow as tf

from objrec.savedmodel.decode import eval_crop, resize


def random_resized_crop(
    image: tf.Tensor,
    input_size: int,
    seed: tf.Tensor,
    area_range: tuple[float, float] = (0.25, 1.0),
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """Photos' scale augmentation: a random window of the image (by default 25-100% of its
    area, aspect ratio 3:4 to 4:3), resized to the model input."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.slice(image, begin, size)
    return tf.reshape(resize(window, input_size, input_size), [input_size, input_size, 3])


def pad_and_crop(image: tf.Tensor, image_size: int, input_size: int, seed: tf.Tensor) -> tf.Tensor:
    """Small images' augmentation: evaluation's view, zero-padded by 1/8 of its side on every
    edge, then a random window of the input size (32 px: 4 px of padding, as for CIFAR)."""
    view = eval_crop(image, image_size, input_size)
    pad = max(1, input_size // 8)
    padded = tf.pad(view, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(padded, [input_size, input_size, 3], seed)


def random_rotate(image: tf.Tensor, max_degrees: float, seed: tf.Tensor) -> tf.Tensor:
    """Rotates by a uniform random angle in [-max_degrees, max_degrees], reflecting the edges."""
    if max_degrees <= 0:
        return image
    degrees = tf.random.stateless_uniform([], seed, -max_degrees, max_degrees)
    angle = degrees * (math.pi / 180.0)
    shape = tf.shape(image)
    height = tf.cast(shape[0], tf.float32)
    width = tf.cast(shape[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) samples input (a0*x + a1*y + a2, b0*x + b1*y + b2): a rotation about
    # the image center.
    center_x, center_y = (width - 1) / 2, (height - 1) / 2
    offset_x = center_x - (cos * center_x - sin * center_y)
    offset_y = center_y - (sin * center_x + cos * center_y)
    transform = tf.stack([cos, -sin, offset_x, sin, cos, offset_y, 0.0, 0.0])
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=shape[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    return rotated[0]


def random_erasing(
    image: tf.Tensor,
    probability: float,
    seed: tf.Tensor,
    area_range: tuple[float, float] = (0.02, 0.25),
    log_aspect_range: tuple[float, float] = (math.log(0.3), math.log(3.3)),
) -> tf.Tensor:
    """With `probability`, a random rectangle (2-25% of the area, aspect 0.3-3.3) becomes
    uniform noise in [0, 255] (Zhong et al., 2017, as timm's RandomErasing)."""
    if probability <= 0:
        return image
    seeds = tf.random.experimental.stateless_split(seed, 6)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    area = tf.random.stateless_uniform([], seeds[0], *area_range) * height * width
    aspect = tf.exp(tf.random.stateless_uniform([], seeds[1], *log_aspect_range))
    box_height = tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1.0, height)
    box_width = tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1.0, width)
    top = tf.floor(tf.random.stateless_uniform([], seeds[2]) * (height - box_height + 1))
    left = tf.floor(tf.random.stateless_uniform([], seeds[3]) * (width - box_width + 1))
    rows = tf.range(height)[:, tf.newaxis]
    columns = tf.range(width)[tf.newaxis, :]
    inside = (
        (rows >= top) & (rows < top + box_height) & (columns >= left) & (columns < left + box_width)
    )
    erase = tf.random.stateless_uniform([], seeds[4]) < probability
    noise = tf.random.stateless_uniform(shape, seeds[5], 0.0, 255.0)
    return tf.where((inside & erase)[..., tf.newaxis], noise, tf.cast(image, tf.float32))


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training's random view of a stored image; see `augment`."""

    image_size: int  # stored
    input_size: int  # model input
    crop: str = "resized_crop"  # pad_crop | resized_crop | none
    min_crop_area: float = 0.25
    flip: bool = True
    rotation_degrees: float = 0.0
    random_erasing: float = 0.0


def augment(image: tf.Tensor, seed: tf.Tensor, augmentation: Augmentation) -> tf.Tensor:
    """A random crop, horizontal flip, rotation and erasing of a stored image, all drawn from
    `seed` (shape [2]): the same seed gives the same image eagerly and inside tf.data."""
    crop_seed, flip_seed, rotate_seed, erase_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4)
    )
    size = augmentation.input_size
    if augmentation.crop == "pad_crop":
        image = pad_and_crop(image, augmentation.image_size, size, crop_seed)
    elif augmentation.crop == "resized_crop":
        area_range = (augmentation.min_crop_area, 1.0)
        image = random_resized_crop(image, size, crop_seed, area_range=area_range)
    elif augmentation.crop == "none":
        image = eval_crop(image, augmentation.image_size, size)
    else:
        raise ValueError(f"--crop_augmentation {augmentation.crop}: choose pad_crop, "
                         "resized_crop or none")  # fmt: skip
    if augmentation.flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    image = random_rotate(image, augmentation.rotation_degrees, rotate_seed)
    return random_erasing(image, augmentation.random_erasing, erase_seed)


@dataclasses.dataclass(frozen=True)
class Mixing:
    """Batch mixing; see `mix_batch`. Both alphas 0 is off."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    probability: float = 1.0  # of mixing a batch at all

    @property
    def enabled(self) -> bool:
        return self.probability > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


def _beta(seed: tf.Tensor, alpha: float) -> tf.Tensor:
    """A Beta(alpha, alpha) draw, from two stateless Gamma draws."""
    first, second = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    a = tf.random.stateless_gamma([], first, alpha)
    b = tf.random.stateless_gamma([], second, alpha)
    return a / (a + b)


def _cutmix_mask(height: tf.Tensor, width: tf.Tensor, share: tf.Tensor, seed: tf.Tensor):
    """A [height, width, 1] mask of one rectangle of about `share` of the area, centred at a
    uniform random pixel and clipped by the edges (Yun et al., 2019), and its exact share."""
    row_seed, column_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    ratio = tf.sqrt(share)
    centre_row = tf.floor(tf.random.stateless_uniform([], row_seed) * h)
    centre_column = tf.floor(tf.random.stateless_uniform([], column_seed) * w)
    top = tf.clip_by_value(centre_row - tf.round(h * ratio / 2), 0.0, h)
    bottom = tf.clip_by_value(centre_row + tf.round(h * ratio / 2), 0.0, h)
    left = tf.clip_by_value(centre_column - tf.round(w * ratio / 2), 0.0, w)
    right = tf.clip_by_value(centre_column + tf.round(w * ratio / 2), 0.0, w)
    rows = tf.range(h)[:, tf.newaxis]
    columns = tf.range(w)[tf.newaxis, :]
    inside = (rows >= top) & (rows < bottom) & (columns >= left) & (columns < right)
    exact_share = (bottom - top) * (right - left) / (h * w)
    return inside[..., tf.newaxis], exact_share


def mix_batch(
    images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, mixing: Mixing
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixes each example of a batch with its partner in the reversed batch, as timm does.

    With `mixing.probability` the batch is mixed, by mixup (Zhang et al., 2017: a weighted
    average of the two images and of their one-hot labels, weight ~ Beta(alpha, alpha)) or
    CutMix (a rectangle of the partner pasted in, labels weighted by the pasted area); with both
    alphas set, each batch draws one of the two at even odds. Shapes and dtypes are kept.
    """
    if not mixing.enabled:
        return images, labels
    apply_seed, choice_seed, weight_seed, box_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4)
    )
    images = tf.cast(images, tf.float32)
    partner_images = tf.reverse(images, [0])
    partner_labels = tf.reverse(labels, [0])
    use_cutmix = mixing.cutmix_alpha > 0
    if mixing.mixup_alpha > 0 and mixing.cutmix_alpha > 0:
        use_cutmix = tf.random.stateless_uniform([], choice_seed) < 0.5
    alpha = tf.where(use_cutmix, mixing.cutmix_alpha, mixing.mixup_alpha)
    weight = _beta(weight_seed, alpha)  # of the example itself
    shape = tf.shape(images)
    inside, pasted_share = _cutmix_mask(shape[1], shape[2], 1.0 - weight, box_seed)
    cut_images = tf.where(inside[tf.newaxis], partner_images, images)
    mixed_images = weight * images + (1.0 - weight) * partner_images
    weight = tf.where(use_cutmix, 1.0 - pasted_share, weight)
    mixed_images = tf.where(use_cutmix, cut_images, mixed_images)
    if mixing.probability < 1:
        skip = tf.random.stateless_uniform([], apply_seed) >= mixing.probability
        mixed_images = tf.where(skip, images, mixed_images)
        weight = tf.where(skip, 1.0, weight)
    mixed_labels = weight * labels + (1.0 - weight) * partner_labels
    return mixed_images, tf.cast(mixed_labels, labels.dtype)
