"""run.json: what produced a model (flags, code version, dataset), for the job and the export."""

import dataclasses
import json
import os
import subprocess

import keras
import tensorflow as tf

import objrec
from objrec import contract
from trainer import model as model_lib
from trainer import recipes
from trainer.config import TrainConfig
from trainer.input_pipeline import DatasetInfo


def source_commit() -> str | None:
    """The git commit of this code: OBJREC_SOURCE_COMMIT (set by image builds), else git."""
    if os.environ.get("OBJREC_SOURCE_COMMIT"):
        return os.environ["OBJREC_SOURCE_COMMIT"]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def run_record(config: TrainConfig, info: DatasetInfo, strategy_name: str, replicas: int) -> dict:
    """Every resolved flag, the code's version and commit, and the dataset's identity."""
    return {
        "objrec_version": objrec.__version__,
        "source_commit": source_commit(),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "config": dataclasses.asdict(config),
        "backbone": model_lib.BACKBONE_NAME,
        "recipe": recipes.recipe_name(config),
        "strategy": strategy_name,
        "replicas": replicas,
        "dataset": {
            "data_dir": info.data_dir,
            "metadata_sha256": info.metadata_sha256,
            "labels": list(info.labels),
            "num_examples": info.num_examples,
            "image_size": info.image_size,
            "resize_mode": info.resize_mode,
        },
    }


def write_json(path: str, record: dict) -> None:
    with tf.io.gfile.GFile(path, "w") as file:
        json.dump(record, file, indent=2, sort_keys=True)


def copy_into_export(job_dir: str, info: DatasetInfo, export_dir: str) -> None:
    """assets.extra/ of the export: run.json and labels.txt travel with the model."""
    extra = tf.io.gfile.join(export_dir, contract.ASSETS_EXTRA_DIR)
    tf.io.gfile.makedirs(extra)
    tf.io.gfile.copy(
        tf.io.gfile.join(job_dir, contract.RUN_FILE),
        tf.io.gfile.join(extra, contract.RUN_FILE),
        overwrite=True,
    )
    with tf.io.gfile.GFile(tf.io.gfile.join(extra, contract.LABELS_FILE), "w") as file:
        file.write("\n".join(info.labels) + "\n")


def report_to_hypertune(metric_value: float, global_step: int, tag: str = "accuracy") -> bool:
    """Reports the final metric to Vertex AI hyperparameter tuning when cloudml-hypertune is
    installed (it is in the training image); returns whether it was reported."""
    try:
        import hypertune  # noqa: PLC0415
    except ImportError:
        return False
    hypertune.HyperTune().report_hyperparameter_tuning_metric(
        hyperparameter_metric_tag=tag, metric_value=metric_value, global_step=global_step
    )
    return True
