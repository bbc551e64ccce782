"""The end-of-training report in JOB_DIR/eval: metrics.json, the pictures (also shown in
TensorBoard's Images tab) and report.html."""

import json

import numpy as np
import tensorflow as tf

from objrec import contract, html_report
from trainer import evaluate, input_pipeline, plots


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


def write_html_report(
    job_dir: str,
    info: input_pipeline.DatasetInfo,
    predictions: evaluate.Predictions,
    metrics: dict,
    epochs: list[dict],
) -> str:
    """eval/report.html: the dataset, the curves, per-class figures, the confusion matrix,
    the most confused pairs and the top losses, on one self-contained page."""
    eval_dir = tf.io.gfile.join(job_dir, contract.EVAL_DIR)
    pictures = {
        name: read_bytes(tf.io.gfile.join(eval_dir, name))
        for name in contract.EVAL_PICTURES
        if tf.io.gfile.exists(tf.io.gfile.join(eval_dir, name))
    }
    split = metrics[contract.METRIC_SPLIT]
    facts = {
        "job directory": job_dir,
        f"{split} accuracy": f"{metrics[contract.METRIC_ACCURACY]:.4f} on "
        f"{metrics[contract.METRIC_NUM_EXAMPLES]} images",
        f"top-{metrics[contract.METRIC_TOP_K]} accuracy": (
            f"{metrics[contract.METRIC_TOP_K_ACCURACY]:.4f}"
        ),
        "macro precision / recall / F1": " / ".join(
            f"{metrics[key]:.4f}"
            for key in (
                contract.METRIC_PRECISION_MACRO,
                contract.METRIC_RECALL_MACRO,
                contract.METRIC_F1_MACRO,
            )
        ),  # fmt: skip
        "epochs trained": len(epochs),
    }
    curves = {k: v for k, v in pictures.items() if k == contract.TRAINING_CURVES_PICTURE}
    sections = [
        html_report.summary_section("objrec training report", facts),
        html_report.dataset_section(info.metadata, class_samples(info)),
        html_report.figures_section("Training curves", curves) if curves else "",
        html_report.per_class_section(metrics),
        html_report.confusion_section(metrics, pictures.get(contract.CONFUSION_MATRIX_PICTURE)),
        html_report.top_losses_section(
            top_loss_examples(predictions, metrics[contract.METRIC_LABELS]),
            f"The {split} images of highest loss: true class, prediction and its probability.",
        ),
    ]
    path = tf.io.gfile.join(eval_dir, contract.REPORT_FILE)
    with tf.io.gfile.GFile(path, "w") as file:
        file.write(html_report.page("objrec training report", sections))
    return path


def read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as file:
        return file.read()


def class_samples(
    info: input_pipeline.DatasetInfo, per_class: int = 4, max_records: int = 5000
) -> list[html_report.Example]:
    """The first few stored images of each class (the JPEGs as stored), read from train."""
    split = contract.TRAIN if info.has_split(contract.TRAIN) else next(iter(info.files))
    found: dict[int, list[bytes]] = {}
    records = tf.data.TFRecordDataset(info.files[split]).map(input_pipeline.parse_example)
    for encoded, label in records.take(max_records):
        label_id = int(label.numpy())
        found.setdefault(label_id, [])
        if len(found[label_id]) < per_class:
            found[label_id].append(encoded.numpy())
        if len(found) == info.num_classes and all(len(v) == per_class for v in found.values()):
            break
    return [
        html_report.Example(image, info.labels[label_id])
        for label_id in sorted(found)
        for image in found[label_id]
    ]


def top_loss_examples(
    predictions: evaluate.Predictions, labels: list[str]
) -> list[html_report.Example]:
    """The highest-loss evaluation images, captioned `true → predicted (probability)`."""
    examples = []
    for index, image in zip(predictions.top_loss_indices, predictions.top_loss_images, strict=True):
        true_id = int(predictions.true_ids[index])
        probabilities = predictions.probabilities[index]
        predicted = int(np.argmax(probabilities))
        pixels = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        caption = (f"{labels[true_id]} → {labels[predicted]} ({probabilities[predicted]:.2f}); "
                   f"p(true) {probabilities[true_id]:.2f}")  # fmt: skip
        examples.append(html_report.Example(tf.io.encode_png(pixels).numpy(), caption,
                                            wrong=predicted != true_id))  # fmt: skip
    return examples
