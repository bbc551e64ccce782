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
