"""Fused BatchNormalization: Keras's outputs, gradients and moving statistics."""

from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.trainer import numerics
from trainer import fused_batchnorm, train
from trainer import model as model_lib
from trainer.config import TrainConfig


def batchnorm_layer(fused: bool, **kwargs) -> keras.layers.BatchNormalization:
    layer = keras.layers.BatchNormalization(momentum=0.9, **kwargs)
    model = keras.Sequential([keras.Input((3, 4, 5)), layer])
    # Scale, shift and moving statistics away from their initial 1s and 0s.
    sizes = [weight.shape[0] for weight in layer.weights]
    layer.set_weights([np.linspace(0.5, 2.0, 5 * i + n)[-n:] for i, n in enumerate(sizes)])
    if fused:
        assert fused_batchnorm.use_fused_batchnorm(model) == 1
    return layer


def run(layer, images, training, compiled):
    def step(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = layer(images, training=training)
            # A loss that weighs every output differently, so every gradient entry counts.
            weights = tf.reshape(tf.range(tf.size(outputs)), tf.shape(outputs))
            loss = tf.reduce_sum(outputs * tf.cast(weights, outputs.dtype) / 97)
        gradients = tape.gradient(loss, [images, layer.gamma.value, layer.beta.value])
        return [outputs, *gradients]

    found = (tf.function(step) if compiled else step)(images)
    return found + [layer.moving_mean.value, layer.moving_variance.value]


NAMES = ("outputs", "input gradient", "scale gradient", "shift gradient", "moving mean",
         "moving variance")  # fmt: skip


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_same_as_keras(training, compiled):
    images = tf.random.stateless_normal((2, 3, 4, 5), seed=(1, 2)) * 3 + 1
    expected = run(batchnorm_layer(False), images, training, compiled)
    layer = batchnorm_layer(True)
    keras_call = keras.layers.BatchNormalization.call
    with mock.patch.object(keras.layers.BatchNormalization, "call", wraps=keras_call) as spy:
        found = run(layer, images, training, compiled)
    assert not spy.called  # the fused kernel ran
    for name, want, got in zip(NAMES, expected, found, strict=True):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_bfloat16_matches_keras_to_bfloat16_precision():
    """Under mixed_bfloat16 (CPU training's policy) the kernel takes the bfloat16 input as it
    is and keeps its statistics in float32."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    images = tf.random.stateless_normal((4, 3, 4, 5), seed=(3, 4))
    expected = run(batchnorm_layer(False), images, True, True)
    found = run(batchnorm_layer(True), images, True, True)
    for name, want, got in zip(NAMES, expected, found, strict=True):
        assert got.dtype == want.dtype, name
        scale = float(tf.reduce_max(tf.abs(tf.cast(want, tf.float32))))
        np.testing.assert_allclose(
            tf.cast(got, tf.float32), tf.cast(want, tf.float32), atol=0.02 * scale, err_msg=name
        )


def test_layers_the_kernel_does_not_cover_keep_keras_call():
    images = tf.random.stateless_normal((2, 3, 4, 5), seed=(5, 6))
    for kwargs in ({"renorm": True}, {"axis": 1}):
        expected = run(batchnorm_layer(False, **kwargs), images, True, False)
        layer = batchnorm_layer(True, **kwargs)
        keras_call = keras.layers.BatchNormalization.call
        with mock.patch.object(keras.layers.BatchNormalization, "call", wraps=keras_call) as spy:
            found = run(layer, images, True, False)
        assert spy.called, kwargs
        for name, want, got in zip(NAMES, expected, found, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_objrec_model_step_as_with_keras():
    """Every BatchNormalization of objrec's ResNet50 runs the kernel, and a training step's
    gradients and moving statistics are Keras's."""
    images = tf.random.stateless_uniform((4, 32, 32, 3), seed=(5, 6), maxval=255)
    labels = tf.one_hot([0, 1, 2, 0], 3)

    def step_results(fused):
        keras.utils.set_random_seed(7)
        model = model_lib.build_model(3, 32, "none")
        model_lib.set_batchnorm_momentum(model, 0.9)
        config = TrainConfig(
            data_dir="d", job_dir="j", convolutions="keras", batchnorm="fused" if fused else "keras"
        )
        train.prepare_layers(model, config)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = keras.losses.categorical_crossentropy(labels, model(images, training=True))
            return tape.gradient(loss, model.trainable_variables)

        variables = model.trainable_variables
        results = {v.path: g.numpy() for v, g in zip(variables, step(), strict=True)}
        statistics = [v for v in model.non_trainable_variables if "moving" in v.path]
        assert len(statistics) == 2 * 53
        results.update({v.path: v.numpy() for v in statistics})
        return results

    numerics.assert_each_close_to_its_scale(step_results(True), step_results(False))
