"""The weights training keeps besides the model's own: the best by validation loss (early
stopping) and an exponential moving average."""

import keras
import tensorflow as tf

from trainer import checkpoints


class BestWeights(tf.Module):
    """A copy of the model weights at the best validation loss of the current phase."""

    def __init__(self, model: keras.Model, name: str = "best_weights"):
        super().__init__(name=name)
        self._model = model
        self.copies = [tf.Variable(v.value, trainable=False) for v in model.weights]

    @tf.function
    def keep(self) -> None:
        for copy, variable in zip(self.copies, self._model.weights, strict=True):
            copy.assign(variable.value)

    @tf.function
    def restore_into_model(self) -> None:
        for copy, variable in zip(self.copies, self._model.weights, strict=True):
            variable.assign(copy)


class AveragedWeights(BestWeights):
    """An exponential moving average of every model weight, BatchNorm statistics included.

    Keras's optimizer option (`use_ema`) averages only the trainable variables, pairing the
    averaged kernels with the raw weights' BatchNorm statistics, and shows the average only
    when training ends; validation and early stopping need it every epoch. The momentum warms
    up as (1 + n) / (10 + n) over the first updates, so the random start is soon forgotten.
    """

    def __init__(self, model: keras.Model, momentum: float):
        super().__init__(model, name="averaged_weights")
        self._momentum = momentum
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False)

    def update(self) -> None:
        """One step of the average (called in the train function, cross-replica)."""
        count = tf.cast(self.updates, tf.float32)
        momentum = tf.minimum(self._momentum, (1.0 + count) / (10.0 + count))
        for copy, variable in zip(self.copies, self._model.weights, strict=True):
            value = tf.cast(variable.value, copy.dtype)
            copy.assign(momentum * copy + (1.0 - momentum) * value)
        self.updates.assign_add(1)

    @tf.function
    def swap(self) -> None:
        """Exchanges the model's weights and the average (twice restores both)."""
        for copy, variable in zip(self.copies, self._model.weights, strict=True):
            raw = tf.identity(variable.value)
            variable.assign(copy)
            copy.assign(raw)

    def reset(self) -> None:
        """Starts the average again from the model's weights (a new phase)."""
        self.keep()
        self.updates.assign(0)


def update_early_stopping(
    state: checkpoints.TrainState, best: BestWeights, val_loss: float, patience: int
) -> bool:
    """Records an epoch's validation loss; True when the phase should stop."""
    if val_loss < float(state.best_val_loss.numpy()):
        state.best_val_loss.assign(val_loss)
        state.epochs_without_improvement.assign(0)
        state.has_best.assign(True)
        best.keep()
        return False
    state.epochs_without_improvement.assign_add(1)
    return patience > 0 and int(state.epochs_without_improvement.numpy()) >= patience
