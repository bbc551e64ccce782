"""The pictures of eval/: training curves, confusion matrix, sample predictions."""

import io

import matplotlib

matplotlib.use("Agg")  # no display on training machines

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _save(figure, path: str):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    with tf.io.gfile.GFile(path, "wb") as file:
        file.write(buffer.getvalue())


def plot_training_curves(history: list[dict], path: str) -> None:
    """Accuracy and loss per epoch across both phases, the phase change marked."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, len(history) + 1)
    for axis, metric in zip(axes, ("accuracy", "loss"), strict=True):
        axis.plot(epochs, [e[metric] for e in history], "o-", label=f"training {metric}")
        if all(f"val_{metric}" in e for e in history):
            axis.plot(
                epochs, [e[f"val_{metric}"] for e in history], "o-", label=f"validation {metric}"
            )
        changes = [
            i + 0.5
            for i in range(1, len(history))
            if history[i]["phase"] != history[i - 1]["phase"]
        ]
        for change in changes:
            axis.axvline(change, color="grey", linestyle="--", label="fine-tuning starts")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.set_title(metric)
        axis.legend()
    _save(figure, path)


def plot_confusion_matrix(matrix: np.ndarray, labels: list[str], path: str) -> None:
    """Rows normalised to the true class's count, so each row reads as recall."""
    matrix = np.asarray(matrix, dtype=float)
    normalized = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5, 0.6 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(labels))
    axis.set_xticks(ticks, labels, rotation=45, ha="right")
    axis.set_yticks(ticks, labels)
    for row in range(len(labels)):
        for column in range(len(labels)):
            value = normalized[row, column]
            axis.text(
                column,
                row,
                f"{value:.2f}",
                ha="center",
                va="center",
                color="white" if value > 0.5 else "black",
                fontsize=8,
            )
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("confusion matrix (row-normalised)")
    _save(figure, path)


def plot_sample_predictions(
    images: np.ndarray,
    true_ids: np.ndarray,
    probabilities: np.ndarray,
    labels: list[str],
    path: str,
) -> None:
    """A grid of images with true and predicted labels; wrong predictions in red."""
    count = len(images)
    columns = min(6, count)
    rows = int(np.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, true_id, probs in zip(
        axes.flat, images, true_ids, probabilities, strict=False
    ):
        predicted = int(np.argmax(probs))
        axis.imshow(np.clip(image, 0, 255).astype(np.uint8))
        color = "green" if predicted == true_id else "red"
        axis.set_title(
            f"true: {labels[true_id]}\npred: {labels[predicted]} ({probs[predicted]:.2f})",
            color=color,
            fontsize=8,
        )
    _save(figure, path)
