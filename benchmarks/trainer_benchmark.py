"""Trainer throughput on this machine's CPU: the input pipeline, objrec's loop, a bare Keras fit.

    python benchmarks/trainer_benchmark.py [--per_class 540] [--sizes 32 64] [--steps 60]
        [--input_size 32] [--batch_size 32] [--rounds 3]

Uses real images (Fashion-MNIST sample folders through the real Beam job), then for each model
input size prints images/s of
  (a) the tf.data training pipeline alone (read, decode, augment, batch: no model);
  (b) objrec's training loop (the real multi-step train function, pipeline included), at
      `--steps_per_execution` 1 and at the default, and at the default with Keras's own Adam
      in place of objrec's fused update (`trainer/fused_adam.py`), and with Keras's
      convolutions in place of the matrix products (`--convolutions keras`,
      `trainer/matmul_convolutions.py`), and with Keras's BatchNormalization in place of the
      fused kernel (`--batchnorm keras`, `trainer/fused_batchnorm.py`);
  (c) a bare Keras `model.fit` of the same ResNet50 (Adam, categorical cross-entropy) on the
      same pipeline, Keras's default `steps_per_execution` of 1;
and the ratios pipeline / objrec (the pipeline must never be the bottleneck: >= 3), objrec /
Keras (target >= 1.0), fused / Keras's Adam, matmul / Keras's convolutions and fused /
Keras's BatchNormalization in objrec's loop. Every column computes in the precision
`--mixed_precision auto` picks (bfloat16 on a CPU with bfloat16 instructions). The machine is
noisy (the same loop varies by a third from one minute to the next), so every trainer is built
first and they then take turns: `--rounds` rounds of `--steps` steps each, and each column is
the median of its rounds. `--sizes` are the stored sizes; the model input is the recipe's for
each (64 for images stored at up to 64 pixels) unless `--input_size` sets it.
"""

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.task import prefer_onednn_kernels  # noqa: E402

# The kernels objrec-train picks, for the in-process peers too: the comparison is of the
# training, not of TensorFlow's kernel choice.
prefer_onednn_kernels()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from preprocessing import pipeline, sample_data  # noqa: E402
from trainer import (  # noqa: E402
    distribution,
    fused_adam,
    input_pipeline,
    recipes,
    train,
)
from trainer import model as model_lib  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402


def make_dataset(work_dir: str, per_class: int, image_size: int) -> str:
    images = os.path.join(work_dir, "images")
    sample_data.write_sample_folder(images, per_class)
    data_dir = os.path.join(work_dir, f"dataset-{image_size}")
    pipeline.run(["--input", images, "--output", data_dir, "--image_size", str(image_size)])
    return data_dir


def input_images_per_second(info, config: TrainConfig, batches: int) -> float:
    """Batches of the real training pipeline, consumed as fast as it produces them."""
    iterator = iter(input_pipeline.make_train_dataset(info, config))
    for _ in range(5):  # warm-up: file opening, AUTOTUNE
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * config.batch_size / (time.perf_counter() - start)


