"""Evaluation of a trained model on a held-out split: the numbers of eval/metrics.json."""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from objrec import contract
from objrec.metrics import label_metrics
from objrec.savedmodel import signatures
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
    top_loss_indices: np.ndarray  # the `num_top_losses` highest-loss examples, highest first
    top_loss_images: np.ndarray  # their evaluation inputs


def predict_split(
    model: keras.Model,
    info: input_pipeline.DatasetInfo,
    split: str,
    config: TrainConfig,
    num_samples: int = 18,
    num_top_losses: int = 12,
) -> Predictions:
    """Runs the model over every record of a split, in evaluation's view; keeps the first
    images and those of the highest losses (memory bounded by those counts)."""
    dataset = input_pipeline.make_eval_dataset(info, split, config)
    predict = tf.function(
        lambda images: signatures.predict_probabilities(model, images, config.test_time_flip)
    )
    true_ids, probabilities, samples = [], [], []
    top = TopLosses(num_top_losses)
    for images, labels, weights in dataset:
        real = weights.numpy() > 0
        batch_images, batch_probabilities = images.numpy()[real], predict(images).numpy()[real]
        batch_ids = np.argmax(labels.numpy(), axis=-1)[real]
        top.add(sum(len(ids) for ids in true_ids), batch_images, batch_probabilities, batch_ids)
        probabilities.append(batch_probabilities)
        true_ids.append(batch_ids)
        if sum(len(s) for s in samples) < num_samples:
            samples.append(batch_images)
    return Predictions(
        true_ids=np.concatenate(true_ids),
        probabilities=np.concatenate(probabilities),
        sample_images=np.concatenate(samples)[:num_samples],
        top_loss_indices=top.indices,
        top_loss_images=top.images,
    )


class TopLosses:
    """The `count` examples of highest cross-entropy seen so far, with their images."""

    def __init__(self, count: int):
        self.count = count
        self.losses = np.zeros([0])
        self.indices = np.zeros([0], np.int64)
        self.images = None

    def add(self, first_index: int, images: np.ndarray, probabilities: np.ndarray,
            true_ids: np.ndarray) -> None:  # fmt: skip
        chosen = probabilities[np.arange(len(true_ids)), true_ids]
        losses = np.concatenate([self.losses, -np.log(np.maximum(chosen, 1e-12))])
        indices = np.concatenate([self.indices, first_index + np.arange(len(true_ids))])
        pool = images if self.images is None else np.concatenate([self.images, images])
        keep = np.argsort(-losses, kind="stable")[: self.count]
        self.losses, self.indices, self.images = losses[keep], indices[keep], pool[keep]


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
