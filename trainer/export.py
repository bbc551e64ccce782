"""Exports a trained model: the thin entry point over `objrec.savedmodel`.

Training exports at its end. To export a finished job's weights again without training (a
new integer version; an existing version is never overwritten), e.g. with another pixel limit:

    python -m trainer.export --job_dir work/job [--max_pixels 20000000]
    python -m trainer.export --job_dir gs://BUCKET/jobs/run-1
"""

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from objrec import contract
from objrec.flags import parse_bool
from objrec.savedmodel import signatures, versions, warmup
from trainer import checkpoints, input_pipeline, lineage
from trainer.config import TrainConfig

# Warmup requests replay at batch size 1 and at every batch size server-side batching runs
# in k8s/ (max_batch_size and allowed_batch_sizes of k8s/base/tf-serving/batching.config and
# of the gpu overlay's), so no first request pays for a new shape.
WARMUP_BATCH_SIZES = (1, 8, 16, 32, 64)


def warmup_images(info: input_pipeline.DatasetInfo, count: int) -> list[bytes]:
    """Encoded images of real validation (else train) records, repeated up to `count`."""
    split = contract.VALIDATION if info.has_split(contract.VALIDATION) else contract.TRAIN
    records = tf.data.TFRecordDataset(info.files[split]).map(input_pipeline.parse_example)
    images = [encoded.numpy() for encoded, _ in records.take(count)]
    return [images[i % len(images)] for i in range(count)]


def write_warmup_requests(
    export_dir: str, info: input_pipeline.DatasetInfo, model_name: str
) -> str:
    """assets.extra/tf_serving_warmup_requests: one Predict per warmup batch size."""
    images = warmup_images(info, max(WARMUP_BATCH_SIZES))
    logs = [warmup.predict_log(images[:size], model_name) for size in WARMUP_BATCH_SIZES]
    return warmup.write_warmup_file(export_dir, logs)


def export_model(
    model: keras.Model,
    config: TrainConfig,
    info: input_pipeline.DatasetInfo,
    before_publish: Callable[[], None] | None = None,
) -> str:
    """Exports to JOB_DIR/export/MODEL_NAME/<next version>/ with warmup and lineage.

    TF Serving polls the base path and must never load a half-written integer version, so
    everything is written to a staging directory (a name it ignores) and then published.
    `before_publish` runs between the two (the trainer exits there on SIGTERM).
    """
    functions = signatures.ServingFunctions(
        model,
        info.labels,
        info.image_size,
        info.resize_mode,
        config.input_size,
        config.max_pixels,
        info.jpeg_quality,
        flip_average=config.test_time_flip,
    )
    model_base_path = tf.io.gfile.join(config.job_dir, contract.EXPORT_DIR, config.model_name)
    versions.remove_unfinished_exports(model_base_path)
    staging = versions.staging_path(model_base_path)
    signatures.write_saved_model(functions, staging)
    write_warmup_requests(staging, info, config.model_name)
    lineage.copy_into_export(config.job_dir, info, staging)
    if before_publish is not None:
        before_publish()
    version_dir = tf.io.gfile.join(model_base_path, str(versions.next_version(model_base_path)))
    versions.publish(staging, version_dir)
    if config.model_dir:
        # Vertex AI's model upload reads saved_model.pb directly in AIP_MODEL_DIR.
        versions.copy_saved_model(version_dir, config.model_dir)
        logging.info("SavedModel also copied to %s (--model_dir)", config.model_dir)
    return version_dir


def load_job_config(job_dir: str, overrides: dict) -> TrainConfig:
    """The config a job trained with (JOB_DIR/config.json), with `overrides` applied."""
    with tf.io.gfile.GFile(tf.io.gfile.join(job_dir, contract.CONFIG_FILE)) as file:
        values = json.load(file)
    values.update({key: value for key, value in overrides.items() if value is not None})
    values["job_dir"] = job_dir
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{key: value for key, value in values.items() if key in known})


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description="Export a trained objrec job again.")
    parser.add_argument("--job_dir", required=True)
    parser.add_argument("--data_dir", help="default: the dataset the job trained on")
    parser.add_argument("--max_pixels", type=int, help="per-image limit of the export")
    parser.add_argument("--model_name", help="export/<model_name>/ (default: the job's)")
    parser.add_argument("--model_dir", help="also copy the SavedModel directly here (Vertex AI)")
    parser.add_argument(
        "--test_time_flip",
        type=parse_bool,
        nargs="?",
        const=True,
        metavar="BOOL",
        help="answer the mean over each image and its mirror image (default: the job's)",
    )
    args = parser.parse_args(argv)
    try:
        config = load_job_config(
            args.job_dir,
            {
                "data_dir": args.data_dir,
                "max_pixels": args.max_pixels,
                "model_name": args.model_name,
                "model_dir": args.model_dir,
                "test_time_flip": args.test_time_flip,
            },
        )
        info = input_pipeline.load_dataset_info(config.data_dir)
        model = checkpoints.restore_trained_model(config, info.num_classes)
    except (ValueError, tf.errors.NotFoundError) as error:
        print(f"trainer.export: error: --job_dir {args.job_dir}: {error}", file=sys.stderr)
        return 2
    print(f"SavedModel: {export_model(model, config, info)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
