"""Keras's Adam with each weight's update in one TensorFlow kernel.

Keras 3's `Adam.update_step` writes the first and second moments and the weight with separate
element-wise ops, each a pass over the tensor: on ResNet50's 23.6 M weights that is about
94 ms a step on 2 CPU cores, against 27 ms for TensorFlow's fused `ResourceApplyAdam` kernel,
which reads and writes each element once (`benchmarks/trainer_benchmark.py` measures the
whole step). The arithmetic is the same:

    m <- m + (1 - beta_1) (g - m);  v <- v + (1 - beta_2) (g^2 - v)
    w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon)

The optimizer's variables, names and checkpoints are Keras's own; weight decay (AdamW), loss
scaling and distribution strategies go through Keras's code unchanged. Only dense gradients
of TensorFlow variables take the fused path; anything else (sparse gradients, AMSGrad) falls
back to Keras's update.
"""

import keras
import tensorflow as tf


class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose per-weight update is `tf.raw_ops.ResourceApplyAdam`."""

    def update_step(
        self, gradient: tf.Tensor, variable: tf.Variable, learning_rate: tf.Tensor
    ) -> None:
        if (
            self.amsgrad
            or isinstance(gradient, tf.IndexedSlices)
            or not hasattr(variable, "handle")
        ):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        # Inside the strategy's update of one replica's copy, a mirrored moment's `handle` is
        # that replica's copy too.
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )
