"""A training job from start to finish: checks, recipe, training, then evaluation and export.

`objrec-train` (trainer/task.py) parses the flags and calls `train_and_evaluate`. Every worker
of a cluster trains; the chief alone then evaluates the final weights on the held-out split,
writes the report and exports the SavedModel, in a non-distributed step.
"""

import logging
import math
import sys
import uuid

import tensorflow as tf

from objrec import contract
from trainer import (
    checkpoints,
    distribution,
    evaluate,
    input_pipeline,
    lineage,
    recipes,
    report,
    train,
)
from trainer import export as export_lib
from trainer import model as model_lib
from trainer.config import TrainConfig


def check_setup(config: TrainConfig, info: input_pipeline.DatasetInfo, replicas: int) -> None:
    """Errors a user can make, each reported before any training starts."""
    if not info.has_split(contract.TRAIN):
        raise input_pipeline.DatasetError(
            f"--data_dir {config.data_dir}: the train split has no examples; "
            "add images or lower the validation/test fractions of --split"
        )
    if config.batch_size < replicas or config.batch_size % replicas:
        suggestion = math.ceil(config.batch_size / replicas) * replicas
        raise ValueError(
            f"--batch_size {config.batch_size}: the global batch must be a multiple of the "
            f"{replicas} replicas; use {suggestion}"
        )
    if not train.plan_phases(config):
        raise ValueError("--head_epochs and --fine_tune_epochs are both 0: nothing to train")
    model_lib.check_weights(config.weights)


def check_job_dir_writable(job_dir: str) -> None:
    try:
        tf.io.gfile.makedirs(job_dir)
        # One probe per process: every worker of a cluster checks the same directory at once.
        probe = tf.io.gfile.join(job_dir, f".objrec-write-probe-{uuid.uuid4().hex}")
        with tf.io.gfile.GFile(probe, "w") as file:
            file.write("ok")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as error:
        raise ValueError(
            f"--job_dir {job_dir}: cannot write there ({error}); choose a writable directory"
        ) from error


def export_and_evaluate(
    config: TrainConfig,
    info: input_pipeline.DatasetInfo,
    watch: checkpoints.PreemptionWatch,
    epochs: list[dict],
) -> dict:
    """The non-distributed step after training: evaluate and export the final weights.

    A fresh float32 model (whatever the training precision) is restored from
    JOB_DIR/checkpoints, so the export is the same for every strategy. SIGTERM before the
    export is published exits 42 with nothing published; the rerun exports again.
    """

    def exit_if_preempted() -> None:
        if watch.received:
            logging.warning("SIGTERM received during the export: exiting before publishing")
            sys.exit(checkpoints.EXIT_PREEMPTED)

    model = checkpoints.restore_trained_model(config, info.num_classes)
    split = evaluate.evaluation_split(info)
    predictions = evaluate.predict_split(model, info, split, config)
    metrics = evaluate.classification_metrics(
        predictions.true_ids,
        predictions.probabilities,
        info.labels,
        contract.top_k_for(info.num_classes),
    )
    metrics[contract.METRIC_SPLIT] = split
    report.write_metrics(config.job_dir, metrics)
    report.draw_pictures(config.job_dir, config.resolved_log_dir, predictions, metrics, epochs)
    report.write_html_report(config.job_dir, info, predictions, metrics, epochs)
    export_dir = export_lib.export_model(model, config, info, before_publish=exit_if_preempted)
    lineage.report_to_hypertune(metrics[contract.METRIC_ACCURACY], global_step=len(epochs))
    logging.info(
        "%s accuracy %.4f on %d examples; exported %s",
        split,
        metrics[contract.METRIC_ACCURACY],
        metrics[contract.METRIC_NUM_EXAMPLES],
        export_dir,
    )
    return {
        "export_dir": export_dir,
        contract.METRIC_SPLIT: split,
        contract.METRIC_ACCURACY: metrics[contract.METRIC_ACCURACY],
        contract.METRIC_NUM_EXAMPLES: metrics[contract.METRIC_NUM_EXAMPLES],
    }


def train_and_evaluate(config: TrainConfig) -> dict:
    """Trains (or resumes), then the chief evaluates and exports. Returns a summary."""
    distribution.set_precision_policy(config.mixed_precision)
    strategy = distribution.create_strategy(config.strategy)
    info = input_pipeline.load_dataset_info(config.data_dir)
    config = recipes.resolve(config, info.image_size, info.num_examples.get(contract.TRAIN, 0))
    check_setup(config, info, strategy.num_replicas_in_sync)
    check_job_dir_writable(config.job_dir)
    chief = distribution.is_chief(strategy)
    if chief:
        with tf.io.gfile.GFile(tf.io.gfile.join(config.job_dir, contract.CONFIG_FILE), "w") as file:
            file.write(config.to_json())
        record = lineage.run_record(
            config, info, type(strategy).__name__, strategy.num_replicas_in_sync
        )
        lineage.write_json(tf.io.gfile.join(config.job_dir, contract.RUN_FILE), record)
    watch = checkpoints.PreemptionWatch()
    epochs = train.train(config, info, strategy, watch)
    if not chief:
        return {}
    return export_and_evaluate(config, info, watch, epochs)