def objrec_trainer(info, config: TrainConfig, steps: int) -> Callable[[], float]:
    """objrec's train function (ResNet50, one device), fed by the real pipeline: a function
    that runs `steps` steps and returns their images/s."""
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = model_lib.build_model(info.num_classes, config.input_size, "none")
        train.prepare_layers(model, config)
        variables = model_lib.set_phase_trainable(model, "fine_tune", "all")
        phase = train.Phase("fine_tune", 1, 1e-3)
        optimizer = train.make_optimizer(phase, steps, config, variables)
    train_function = train.make_train_step(model, optimizer, variables, strategy, config)
    data = iter(
        strategy.distribute_datasets_from_function(
            lambda context: input_pipeline.make_train_dataset(info, config, context)
        )
    )
    per_call = tf.constant(config.steps_per_execution)
    not_preempted = tf.constant(0.0)
    float(train_function(data, per_call, not_preempted)[0])  # warm-up: tracing
    calls = max(1, steps // config.steps_per_execution)

    def images_per_second() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            loss, _, _ = train_function(data, per_call, not_preempted)
        float(loss)  # wait for the last call
        return (
            calls * config.steps_per_execution * config.batch_size / (time.perf_counter() - start)
        )

    return images_per_second


class _Timer(keras.callbacks.Callback):
    """Times the batches after the first (the data's start)."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def keras_trainer(info, config: TrainConfig, steps: int) -> Callable[[], float]:
    """A bare `model.fit` of keras.applications.ResNet50 on the same pipeline."""
    model = keras.applications.ResNet50(
        weights=None, input_shape=(config.input_size, config.input_size, 3),
        classes=info.num_classes,
    )  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    data = input_pipeline.make_train_dataset(info, config)
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # warm-up: tracing

    def images_per_second() -> float:
        timer = _Timer()
        model.fit(data, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[timer])
        return steps * config.batch_size / (timer.end - timer.start)

    return images_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per_class", type=int, default=540)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--input_size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work_dir = tempfile.mkdtemp(prefix="objrec-bench-")
    policy = distribution.set_precision_policy("auto")
    print(f"precision policy {policy}; batches of {args.batch_size}; images/s")
    print(
        f"{'stored':>6} {'input':>6} {'pipeline':>9} {'objrec x1':>10} {'objrec':>8} "
        f"{'Keras Adam':>11} {'Keras convs':>12} {'Keras BN':>9} {'keras fit':>10} "
        f"{'pipe/objrec':>12} {'objrec/keras':>13} {'fused gain':>11} {'matmul gain':>12} "
        f"{'BN gain':>8}"
    )
    for size in args.sizes:
        data_dir = make_dataset(work_dir, args.per_class, image_size=size)
        info = input_pipeline.load_dataset_info(data_dir)
        config = recipes.resolve(
            TrainConfig(data_dir=data_dir, job_dir=work_dir, batch_size=args.batch_size,
                        weights="none", input_size=args.input_size),
            info.image_size,
        )  # fmt: skip
        pipeline_rate = input_images_per_second(info, config, batches=args.steps * 4)
        # objrec's loop with Keras's own Adam: what the fused update gains.
        with mock.patch.object(fused_adam, "FusedAdam", keras.optimizers.Adam):
            unfused = objrec_trainer(info, config, args.steps)
        trainers = {
            "objrec x1": objrec_trainer(
                info, dataclasses.replace(config, steps_per_execution=1), args.steps
            ),
            "objrec": objrec_trainer(info, config, args.steps),
            "Keras Adam": unfused,
            # And with Keras's convolutions: what the matrix products gain.
            "Keras convs": objrec_trainer(
                info, dataclasses.replace(config, convolutions="keras"), args.steps
            ),
            # And with Keras's BatchNormalization: what the fused kernel gains.
            "Keras BN": objrec_trainer(
                info, dataclasses.replace(config, batchnorm="keras"), args.steps
            ),
            "keras fit": keras_trainer(info, config, args.steps),
        }
        rates = {name: [] for name in trainers}
        for _ in range(args.rounds):
            for name, images_per_second in trainers.items():
                rates[name].append(images_per_second())
        median = {name: statistics.median(values) for name, values in rates.items()}
        objrec_rate, keras_rate = median["objrec"], median["keras fit"]
        objrec_single, unfused_rate = median["objrec x1"], median["Keras Adam"]
        convolution_rate = median["Keras convs"]
        batchnorm_rate = median["Keras BN"]
        print(
            f"{size:>6} {config.input_size:>6} {pipeline_rate:>9.0f} {objrec_single:>10.1f} "
            f"{objrec_rate:>8.1f} {unfused_rate:>11.1f} {convolution_rate:>12.1f} "
            f"{batchnorm_rate:>9.1f} {keras_rate:>10.1f} {pipeline_rate / objrec_rate:>12.1f} "
            f"{objrec_rate / keras_rate:>13.2f} {objrec_rate / unfused_rate:>11.2f} "
            f"{objrec_rate / convolution_rate:>12.2f} {objrec_rate / batchnorm_rate:>8.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
