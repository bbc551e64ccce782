"""Evaluation of a trained model on a held-out split: the numbers of eval/metrics.json."""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from objrec import contract
from objrec.metrics import label_metrics
from trainer import (
    input_pipeline,
)
from trainer.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Predictions:
    """A split's predictions: true ids [n], probabilities [n, classes], first images."""

    true_ids: np.ndarray
    probabilities: np.ndarray
    sample_images: np.ndarray  # the first `num_samples` evaluation inputs, for the pictures


def predict_split(
    model: keras.Model,
    info: input_pipeline.DatasetInfo,
    split: str,
    config: TrainConfig,
    num_samples: int = 18,
) -> Predictions:
    """Runs the model over every record of a split, in evaluation's view."""
    dataset = input_pipeline.make_eval_dataset(info, split, config)
    predict = tf.function(lambda images: model(images, training=False))
    true_ids, probabilities, samples = [], [], []
    for images, labels, weights in dataset:
        real = weights.numpy() > 0
        probabilities.append(predict(images).numpy()[real])
        true_ids.append(np.argmax(labels.numpy(), axis=-1)[real])
        if sum(len(s) for s in samples) < num_samples:
            samples.append(images.numpy()[real])
    return Predictions(
        true_ids=np.concatenate(true_ids),
        probabilities=np.concatenate(probabilities),
        sample_images=np.concatenate(samples)[:num_samples],
    )


def classification_metrics(
    true_ids: np.ndarray, probabilities: np.ndarray, labels: tuple[str, ...], top_k: int
) -> dict:
    """Accuracy, top-k accuracy, macro and per-class precision/recall/F1, confusion matrix."""
    metrics = label_metrics(true_ids, np.argmax(probabilities, axis=-1), labels)
    top_k_ids = np.argsort(-probabilities, axis=-1)[:, :top_k]
    metrics[contract.METRIC_TOP_K] = top_k
    metrics[contract.METRIC_TOP_K_ACCURACY] = float(
        np.mean(np.any(top_k_ids == true_ids[:, None], axis=-1))
    )
    return metrics


def evaluation_split(info: input_pipeline.DatasetInfo) -> str:
    """The test split, or validation when the dataset has no test examples."""
    for split in (contract.TEST, contract.VALIDATION):
        if info.has_split(split):
            return split
    raise input_pipeline.DatasetError(
        f"--data_dir {info.data_dir}: no test or validation examples to evaluate on; "
        "preprocess with a --split that holds some out"
    )
