"""Accuracy of objrec's defaults on real photos, against two peers, and the transfer jump.

    python benchmarks/accuracy.py                      # the whole benchmark (about 80 min, 2 cores)
    python benchmarks/accuracy.py --quick              # a scaled-down look (about 10 min)
    python benchmarks/accuracy.py --only seed          # one part: seed or transfer

Fashion-MNIST from the Debian package `dataset-fashion-mnist` (28 x 28 product photos):

1. Seed scale: 600 training images per class (6,000 PNGs) go through the commands a user types,
   flags left at their defaults: `objrec-preprocess --image_size 32 --split
   train=0.9,validation=0.1` (the official test images are the test set, and the peers too
   hold out 10% for validation), `objrec-train --weights none`, then `objrec-serve` and
   `objrec-predict --evaluate` on the official test images (all 10,000; `--test_per_class`
   fewer). Side by side, on the same images:
   - the Keras guides' "simple MNIST convnet" (two conv blocks, 28 x 28 grey, 15 epochs);
   - a bare Keras `model.fit` of `keras.applications.ResNet50(weights=None)` at 32 x 32, Adam
     1e-3, flip/rotation/zoom layers, early stopping on 10% held out;
   - with `--lever FLAGS` (repeatable), objrec's defaults plus FLAGS: one lever's effect.
2. Transfer: an objrec job trained on classes 0-4 (1,000 per class), then classes 5-9 with
   about 50 training images per class (62 preprocessed, 80% train, 20% validation), trained
   `--weights none` and `--weights <that job>`; both scored through the served model on the
   official test images of classes 5-9.

Prints a table per part: accuracy and wall time of each system.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.task import prefer_onednn_kernels  # noqa: E402

# The kernels objrec-train picks, for the in-process peers too: the comparison is of the
# training, not of TensorFlow's kernel choice.
prefer_onednn_kernels()

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from objrec.testing import free_port  # noqa: E402
from preprocessing import sample_data  # noqa: E402

BIN = os.path.dirname(sys.executable)
QUIET = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def command(name: str, *args: str, log: str) -> None:
    """Runs an objrec console script as a user would; its output goes to `log`."""
    with open(log, "a") as out:
        subprocess.run([os.path.join(BIN, name), *args], check=True, stdout=out,
                       stderr=subprocess.STDOUT, env=QUIET)  # fmt: skip


def served_accuracy(job_dir: str, test_dir: str, log: str) -> float:
    """`objrec-serve` the job's export and `objrec-predict --evaluate` the test folder."""
    port = free_port()
    with open(log, "a") as out:
        server = subprocess.Popen(
            [os.path.join(BIN, "objrec-serve"), "--port", str(port), "--host", "127.0.0.1",
             "--model_name", "objrec",
             "--model_base_path", os.path.abspath(os.path.join(job_dir, "export", "objrec"))],
            stdout=out, stderr=subprocess.STDOUT, env=QUIET,
        )  # fmt: skip
    try:
        predict = [os.path.join(BIN, "objrec-predict"), "--server", f"127.0.0.1:{port}"]
        deadline = time.monotonic() + 300
        while subprocess.run([*predict, "--status"], capture_output=True, env=QUIET).returncode:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"objrec-serve did not start; see {log}")
            time.sleep(1)
        result = subprocess.run([*predict, "--json", "--evaluate", test_dir], check=True,
                                capture_output=True, text=True, env=QUIET)  # fmt: skip
        return json.loads(result.stdout)["accuracy"]
    finally:
        server.terminate()
        server.wait()


def objrec_job(images: str, work: str, name: str, train_flags: list[str], test_dir: str,
               preprocess_flags: list[str]) -> tuple[float, float]:  # fmt: skip
    """Preprocess, train, serve and evaluate; returns (served accuracy, wall seconds)."""
    log = os.path.join(work, f"{name}.log")
    dataset, job = os.path.join(work, f"{name}-dataset"), os.path.join(work, f"{name}-job")
    start = time.monotonic()
    command("objrec-preprocess", "--input", images, "--output", dataset, "--image_size", "32",
            *preprocess_flags, log=log)  # fmt: skip
    command("objrec-train", "--data_dir", dataset, "--job_dir", job, *train_flags, log=log)
    seconds = time.monotonic() - start
    return served_accuracy(job, test_dir, log), seconds


