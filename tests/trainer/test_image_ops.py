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


MIXINGS = {
    "mixup": image_ops.Mixing(mixup_alpha=0.4),
    "cutmix": image_ops.Mixing(cutmix_alpha=1.0),
    "both": image_ops.Mixing(mixup_alpha=0.4, cutmix_alpha=1.0, probability=0.8),
}


def _batch(size=6, side=16, classes=3):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (size, side, side, 3)).astype(np.float32)
    labels = tf.one_hot(np.arange(size) % classes, classes).numpy()
    return images, labels


@pytest.mark.parametrize("name", sorted(MIXINGS))
def test_mix_batch_is_the_same_eagerly_and_in_tf_data_for_a_seed(name):
    mixing = MIXINGS[name]
    images, labels = _batch()
    seed = tf.constant([3, 4], tf.int64)
    eager = image_ops.mix_batch(tf.constant(images), tf.constant(labels), seed, mixing)
    in_data = next(
        iter(
            tf.data.Dataset.from_tensors((images, labels, seed)).map(
                lambda x, y, s: image_ops.mix_batch(x, y, s, mixing)
            )
        )
    )
    for a, b in zip(eager, in_data, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    mixed_images, mixed_labels = eager
    assert mixed_images.shape == images.shape and mixed_images.dtype == tf.float32
    assert mixed_labels.shape == labels.shape and mixed_labels.dtype == tf.float32
    np.testing.assert_allclose(mixed_labels.numpy().sum(-1), 1.0, rtol=1e-6)
    # Some seed mixes the batch: its labels change.
    assert any(
        not np.array_equal(
            image_ops.mix_batch(images, labels, tf.constant([k, 1], tf.int64), mixing)[1], labels
        )
        for k in range(10)
    )


def test_cutmix_pastes_one_rectangle_of_the_partner_weighted_by_its_area():
    images = np.zeros((2, 20, 20, 3), np.float32)
    images[1] = 200.0  # the partner of example 0 is example 1 (the reversed batch)
    labels = np.eye(2, dtype=np.float32)
    for k in range(10):
        mixed, mixed_labels = image_ops.mix_batch(
            images, labels, tf.constant([k, 2], tf.int64), image_ops.Mixing(cutmix_alpha=1.0)
        )
        pasted = np.argwhere(mixed.numpy()[0, ..., 0] == 200.0)
        share = len(pasted) / 400
        if len(pasted):
            height, width = np.ptp(pasted, axis=0) + 1
            assert height * width == len(pasted)  # one whole rectangle
        np.testing.assert_allclose(mixed_labels.numpy()[0], [1 - share, share], atol=1e-6)


def test_mixup_weights_images_and_labels_alike():
    images, labels = _batch(size=2, classes=2)
    mixed, mixed_labels = image_ops.mix_batch(
        images, labels, tf.constant([5, 5], tf.int64), image_ops.Mixing(mixup_alpha=0.4)
    )
    weight = mixed_labels.numpy()[0, 0]
    np.testing.assert_allclose(
        mixed.numpy()[0], weight * images[0] + (1 - weight) * images[1], rtol=1e-5, atol=1e-3
    )


def test_mixing_off_or_never_applied_leaves_the_batch_alone():
    images, labels = _batch()
    seed = tf.constant([1, 1], tf.int64)
    for mixing in (image_ops.Mixing(), image_ops.Mixing(cutmix_alpha=1.0, probability=0.0)):
        mixed, mixed_labels = image_ops.mix_batch(images, labels, seed, mixing)
        np.testing.assert_array_equal(mixed, images)
        np.testing.assert_array_equal(mixed_labels, labels)
