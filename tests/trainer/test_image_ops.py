"""trainer.image_ops: training's augmentation, the same eagerly and inside tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from trainer import image_ops

AUGMENTATIONS = {
    "pad_crop": image_ops.Augmentation(40, 32, crop="pad_crop", random_erasing=1.0),
    "resized_crop": image_ops.Augmentation(40, 32, crop="resized_crop", rotation_degrees=15.0),
    "none": image_ops.Augmentation(40, 32, crop="none", flip=False),
}


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augment_is_the_same_eagerly_and_in_tf_data_for_a_seed(name):
    augmentation = AUGMENTATIONS[name]
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3)).astype(np.uint8)
    seed = tf.constant([3, 4], tf.int64)
    eager = image_ops.augment(tf.constant(image), seed, augmentation)
    in_data = next(
        iter(
            tf.data.Dataset.from_tensors((image, seed)).map(
                lambda x, s: image_ops.augment(x, s, augmentation)
            )
        )
    )
    np.testing.assert_array_equal(eager.numpy(), in_data.numpy())
    assert eager.shape == (32, 32, 3) and eager.dtype == tf.float32
    assert float(tf.reduce_min(eager)) >= 0 and float(tf.reduce_max(eager)) <= 255
    other = image_ops.augment(tf.constant(image), tf.constant([5, 6], tf.int64), augmentation)
    assert (name == "none") == bool(np.array_equal(eager.numpy(), other.numpy()))


def test_pad_crop_shifts_the_whole_image_by_at_most_an_eighth():
    image = np.zeros((32, 32, 3), np.uint8)
    image[12:20, 12:20] = 255  # a centred square of 8 x 8
    for index in range(10):
        seed = tf.constant([index, 0], tf.int64)
        out = image_ops.pad_and_crop(tf.constant(image), 32, 32, seed).numpy()
        rows, columns = np.nonzero(out[..., 0] > 128)
        assert len(rows) == 64  # never cut: 4 px of padding, the square is 12 px in
        assert abs(rows.min() - 12) <= 4 and abs(columns.min() - 12) <= 4


def test_random_erasing_replaces_one_rectangle_or_nothing():
    image = tf.fill([32, 32, 3], 7.0)
    erased = image_ops.random_erasing(image, 1.0, tf.constant([1, 2], tf.int64)).numpy()
    changed = np.argwhere(erased[..., 0] != 7.0)
    height, width = np.ptp(changed, axis=0) + 1
    assert 0.02 * 1024 * 0.5 <= len(changed) <= height * width <= 0.25 * 1024 * 1.5
    kept = image_ops.random_erasing(image, 0.0, tf.constant([1, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(kept, image.numpy())
