"""FusedAdam: Keras's Adam (and AdamW) arithmetic, one kernel per weight, under strategies."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.fused_adam import FusedAdam


def make_model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(3, activation="softmax"),
    ])  # fmt: skip


def train(optimizer_class, strategy, weight_decay, steps=6) -> list[np.ndarray]:
    """Weights after `steps` steps of a fixed batch under `strategy`."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 6)).astype("float32")
    labels = np.eye(3, dtype="float32")[rng.integers(0, 3, 8)]
    with strategy.scope():
        model = make_model(1)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=steps, warmup_target=0.05, warmup_steps=2
        )
        optimizer = optimizer_class(schedule, weight_decay=weight_decay)
        if weight_decay:
            optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        optimizer.build(model.trainable_variables)
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((images, labels)).repeat(steps)
    )

    @tf.function
    def step(batch):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                per_example = keras.losses.categorical_crossentropy(y, model(x, training=True))
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=8)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))

        strategy.run(replica_step, args=batch)

    for batch in dataset:
        step(batch)
    return [w.numpy() for w in model.weights]


def fell_back(*args):
    raise AssertionError("FusedAdam fell back to Keras's update")


@pytest.mark.parametrize("weight_decay", [None, 0.5])
@pytest.mark.parametrize("strategy_name", ["one_device", "mirrored"])
def test_fused_adam_updates_as_keras_adam_does(weight_decay, strategy_name, monkeypatch):
    def strategy():
        if strategy_name == "mirrored":
            # Not collective all-reduce: every MirroredStrategy of a process numbers its
            # collectives from the same keys, so another test's model of other shapes in this
            # worker process would clash with this one's. The update path is the same.
            return tf.distribute.MirroredStrategy(
                ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
            )
        return tf.distribute.OneDeviceStrategy("/cpu:0")

    with monkeypatch.context() as patch:
        patch.setattr(keras.optimizers.Adam, "update_step", fell_back)
        fused = train(FusedAdam, strategy(), weight_decay)
    reference = train(keras.optimizers.Adam, strategy(), weight_decay)
    initial = [w.numpy() for w in make_model(1).weights]
    for after, expected in zip(fused, reference, strict=True):
        np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-5)  # float rounding
    # The steps moved the weights: the comparison is of updates, not of untouched weights.
    assert any(not np.allclose(a, b) for a, b in zip(fused, initial, strict=True))


def test_fused_adam_keeps_keras_adams_checkpoint_variables():
    model = make_model(1)
    fused = FusedAdam(1e-3, name="fine_tune_adam")
    reference = keras.optimizers.Adam(1e-3, name="fine_tune_adam")
    fused.build(model.trainable_variables)
    reference.build(model.trainable_variables)
    assert [v.path for v in fused.variables] == [v.path for v in reference.variables]
