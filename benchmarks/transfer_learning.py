"""Transfer learning, shown on real data without ImageNet: pretrain, then fine-tune.

    python benchmarks/transfer_learning.py [--pretrain_per_class 400] [--target_per_class 120]

1. Trains ResNet50 from scratch on Fashion-MNIST classes 0-4 (T-shirt .. Coat), and saves its
   backbone as a Keras weights file: the stand-in for ImageNet weights.
2. On classes 5-9 (Sandal .. Ankle boot), with few images (40% of 120 per class for training,
   50% held out for the test), trains twice for the same epochs and images: `--weights PATH`
   (head with the backbone frozen, then fine-tuning) and `--weights none` (from scratch), and
   prints both test accuracies.
"""

import argparse
import json
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from preprocessing import pipeline, sample_data  # noqa: E402
from trainer import checkpoints, input_pipeline, job  # noqa: E402
from trainer import flags as train_flags  # noqa: E402
from trainer import model as model_lib  # noqa: E402

COMMON_FLAGS = ["--input_size", "32", "--batch_size", "32", "--early_stopping_patience", "0"]


def class_folder(work_dir: str, name: str, per_class: int, classes: range) -> str:
    """A Fashion-MNIST sample folder holding only `classes`."""
    everything = os.path.join(work_dir, f"all-{per_class}")
    sample_data.write_sample_folder(everything, per_class)
    folder = os.path.join(work_dir, name)
    for index in classes:
        label = sample_data.CLASS_NAMES[index]
        shutil.copytree(os.path.join(everything, label), os.path.join(folder, label))
    return folder


def preprocess(images: str, split: str = "train=0.8,validation=0.1,test=0.1") -> str:
    data_dir = images + "-dataset"
    pipeline.run(["--input", images, "--output", data_dir, "--image_size", "36", "--split", split])
    return data_dir


def train_job(data_dir: str, job_dir: str, flags: list[str]) -> dict:
    config = train_flags.parse_flags(
        ["--data_dir", data_dir, "--job_dir", job_dir, *COMMON_FLAGS, *flags]
    )
    job.train_and_evaluate(config)
    with open(os.path.join(job_dir, "eval", "metrics.json")) as file:
        return json.load(file)


def save_backbone(job_dir: str, data_dir: str, path: str) -> str:
    """The trained backbone of a job, as a weights file `--weights` accepts."""
    info = input_pipeline.load_dataset_info(data_dir)
    model = model_lib.build_model(info.num_classes, 32, "none")
    tf.train.Checkpoint(model=model).read(checkpoints.final_weights_path(job_dir)).expect_partial()
    model_lib.backbone_of(model).save_weights(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain_per_class", type=int, default=400)
    parser.add_argument("--pretrain_epochs", type=int, default=8)
    parser.add_argument("--target_per_class", type=int, default=120)
    parser.add_argument("--head_epochs", type=int, default=3)
    parser.add_argument("--fine_tune_epochs", type=int, default=5)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="objrec-transfer-")

    source = preprocess(class_folder(work, "source", args.pretrain_per_class, range(0, 5)))
    source_metrics = train_job(
        source,
        os.path.join(work, "source-job"),
        [
            "--weights",
            "none",
            "--head_epochs",
            "0",
            "--fine_tune_from",
            "all",
            "--fine_tune_epochs",
            str(args.pretrain_epochs),
            "--fine_tune_learning_rate",
            "1e-3",
        ],
    )
    weights = save_backbone(
        os.path.join(work, "source-job"), source, os.path.join(work, "backbone.weights.h5")
    )

    # Few training images, many test images: the comparison is about small target datasets.
    target = preprocess(
        class_folder(work, "target", args.target_per_class, range(5, 10)),
        split="train=0.4,validation=0.1,test=0.5",
    )
    epochs = args.head_epochs + args.fine_tune_epochs
    transferred = train_job(
        target,
        os.path.join(work, "transfer-job"),
        [
            "--weights",
            weights,
            "--head_epochs",
            str(args.head_epochs),
            "--learning_rate",
            "1e-3",
            "--fine_tune_epochs",
            str(args.fine_tune_epochs),
            "--fine_tune_from",
            "conv4_block1",
            "--fine_tune_learning_rate",
            "1e-4",
        ],
    )
    scratch = train_job(
        target,
        os.path.join(work, "scratch-job"),
        [
            "--weights",
            "none",
            "--head_epochs",
            "0",
            "--fine_tune_from",
            "all",
            "--fine_tune_epochs",
            str(epochs),
            "--fine_tune_learning_rate",
            "1e-3",
        ],
    )

    print(
        f"source task (classes 0-4, {args.pretrain_per_class}/class, "
        f"{args.pretrain_epochs} epochs): test accuracy {source_metrics['accuracy']:.3f}"
    )
    print(f"target task (classes 5-9, {args.target_per_class}/class, {epochs} epochs each):")
    print(
        f"  transfer (--weights backbone, frozen then fine-tuned): "
        f"{transferred['accuracy']:.3f} on {transferred['num_examples']} test images"
    )
    print(
        f"  from scratch (--weights none):                         "
        f"{scratch['accuracy']:.3f} on {scratch['num_examples']} test images"
    )


if __name__ == "__main__":
    main()
