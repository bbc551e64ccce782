"""`objrec-predict --evaluate`: accuracy of the served model on a labelled folder."""

import json
from collections.abc import Sequence

import tensorflow as tf

from objrec import contract, html_report
from objrec.metrics import score_predictions
from serving.client import image_files, progress
from serving.client.library import PredictionClient
from serving.values import Prediction


def labelled_files(folder: str) -> list[tuple[str, str]]:
    """(path, class name) for every image under `folder`'s class subfolders.

    Raises:
        FileNotFoundError: `folder` has no class subfolder with images.
    """
    pairs = []
    for name in sorted(tf.io.gfile.listdir(folder)):
        label = name.strip("/")
        class_dir = tf.io.gfile.join(folder, label)
        if label.startswith(".") or not tf.io.gfile.isdir(class_dir):
            continue
        pairs.extend((path, label) for path in image_files.images_under(class_dir))
    if not pairs:
        raise FileNotFoundError(
            f"--evaluate {folder}: no images in class subfolders (FOLDER/<class>/<image>)"
        )
    return pairs


def format_report(metrics: dict, folder: str) -> str:
    """Accuracy, per-class precision and recall, and the confusion matrix as text."""
    labels = metrics[contract.METRIC_LABELS]
    width = max(len(label) for label in labels)
    accuracy = metrics[contract.METRIC_ACCURACY]
    count, invalid = metrics[contract.METRIC_NUM_EXAMPLES], metrics[contract.METRIC_NUM_INVALID]
    lines = [
        f"{folder}: accuracy {accuracy:.4f} on {count} images ({invalid} not decodable)",
        f"{'class':<{width}}  precision  recall  support",
    ]
    for label in labels:
        row = metrics[contract.METRIC_PER_CLASS][label]
        precision, recall = row[contract.METRIC_PRECISION], row[contract.METRIC_RECALL]
        support = row[contract.METRIC_SUPPORT]
        lines.append(f"{label:<{width}}  {precision:9.3f}  {recall:6.3f}  {support:7d}")
    lines.append("confusion matrix (rows: true, columns: predicted, in the order above)")
    matrix = metrics[contract.METRIC_CONFUSION_MATRIX]
    lines.extend(" ".join(f"{cell:4d}" for cell in row) for row in matrix)
    return "\n".join(lines) + "\n"


def evaluate_folder(
    client: PredictionClient,
    folder: str,
    as_json: bool,
    show_progress: bool = False,
    report_path: str | None = None,
) -> str:
    """Predicts every labelled image through `client`; returns the report text, and writes
    the HTML page to `report_path` when given."""
    pairs = labelled_files(folder)
    chunk_size = client.batch_size * 8
    predictions = []
    with progress.progress_bar(len(pairs), "evaluating", show_progress) as advance:
        for start in range(0, len(pairs), chunk_size):
            chunk = pairs[start : start + chunk_size]
            predictions.extend(predict_chunk(client, chunk))
            advance(len(chunk))
    metrics = score_predictions([label for _, label in pairs], [p.label for p in predictions])
    if report_path:
        write_html_report(report_path, folder, client, pairs, predictions, metrics)
    return json.dumps(metrics) + "\n" if as_json else format_report(metrics, folder)


def predict_chunk(client: PredictionClient, chunk: list[tuple[str, str]]) -> list[Prediction]:
    """The served predictions of a chunk of (path, label) files, in order."""
    images = [image_files.read(path, client.request_budget()) for path, _ in chunk]
    unreadable = [image for image in images if image.data is None]
    if unreadable:
        raise OSError(f"cannot send {unreadable[0].path}: {unreadable[0].error}")
    return client.predict([image.data for image in images])


def write_html_report(
    path: str,
    folder: str,
    client: PredictionClient,
    pairs: Sequence[tuple[str, str]],
    predictions: Sequence[Prediction],
    metrics: dict,
    count: int = 12,
) -> None:
    """The served model's page: its figures on `folder`, and the most confidently wrong
    images (the client sees the top-k scores only, so confidence stands in for loss)."""
    wrong = sorted(
        (
            (prediction.score, image_path, label, prediction)
            for (image_path, label), prediction in zip(pairs, predictions, strict=True)
            if prediction.valid and prediction.label != label
        ),
        key=lambda item: -item[0],
    )[:count]
    examples = []
    for _, image_path, label, prediction in wrong:
        with tf.io.gfile.GFile(image_path, "rb") as file:
            caption = f"{label} → {prediction.label} ({prediction.score:.2f})"
            examples.append(html_report.Example(file.read(), caption, wrong=True))
    facts = {
        "server": client.server,
        "model": client.model_name,
        "folder": folder,
        "accuracy": f"{metrics[contract.METRIC_ACCURACY]:.4f} on "
        f"{metrics[contract.METRIC_NUM_EXAMPLES]} images "
        f"({metrics[contract.METRIC_NUM_INVALID]} not decodable)",
    }
    sections = [
        html_report.summary_section("objrec evaluation of a served model", facts),
        html_report.per_class_section(metrics),
        html_report.confusion_section(metrics),
        html_report.top_losses_section(
            examples, "The wrongly labelled images the model was surest of: true → predicted."
        ),
    ]
    with tf.io.gfile.GFile(path, "w") as file:
        file.write(html_report.page("objrec evaluation", sections))
