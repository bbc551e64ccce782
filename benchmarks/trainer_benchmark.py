"""Trainer throughput on this machine's CPU: the input pipeline alone versus training.

    python benchmarks/trainer_benchmark.py [--per_class 100] [--sizes 32 64]

Uses real images (Fashion-MNIST sample folders through the real Beam job), then for each model
input size prints images/s of (a) the tf.data training pipeline alone (read, decode, augment,
batch: no model) and (b) training steps of ResNet50 (the real train step, pipeline included),
and their ratio. The input pipeline must never be the bottleneck: ratio >= 3.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from preprocessing import pipeline, sample_data  # noqa: E402
from trainer import input_pipeline, train  # noqa: E402
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


def training_images_per_second(info, config: TrainConfig, steps: int) -> float:
    """The real train step (ResNet50, one device), fed by the real pipeline."""
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = model_lib.build_model(info.num_classes, config.input_size, "none")
        variables = model_lib.set_phase_trainable(model, "fine_tune", "all")
        phase = train.Phase("fine_tune", 1, 1e-3)
        optimizer = train.make_optimizer(phase, steps, config, variables)
    step = train.make_train_step(model, optimizer, variables, strategy, config)
    data = iter(
        strategy.distribute_datasets_from_function(
            lambda context: input_pipeline.make_train_dataset(info, config, context)
        )
    )
    not_preempted = tf.constant(0.0)
    for _ in range(3):  # warm-up: tracing
        step(next(data), not_preempted)
    start = time.perf_counter()
    for _ in range(steps):
        loss, _, _ = step(next(data), not_preempted)
    float(loss)  # wait for the last step
    return steps * config.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    work_dir = tempfile.mkdtemp(prefix="objrec-bench-")
    print(f"{'input':>6} {'pipeline img/s':>15} {'training img/s':>15} {'ratio':>7}")
    for size in args.sizes:
        # Stored 8/7 of the input, as the default 256 -> 224 does.
        data_dir = make_dataset(work_dir, args.per_class, image_size=round(size * 8 / 7))
        info = input_pipeline.load_dataset_info(data_dir)
        config = TrainConfig(
            data_dir=data_dir,
            job_dir=work_dir,
            input_size=size,
            batch_size=args.batch_size,
            weights="none",
        )
        pipeline_rate = input_images_per_second(info, config, batches=args.steps * 10)
        training_rate = training_images_per_second(info, config, steps=args.steps)
        print(
            f"{size:>6} {pipeline_rate:>15.0f} {training_rate:>15.1f} "
            f"{pipeline_rate / training_rate:>7.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
