"""ResNet50's convolutions as matrix products, for training on CPUs.

On a CPU, TensorFlow trains a convolution with oneDNN's kernels, and the one that computes a
kernel's gradient (Conv2DBackpropFilter) is slow on the small feature maps of small images:
with bfloat16 on 2 AMX cores, ResNet50's 1 x 1 convolution of 512 to 2,048 channels over a
2 x 2 map (a 64-pixel input's last stage) takes 10.8 ms for its kernel gradient, the same
product as a matrix multiplication 0.84 ms; a 3 x 3 one of 512 channels 16.5 against 2.4 ms.
So, while training on CPUs:

- a 1 x 1 convolution (two thirds of ResNet50's) is a matrix multiplication of the pixels'
  channels by the kernel, strided by slicing; its gradients are matrix products too;
- a k x k convolution with stride 1 and `same` padding over a map of at most
  MAX_IM2COL_SIDE pixels a side keeps oneDNN's convolution forward and for the input's
  gradient, and computes its kernel's gradient as one matrix product of the im2col patches
  (a few MB at these sizes; at 56 x 56, a 224-pixel input's first stage, it costs more than
  it saves, so larger maps keep oneDNN's);
- anything else (ResNet50's 7 x 7 stem) keeps Keras's convolution.

The same arithmetic as Keras's convolution (a test holds values and gradients to it): the
weights, their names and checkpoints are unchanged, and the exported model, built afresh,
uses Keras's convolutions. A ResNet50 training step with Adam, bfloat16, 2 cores, taking turns
in one process: 64-pixel input, batches of 32, 54 -> 75 images/s; 32 pixels, batches of 64,
84 -> 170; 224 pixels, batches of 16, 6.5 -> 7.4; float32 at 64 pixels 44 -> 47. In objrec's
loop (`benchmarks/trainer_benchmark.py`): 1.53x at 64 pixels, 1.48x at 32.
"""

import functools

import keras
import tensorflow as tf

from trainer import model as model_lib

# Largest feature-map side whose k x k kernel gradient is an im2col product.
MAX_IM2COL_SIDE = 16


def _im2col(images: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """(N, H, W, C) -> (N, H, W, height * width * C): each pixel's `same`-padded
    neighbourhood, ordered as a (height, width, C, filters) kernel flattens."""
    top, left = (height - 1) // 2, (width - 1) // 2
    padded = tf.pad(images, [[0, 0], [top, height - 1 - top], [left, width - 1 - left], [0, 0]])
    rows, cols = tf.shape(images)[1], tf.shape(images)[2]
    shifted = [
        padded[:, i : i + rows, j : j + cols, :] for i in range(height) for j in range(width)
    ]
    return tf.concat(shifted, axis=-1)


def pointwise_convolution(images: tf.Tensor, kernel: tf.Tensor, strides: tuple) -> tf.Tensor:
    """A 1 x 1 `valid` convolution as one matrix multiplication."""
    if strides != (1, 1):
        images = images[:, :: strides[0], :: strides[1], :]
    in_channels, filters = kernel.shape[-2], kernel.shape[-1]
    shape = tf.shape(images)
    product = tf.matmul(
        tf.reshape(images, (-1, in_channels)), tf.reshape(kernel, (in_channels, filters))
    )
    return tf.reshape(product, tf.concat([shape[:3], [filters]], axis=0))


def same_convolution(images: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """A k x k, stride 1, `same` convolution whose kernel gradient is an im2col product."""
    height, width, in_channels, filters = kernel.shape

    @tf.custom_gradient
    def convolve(images, kernel):
        outputs = tf.nn.conv2d(images, kernel, strides=1, padding="SAME")

        def gradients(upstream):
            images_gradient = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(images),
                filter=kernel,
                out_backprop=upstream,
                strides=[1, 1, 1, 1],
                padding="SAME",
            )
            patches = tf.reshape(_im2col(images, height, width), (-1, height * width * in_channels))
            kernel_gradient = tf.matmul(
                patches, tf.reshape(upstream, (-1, filters)), transpose_a=True
            )
            return images_gradient, tf.reshape(kernel_gradient, kernel.shape)

        return outputs, gradients

    return convolve(images, kernel)


def convolution_op(layer: keras.layers.Conv2D, inputs: tf.Tensor, kernel) -> tf.Tensor:
    """`layer`'s convolution: a matrix product where that is faster (module docstring)."""
    plain = (
        layer.data_format == "channels_last" and layer.dilation_rate == (1, 1) and layer.groups == 1
    )
    height, width = kernel.shape[0], kernel.shape[1]
    if plain and (height, width) == (1, 1) and layer.padding == "valid":
        return pointwise_convolution(inputs, tf.convert_to_tensor(kernel), layer.strides)
    small_map = all(side is not None and side <= MAX_IM2COL_SIDE for side in inputs.shape[1:3])
    if plain and layer.strides == (1, 1) and layer.padding == "same" and small_map:
        return same_convolution(inputs, tf.convert_to_tensor(kernel))
    return keras.layers.Conv2D.convolution_op(layer, inputs, kernel)


def use_matmul_convolutions(model: keras.Model) -> int:
    """Every Conv2D layer of `model` (nested models included) convolves by
    `convolution_op`; returns how many."""
    layers = [layer for layer in model_lib.leaf_layers(model) if type(layer) is keras.layers.Conv2D]
    for layer in layers:
        layer.convolution_op = functools.partial(convolution_op, layer)
    return len(layers)
