"""Matrix-product convolutions: Keras's values and gradients, on the layers they fit."""

from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.trainer import numerics
from trainer import matmul_convolutions, train
from trainer import model as model_lib
from trainer.config import TrainConfig


def conv_layer(kernel_size, strides, padding, seed=0) -> keras.layers.Conv2D:
    keras.utils.set_random_seed(seed)
    layer = keras.layers.Conv2D(6, kernel_size, strides=strides, padding=padding)
    layer.build((None, None, None, 5))
    return layer


def values_and_gradients(layer, images, compiled):
    def run(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images)
            # A loss that weighs every output differently, so every gradient entry counts.
            weights = tf.reshape(tf.range(tf.size(outputs)), tf.shape(outputs))
            loss = tf.reduce_sum(outputs * tf.cast(weights, outputs.dtype) / 97)
        images_gradient, kernel_gradient = tape.gradient(loss, [images, layer.kernel.value])
        return outputs, images_gradient, kernel_gradient

    return (tf.function(run) if compiled else run)(images)


CASES = [
    # (kernel, strides, padding, map side, uses matmul): ResNet50's convolutions, and the stem
    # and a large map, which keep Keras's.
    (1, 1, "valid", 4, True),
    (1, 2, "valid", 5, True),
    (3, 1, "same", 4, True),
    (3, 1, "same", matmul_convolutions.MAX_IM2COL_SIDE + 1, False),
    (7, 2, "valid", 9, False),
]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("kernel_size,strides,padding,side,matmul", CASES)
def test_same_values_and_gradients_as_keras(kernel_size, strides, padding, side, matmul, compiled):
    images = tf.random.stateless_normal((2, side, side, 5), seed=(1, 2))
    keras_layer = conv_layer(kernel_size, strides, padding)
    expected = values_and_gradients(keras_layer, images, compiled)

    layer = conv_layer(kernel_size, strides, padding)
    model = keras.Sequential([keras.Input((side, side, 5)), layer])
    assert matmul_convolutions.use_matmul_convolutions(model) == 1
    keras_convolution = keras.layers.Conv2D.convolution_op
    with mock.patch.object(keras.layers.Conv2D, "convolution_op", wraps=keras_convolution) as spy:
        found = values_and_gradients(layer, images, compiled)
    assert spy.called is not matmul

    names = ("outputs", "input gradient", "kernel gradient")
    for name, want, got in zip(names, expected, found, strict=True):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_bfloat16_matches_keras_to_bfloat16_precision():
    """Under mixed_bfloat16 (CPU training's policy) the product rounds as the convolution."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    images = tf.random.stateless_normal((4, 4, 4, 5), seed=(3, 4))
    for kernel_size in (1, 3):
        padding = "same" if kernel_size == 3 else "valid"
        expected = values_and_gradients(conv_layer(kernel_size, 1, padding), images, True)
        layer = conv_layer(kernel_size, 1, padding)
        matmul_convolutions.use_matmul_convolutions(
            keras.Sequential([keras.Input((4, 4, 5)), layer])
        )
        found = values_and_gradients(layer, images, True)
        for want, got in zip(expected, found, strict=True):
            assert got.dtype == want.dtype
            scale = float(tf.reduce_max(tf.abs(tf.cast(want, tf.float32))))
            np.testing.assert_allclose(
                tf.cast(got, tf.float32), tf.cast(want, tf.float32), atol=0.02 * scale
            )


def test_objrec_model_gradients_as_with_keras():
    """Every convolution of objrec's ResNet50 but the stem goes through the products, and the
    gradients of a training step are Keras's."""
    images = tf.random.stateless_uniform((4, 32, 32, 3), seed=(5, 6), maxval=255)
    labels = tf.one_hot([0, 1, 2, 0], 3)

    def gradients(matmul):
        keras.utils.set_random_seed(7)
        model = model_lib.build_model(3, 32, "none")
        if matmul:
            backbone = model_lib.backbone_of(model)
            convolutions = [
                layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)
            ]
            assert matmul_convolutions.use_matmul_convolutions(model) == len(convolutions)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = keras.losses.categorical_crossentropy(labels, model(images, training=True))
            return tape.gradient(loss, model.trainable_variables)

        return {v.path: g.numpy() for v, g in zip(model.trainable_variables, step(), strict=True)}

    # Measured: within 2e-5 of each gradient's largest entry.
    numerics.assert_each_close_to_its_scale(gradients(True), gradients(False))


@pytest.mark.parametrize(
    "flag,gpus,expected",
    [("auto", [], True), ("auto", ["GPU:0"], False), ("matmul", ["GPU:0"], True),
     ("keras", [], False)],
)  # fmt: skip
def test_convolutions_flag(flag, gpus, expected):
    config = TrainConfig(data_dir="d", job_dir="j", convolutions=flag)
    with mock.patch.object(tf.config, "list_physical_devices", return_value=gpus):
        assert train.uses_matmul_convolutions(config) is expected
