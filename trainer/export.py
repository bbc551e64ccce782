"""SavedModel export in TF Serving's layout, with the signatures DESIGN.md specifies.

Training exports at its end. To export a finished job's weights again without training (a
new integer version; an existing version is never overwritten), e.g. with another pixel limit:

    python -m trainer.export --job_dir work/job [--max_pixels 20000000]
    python -m trainer.export --job_dir gs://BUCKET/jobs/run-1
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from objrec import contract
from serving import warmup
from trainer import image_ops, input_pipeline, lineage
from trainer import model as model_lib
from trainer.config import TrainConfig

# Warmup requests replay at batch size 1 and at every batch size server-side batching runs
# in k8s/ (max_batch_size and allowed_batch_sizes of k8s/base/tf-serving/batching.config and
# of the gpu overlay's), so no first request pays for a new shape.
WARMUP_BATCH_SIZES = (1, 8, 16, 32, 64)


class ServingFunctions:
    """The model plus raw-bytes decoding, labels and top-k: what TF Serving runs."""

    def __init__(
        self,
        model: keras.Model,
        labels: tuple[str, ...],
        image_size: int,
        resize_mode: str,
        input_size: int,
        max_pixels: int,
        jpeg_quality: int | None = None,
    ):
        self.model = model
        self.jpeg_quality = jpeg_quality
        self.labels = tuple(labels)
        self.top_k = contract.top_k_for(len(labels))
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.input_size = input_size
        self.max_pixels = max_pixels

    def _outputs(self, images: tf.Tensor, valid: tf.Tensor) -> dict:
        probabilities = self.model(images, training=False)
        probabilities = tf.where(valid[:, tf.newaxis], probabilities, 0.0)
        scores, class_ids = tf.math.top_k(probabilities, k=self.top_k)
        return {
            contract.OUTPUT_PROBABILITIES: probabilities,
            contract.OUTPUT_TOP_K_CLASSES: tf.gather(tf.constant(self.labels), class_ids),
            contract.OUTPUT_TOP_K_SCORES: scores,
            contract.OUTPUT_TOP_K_CLASS_IDS: tf.cast(class_ids, tf.int64),
            contract.OUTPUT_VALID: valid,
        }

    def from_image_bytes(self, image_bytes: tf.Tensor) -> dict:
        """`serving_default`: encoded JPEG/PNG/GIF/BMP files of any size."""
        images, valid = image_ops.decode_raw_batch(
            image_bytes,
            self.image_size,
            self.resize_mode,
            self.input_size,
            self.max_pixels,
            self.jpeg_quality,
        )
        return self._outputs(images, valid)

    def from_images(self, images: tf.Tensor) -> dict:
        """`images`: pixels already decoded, oriented and resized to the model input."""
        valid = tf.ones([tf.shape(images)[0]], tf.bool)
        return self._outputs(tf.cast(images, tf.float32), valid)

    def input_signatures(self) -> dict:
        size = self.input_size
        return {
            contract.SERVING_SIGNATURE: tf.TensorSpec(
                [None], tf.string, name=contract.INPUT_IMAGE_BYTES
            ),
            contract.PIXELS_SIGNATURE: tf.TensorSpec(
                [None, size, size, 3], tf.uint8, name=contract.INPUT_IMAGES
            ),
        }


STAGING_PREFIX = ".tmp-"  # a name servers ignore: not an integer version


def next_version(model_base_path: str) -> int:
    """One more than the highest integer version directory; 1 for a new model."""
    if not tf.io.gfile.isdir(model_base_path):
        return 1
    versions = [
        int(name.strip("/"))
        for name in tf.io.gfile.listdir(model_base_path)
        if name.strip("/").isdigit()
    ]
    return max(versions, default=0) + 1


def final_weights_path(job_dir: str) -> str:
    """Where training leaves its final (early-stopping best) weights."""
    return tf.io.gfile.join(job_dir, contract.CHECKPOINTS_DIR, contract.FINAL_WEIGHTS)


def restore_trained_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """A fresh float32 model with a job's final weights, whatever the training precision."""
    keras.mixed_precision.set_global_policy("float32")
    model = model_lib.build_model(num_classes, config.input_size, "none", config.dropout)
    status = tf.train.Checkpoint(model=model).read(final_weights_path(config.job_dir))
    status.assert_existing_objects_matched()
    return model


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
    functions = ServingFunctions(
        model,
        info.labels,
        info.image_size,
        info.resize_mode,
        config.input_size,
        config.max_pixels,
        info.jpeg_quality,
    )
    model_base_path = tf.io.gfile.join(config.job_dir, contract.EXPORT_DIR, config.model_name)
    remove_unfinished_exports(model_base_path)
    staging = tf.io.gfile.join(model_base_path, f"{STAGING_PREFIX}{uuid.uuid4().hex}")
    write_saved_model(functions, staging)
    write_warmup_requests(staging, info, config.model_name)
    lineage.copy_into_export(config.job_dir, info, staging)
    if before_publish is not None:
        before_publish()
    version_dir = tf.io.gfile.join(model_base_path, str(next_version(model_base_path)))
    publish(staging, version_dir)
    return version_dir


