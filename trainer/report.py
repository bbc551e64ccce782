"""The end-of-training report in JOB_DIR/eval: metrics.json and the pictures, also shown in
TensorBoard's Images tab."""

import json

import tensorflow as tf

from objrec import contract
from trainer import (
    evaluate,
    plots,
)


def write_metrics(job_dir: str, metrics: dict) -> str:
    eval_dir = tf.io.gfile.join(job_dir, contract.EVAL_DIR)
    tf.io.gfile.makedirs(eval_dir)
    path = tf.io.gfile.join(eval_dir, contract.METRICS_FILE)
    with tf.io.gfile.GFile(path, "w") as file:
        json.dump(metrics, file, indent=2)
    return path


def draw_pictures(
    job_dir: str, log_dir: str, predictions: evaluate.Predictions, metrics: dict, epochs: list[dict]
) -> None:
    """eval/training_curves.png, confusion_matrix.png and sample_predictions.png, also shown
    in TensorBoard's Images tab."""
    eval_dir = tf.io.gfile.join(job_dir, contract.EVAL_DIR)
    if epochs:
        plots.plot_training_curves(
            epochs, tf.io.gfile.join(eval_dir, contract.TRAINING_CURVES_PICTURE)
        )
    plots.plot_confusion_matrix(
        metrics[contract.METRIC_CONFUSION_MATRIX],
        metrics[contract.METRIC_LABELS],
        tf.io.gfile.join(eval_dir, contract.CONFUSION_MATRIX_PICTURE),
    )
    count = len(predictions.sample_images)
    plots.plot_sample_predictions(
        predictions.sample_images,
        predictions.true_ids[:count],
        predictions.probabilities[:count],
        metrics[contract.METRIC_LABELS],
        tf.io.gfile.join(eval_dir, contract.SAMPLE_PREDICTIONS_PICTURE),
    )
    with tf.summary.create_file_writer(log_dir).as_default(step=0):
        for name in contract.EVAL_PICTURES:
            path = tf.io.gfile.join(eval_dir, name)
            if tf.io.gfile.exists(path):
                png = tf.io.decode_png(tf.io.read_file(path), channels=3)
                tf.summary.image(f"eval/{name.removesuffix('.png')}", png[tf.newaxis])
