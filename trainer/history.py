"""Per-epoch metrics: JOB_DIR/eval/history.json, the log line of each epoch, TensorBoard."""

import json
import sys

import keras
import tensorflow as tf

from objrec import contract


class History:
    """Per-epoch metrics across both phases, kept in eval/history.json by the chief."""

    def __init__(self, job_dir: str, enabled: bool):
        self.directory = tf.io.gfile.join(job_dir, contract.EVAL_DIR)
        self.path = tf.io.gfile.join(self.directory, contract.HISTORY_FILE)
        self.enabled = enabled
        self.epochs = []
        if enabled and tf.io.gfile.exists(self.path):
            with tf.io.gfile.GFile(self.path) as file:
                self.epochs = json.load(file)

    def keep_until(self, phase: int, epoch: int) -> None:
        """Drops epochs the restored checkpoint does not include (written after it)."""
        self.epochs = [e for e in self.epochs if (e["phase_index"], e["epoch"]) < (phase, epoch)]

    def add(self, record: dict) -> None:
        self.epochs.append(record)
        if self.enabled:
            tf.io.gfile.makedirs(self.directory)
            with tf.io.gfile.GFile(self.path, "w") as file:
                json.dump(self.epochs, file, indent=1)


def progress_bar(steps: int, verbose: str, chief: bool) -> keras.utils.Progbar | None:
    """Keras's progress bar over an epoch's steps: with --verbose 1, or auto on a terminal
    (not in a pod's log, where a line per epoch says enough). The chief's only."""
    shown = verbose == "1" or (verbose == "auto" and sys.stdout.isatty())
    if not (chief and shown):
        return None
    return keras.utils.Progbar(steps, stateful_metrics=["loss", "images/s"])


def summary_writer(log_dir: str, chief: bool) -> tf.summary.SummaryWriter:
    if chief:
        return tf.summary.create_file_writer(log_dir)
    return tf.summary.create_noop_writer()


def epoch_line(record: dict, epochs: int, seconds: float) -> str:
    """`fine_tune epoch 3/20 (41 s): loss 0.612 accuracy 0.801 val_loss 0.55 ...`."""
    metrics = " ".join(
        f"{key} {record[key]:.4g}"
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
        if key in record
    )
    return f"{record['phase']} epoch {record['epoch'] + 1}/{epochs} ({seconds:.0f} s): {metrics}"


def write_scalars(writer: tf.summary.SummaryWriter, record: dict, step: int) -> None:
    with writer.as_default(step=step):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
            if key in record:
                tf.summary.scalar(f"{record['phase']}/{key}", record[key])
