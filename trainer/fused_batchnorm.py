"""BatchNormalization by TensorFlow's fused kernel, for training.

Keras 3's BatchNormalization computes in float32 whatever the compute dtype, by separate ops:
it casts the input up, takes its moments (a mean, a squared difference, another mean),
normalises with several elementwise ops and casts back, and the backward pass repeats each
over the whole activation. On 2 CPU cores those ops were about 40% of a ResNet50 training
step's CPU time (64-pixel input, bfloat16). TensorFlow's FusedBatchNormV3 (oneDNN's on CPUs,
cuDNN's on GPUs) does the normalisation and its gradient in one kernel each, taking the
bfloat16 or float16 input as it is and its statistics in float32.

The same arithmetic as Keras's layer (a test holds outputs, gradients and the moving
statistics to it): in training mode the batch's mean and biased variance normalise it, and
the moving mean and variance move towards them by `momentum` (the fused kernel's variance
output is Bessel-corrected, so it is scaled back to the biased one Keras uses); otherwise the
moving statistics normalise. Weights, checkpoints and the exported model (built afresh) are
Keras's. Layers the kernel does not cover (a mask, renorm, synchronised statistics, an axis
other than the last of a 4-D input) keep Keras's call.
"""

import functools

import keras
import tensorflow as tf

from trainer import model as model_lib


def _fused_applies(layer: keras.layers.BatchNormalization, inputs, mask) -> bool:
    axis = layer.axis if isinstance(layer.axis, int) else None
    return (
        mask is None
        and not layer.renorm
        and not layer.synchronized
        and len(inputs.shape) == 4
        and axis in (-1, 3)
    )


def batchnorm_call(layer: keras.layers.BatchNormalization, inputs, training=None, mask=None):
    """`layer`'s call by FusedBatchNormV3 where it applies (module docstring)."""
    if not _fused_applies(layer, inputs, mask):
        return keras.layers.BatchNormalization.call(layer, inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    scale = tf.cast(layer.gamma, tf.float32) if layer.scale else tf.ones((channels,))
    offset = tf.cast(layer.beta, tf.float32) if layer.center else tf.zeros((channels,))
    moving_mean = tf.cast(layer.moving_mean, tf.float32)
    moving_variance = tf.cast(layer.moving_variance, tf.float32)
    if training and layer.trainable:
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=layer.epsilon, is_training=True
        )
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)  # biased, as Keras's
        momentum = layer.momentum
        layer.moving_mean.assign(moving_mean * momentum + mean * (1.0 - momentum))
        layer.moving_variance.assign(moving_variance * momentum + variance * (1.0 - momentum))
    else:
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            scale,
            offset,
            mean=moving_mean,
            variance=moving_variance,
            epsilon=layer.epsilon,
            is_training=False,
        )
    return tf.cast(outputs, layer.compute_dtype)


def use_fused_batchnorm(model: keras.Model) -> int:
    """Every BatchNormalization layer of `model` (nested models included) calls
    `batchnorm_call`; returns how many."""
    layers = [
        layer
        for layer in model_lib.leaf_layers(model)
        if type(layer) is keras.layers.BatchNormalization
    ]
    for layer in layers:
        layer.call = functools.partial(batchnorm_call, layer)
    return len(layers)
