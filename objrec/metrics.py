"""Classification metrics shared by the trainer's evaluation and the client's --evaluate."""

from collections.abc import Sequence

import numpy as np


def confusion_matrix(true_ids: np.ndarray, predicted_ids: np.ndarray, num_classes: int):
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
    return {
        "num_examples": int(len(true_ids)),
        "accuracy": float(np.mean(np.asarray(true_ids) == np.asarray(predicted_ids))),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(
                labels, precision, recall, f1, matrix.sum(axis=1), strict=True
            )
        },
        "confusion_matrix": matrix.tolist(),
        "labels": list(labels),
    }
