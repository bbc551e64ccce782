"""Classification metrics shared by the trainer's evaluation and the client's --evaluate."""

from collections.abc import Sequence

import numpy as np

from objrec import contract


def confusion_matrix(
    true_ids: np.ndarray, predicted_ids: np.ndarray, num_classes: int
) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true_ids), np.asarray(predicted_ids)), 1)
    return matrix


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(
        numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0
    )


def label_metrics(true_ids: np.ndarray, predicted_ids: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, macro and per-class precision/recall/F1, and the confusion matrix."""
    matrix = confusion_matrix(true_ids, predicted_ids, len(labels))
    true_positives = np.diag(matrix).astype(float)
    precision = _safe_divide(true_positives, matrix.sum(axis=0))
    recall = _safe_divide(true_positives, matrix.sum(axis=1))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    per_class = {
        label: {
            contract.METRIC_PRECISION: float(p),
            contract.METRIC_RECALL: float(r),
            contract.METRIC_F1: float(f),
            contract.METRIC_SUPPORT: int(s),
        }
        for label, p, r, f, s in zip(labels, precision, recall, f1, matrix.sum(axis=1), strict=True)
    }
    return {
        contract.METRIC_NUM_EXAMPLES: int(len(true_ids)),
        contract.METRIC_ACCURACY: float(np.mean(np.asarray(true_ids) == np.asarray(predicted_ids))),
        contract.METRIC_PRECISION_MACRO: float(precision.mean()),
        contract.METRIC_RECALL_MACRO: float(recall.mean()),
        contract.METRIC_F1_MACRO: float(f1.mean()),
        contract.METRIC_PER_CLASS: per_class,
        contract.METRIC_CONFUSION_MATRIX: matrix.tolist(),
        contract.METRIC_LABELS: list(labels),
    }


def score_predictions(true_labels: Sequence[str], predicted_labels: Sequence[str | None]) -> dict:
    """Metrics of predictions by class name (None: the model could not decode the image):
    `objrec-predict --evaluate` and the batch prediction job.

    Undecodable images count as misses in `accuracy`; the per-class figures and the
    confusion matrix cover the decoded images.
    """
    labels = sorted(set(true_labels) | {p for p in predicted_labels if p is not None})
    index = {label: i for i, label in enumerate(labels)}
    decoded = [(t, p) for t, p in zip(true_labels, predicted_labels, strict=True) if p]
    metrics = label_metrics([index[t] for t, _ in decoded], [index[p] for _, p in decoded], labels)
    metrics[contract.METRIC_ACCURACY] = sum(t == p for t, p in decoded) / len(true_labels)
    metrics[contract.METRIC_NUM_EXAMPLES] = len(true_labels)
    metrics[contract.METRIC_NUM_INVALID] = len(true_labels) - len(decoded)
    return metrics