def load_folder(folder: str, size: int, rgb: bool) -> tuple[np.ndarray, np.ndarray]:
    """(images, class ids) of a class-folder tree, resized to `size` (float 0-255), in a fixed
    random order: Keras's validation_split holds out the last examples, which in folder order
    would be the last class alone."""
    images, labels = [], []
    for index, name in enumerate(sample_data.CLASS_NAMES):
        class_dir = os.path.join(folder, name)
        if not os.path.isdir(class_dir):
            continue
        for file_name in sorted(os.listdir(class_dir)):
            image = Image.open(os.path.join(class_dir, file_name)).convert("RGB" if rgb else "L")
            image = image.resize((size, size), Image.BILINEAR) if image.size[0] != size else image
            images.append(np.asarray(image, np.float32).reshape(size, size, -1))
            labels.append(index)
    order = np.random.default_rng(0).permutation(len(labels))
    return np.stack(images)[order], np.array(labels)[order]


def simple_convnet(train_dir: str, test_dir: str, quick: bool) -> tuple[float, float]:
    """keras.io/examples/vision/mnist_convnet, unchanged: 28 x 28 grey, batch 128, 15 epochs."""
    import keras

    start = time.monotonic()
    x, y = load_folder(train_dir, 28, rgb=False)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x / 255.0, keras.utils.to_categorical(y, 10), batch_size=128,
              epochs=3 if quick else 15, validation_split=0.1, verbose=0)  # fmt: skip
    seconds = time.monotonic() - start
    x_test, y_test = load_folder(test_dir, 28, rgb=False)
    predicted = model.predict(x_test / 255.0, verbose=0).argmax(-1)
    return float(np.mean(predicted == y_test)), seconds


def bare_keras_resnet50(train_dir: str, test_dir: str, quick: bool) -> tuple[float, float]:
    """keras.applications.ResNet50(weights=None) at 32 px: Adam 1e-3, flip/rotation/zoom,
    early stopping (patience 5, best weights) on 10% held out."""
    import keras

    start = time.monotonic()
    x, y = load_folder(train_dir, 32, rgb=True)
    augment = keras.Sequential([
        keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.03),
        keras.layers.RandomZoom(0.1),
    ])  # fmt: skip
    inputs = keras.Input((32, 32, 3))
    backbone = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    model = keras.Model(inputs, backbone(keras.applications.resnet50.preprocess_input(
        augment(inputs))))  # fmt: skip
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam(1e-3),
                  metrics=["accuracy"])  # fmt: skip
    stop = keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)
    model.fit(x, keras.utils.to_categorical(y, 10), batch_size=32, epochs=2 if quick else 40,
              validation_split=0.1, shuffle=True, callbacks=[stop], verbose=0)  # fmt: skip
    seconds = time.monotonic() - start
    x_test, y_test = load_folder(test_dir, 32, rgb=True)
    predicted = model.predict(x_test, verbose=0).argmax(-1)
    return float(np.mean(predicted == y_test)), seconds


def class_subset(source: str, target: str, classes: range) -> str:
    for index in classes:
        name = sample_data.CLASS_NAMES[index]
        shutil.copytree(os.path.join(source, name), os.path.join(target, name))
    return target


def print_table(title: str, rows: list[tuple[str, float, float]]) -> None:
    print(f"\n{title}\n{'system':<58} {'top-1':>7} {'wall':>8}")
    for name, accuracy, seconds in rows:
        print(f"{name:<58} {accuracy:>7.1%} {seconds:>7.0f}s", flush=True)