def remove_unfinished_exports(model_base_path: str) -> None:
    """Deletes what an export killed part-way left: staging directories, and version
    directories without saved_model.pb (a copy to an object store cut short). Servers never
    load either, so nothing served goes; the export then publishes the next version whole."""
    if not tf.io.gfile.isdir(model_base_path):
        return
    for entry in tf.io.gfile.listdir(model_base_path):
        name = entry.rstrip("/")
        path = tf.io.gfile.join(model_base_path, name)
        unfinished_version = name.isdigit() and not tf.io.gfile.exists(
            tf.io.gfile.join(path, "saved_model.pb")
        )
        if name.startswith(STAGING_PREFIX) or unfinished_version:
            logging.warning("removing the unfinished export %s", path)
            tf.io.gfile.rmtree(path)


def publish(staging: str, version_dir: str) -> None:
    """Moves `staging` to `version_dir`, whole or not at all.

    On a local disk a directory rename is atomic. Object stores copy object by object (and
    ram:// drops a renamed directory's children), so there the files are copied with
    saved_model.pb last, since a version counts as present once that file exists; a copy
    cut short is removed by the next export (`remove_unfinished_exports`).
    """
    if "://" not in staging:
        os.rename(staging, version_dir)
        return
    # ram:// matches children by name prefix (it lists `assets/.extra` next to the real
    # `assets.extra/`): copy only what exists.
    files = [
        tf.io.gfile.join(directory, name)
        for directory, _, names in tf.io.gfile.walk(staging)
        for name in names
        if tf.io.gfile.exists(tf.io.gfile.join(directory, name))
    ]
    relative = [path[len(staging) :].lstrip("/") for path in files]
    for path, name in sorted(
        zip(files, relative, strict=True), key=lambda pair: pair[1] == "saved_model.pb"
    ):
        target = tf.io.gfile.join(version_dir, name)
        tf.io.gfile.makedirs(target.rsplit("/", 1)[0])
        tf.io.gfile.copy(path, target)
    try:
        tf.io.gfile.rmtree(staging)
    except tf.errors.NotFoundError:  # ram:// again; a leftover `.tmp-*` is ignored by servers
        logging.warning("could not remove the staging directory %s", staging)


def write_saved_model(functions: ServingFunctions, export_dir: str) -> None:
    """Writes the SavedModel with both signatures to `export_dir`.

    Keras's ExportArchive, not `tf.saved_model.save`: only its variable tracking gives a
    SavedModel whose graph TF Serving (a TF1-style session over the SignatureDefs) can run.
    """
    archive = keras.export.ExportArchive()
    archive.track(functions.model)
    signatures = functions.input_signatures()
    archive.add_endpoint(
        contract.SERVING_SIGNATURE,
        functions.from_image_bytes,
        input_signature=[signatures[contract.SERVING_SIGNATURE]],
    )
    archive.add_endpoint(
        contract.PIXELS_SIGNATURE,
        functions.from_images,
        input_signature=[signatures[contract.PIXELS_SIGNATURE]],
    )
    archive.write_out(export_dir, verbose=False)


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
    args = parser.parse_args(argv)
    try:
        config = load_job_config(
            args.job_dir,
            {
                "data_dir": args.data_dir,
                "max_pixels": args.max_pixels,
                "model_name": args.model_name,
            },
        )
        info = input_pipeline.load_dataset_info(config.data_dir)
        model = restore_trained_model(config, info.num_classes)
    except (ValueError, tf.errors.NotFoundError) as error:
        print(f"trainer.export: error: --job_dir {args.job_dir}: {error}", file=sys.stderr)
        return 2
    print(f"SavedModel: {export_model(model, config, info)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