def seed_scale(work: str, args) -> None:
    train_dir, test_dir = os.path.join(work, "seed-train"), os.path.join(work, "seed-test")
    sample_data.write_sample_folder(train_dir, args.per_class)
    sample_data.write_sample_folder(test_dir, args.test_per_class, source="test")
    flags = ["--weights", "none", *args.train_flags]
    # The official test images are the test set: objrec holds out 10% for validation, as the
    # peers' validation_split, and trains on the same other 90%.
    split = ["--split", "train=0.9,validation=0.1"]
    rows = [("objrec defaults (--weights none), served", *objrec_job(
        train_dir, work, "seed", flags, test_dir, split))]  # fmt: skip
    for index, lever in enumerate(args.lever):
        # The same job with one setting changed: what that lever gives, side by side.
        extra = lever.split()
        name = f"seed-lever-{index}"
        rows.append((f"  same, {lever}", *objrec_job(
            train_dir, work, name, [*flags, *extra], test_dir, split)))  # fmt: skip
    if args.peers:
        rows.append(("Keras guides' simple MNIST convnet", *simple_convnet(train_dir, test_dir,
                                                                          args.quick)))  # fmt: skip
        rows.append(("bare Keras fit, ResNet50(weights=None) at 32 px",
                     *bare_keras_resnet50(train_dir, test_dir, args.quick)))  # fmt: skip
    print_table(f"seed scale: {args.per_class} train images per class, {args.test_per_class * 10} "
                "official test images", rows)  # fmt: skip


def transfer(work: str, args) -> None:
    everything = os.path.join(work, "pretrain-all")
    sample_data.write_sample_folder(everything, args.pretrain_per_class)
    source = class_subset(everything, os.path.join(work, "pretrain-0-4"), range(0, 5))
    target_all = os.path.join(work, "target-all")
    sample_data.write_sample_folder(target_all, args.target_per_class,
                                    offset=args.pretrain_per_class)  # fmt: skip
    target = class_subset(target_all, os.path.join(work, "target-5-9"), range(5, 10))
    test_all = os.path.join(work, "transfer-test-all")
    sample_data.write_sample_folder(test_all, args.test_per_class, source="test")
    test_dir = class_subset(test_all, os.path.join(work, "transfer-test-5-9"), range(5, 10))
    split = ["--split", "train=0.8,validation=0.2"]
    source_test = class_subset(test_all, os.path.join(work, "transfer-test-0-4"), range(0, 5))
    pretraining = objrec_job(source, work, "pretrain", ["--weights", "none", *args.train_flags],
                             source_test, [])  # fmt: skip
    rows = [("pretraining: classes 0-4, --weights none (scored on 0-4)", *pretraining)]
    pretrain_job = os.path.join(work, "pretrain-job")
    for name, weights in (("scratch", "none"), ("transfer", pretrain_job)):
        flags = ["--weights", weights, *args.train_flags]
        accuracy, seconds = objrec_job(target, work, f"target-{name}", flags, test_dir, split)
        shown = "--weights none" if name == "scratch" else "--weights <pretraining job>"
        rows.append((f"classes 5-9, {shown}", accuracy, seconds))
    print_table(f"transfer: classes 5-9 with ~{round(args.target_per_class * 0.8)} train images "
                f"per class, {args.test_per_class * 5} official test images", rows)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("seed", "transfer"), default=None)
    parser.add_argument("--quick", action="store_true",
                        help="100 per class, 3 objrec epochs: a look at the plumbing, "
                        "not the figures")  # fmt: skip
    parser.add_argument("--per_class", type=int, default=600)
    parser.add_argument("--test_per_class", type=int, default=1000,
                        help="official test images per class (1,000: all of them)")  # fmt: skip
    parser.add_argument("--lever", action="append", default=[],
                        help="seed scale: also train with these extra objrec-train flags, e.g. "
                        "--lever '--ema_momentum 0.999' (repeatable)")  # fmt: skip
    parser.add_argument(
        "--no_peers",
        dest="peers",
        action="store_false",
        help="seed scale: objrec only, without the two peers (about 17 min less)",
    )
    parser.add_argument("--pretrain_per_class", type=int, default=1000)
    parser.add_argument("--target_per_class", type=int, default=62)
    parser.add_argument("--work_dir", default=None, help="default: a new temporary directory")
    args = parser.parse_args()
    args.train_flags = []
    if args.quick:
        args.per_class, args.pretrain_per_class = 100, 100
        args.test_per_class = min(args.test_per_class, 100)
        args.train_flags = ["--fine_tune_epochs", "3", "--head_epochs", "0"]
    work = args.work_dir or tempfile.mkdtemp(prefix="objrec-accuracy-")
    os.makedirs(work, exist_ok=True)
    print(f"work directory (logs, datasets, jobs): {work}", flush=True)
    if args.only in (None, "seed"):
        seed_scale(work, args)
    if args.only in (None, "transfer"):
        transfer(work, args)


if __name__ == "__main__":
    main()
