"""tf.data input pipelines over an objrec dataset directory (local, gs:// or ram://)."""

import dataclasses
import hashlib
import json
import math

import tensorflow as tf

from objrec import contract
from objrec.savedmodel import decode
from trainer import image_ops
from trainer.config import TrainConfig


class DatasetError(ValueError):
    """The dataset directory cannot be trained on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs from a dataset directory's metadata.json and labels.txt."""

    data_dir: str
    labels: tuple[str, ...]
    image_size: int
    resize_mode: str
    num_examples: dict  # split name -> number of records
    files: dict  # split name -> list of shard paths
    metadata: dict
    metadata_sha256: str  # identifies the exact dataset a model was trained on
    jpeg_quality: int | None  # of the stored JPEGs; the serving graph repeats that encoding

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def has_split(self, split: str) -> bool:
        return self.num_examples.get(split, 0) > 0


def _read_text(path: str) -> str:
    with tf.io.gfile.GFile(path) as file:
        return file.read()


def parse_metadata(data_dir: str, path: str, text: str) -> dict:
    """metadata.json as a dict; a DatasetError naming the file when it is not one."""
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        problem = str(error)
    else:
        if isinstance(metadata, dict):
            return metadata
        problem = f"a JSON {type(metadata).__name__}"
    raise DatasetError(
        f"--data_dir {data_dir}: {path} is not a JSON object ({problem}); "
        "rerun objrec-preprocess to write the dataset again"
    )


def load_dataset_info(data_dir: str) -> DatasetInfo:
    """Reads and checks metadata.json and labels.txt; raises DatasetError with the fix."""
    metadata_path = tf.io.gfile.join(data_dir, contract.METADATA_FILE)
    if not tf.io.gfile.exists(metadata_path):
        raise DatasetError(
            f"--data_dir {data_dir}: no {contract.METADATA_FILE} there; "
            "point it at the output of objrec-preprocess"
        )
    metadata_text = _read_text(metadata_path)
    metadata = parse_metadata(data_dir, metadata_path, metadata_text)
    version = metadata.get(contract.META_SCHEMA_VERSION)
    if version != contract.SCHEMA_VERSION:
        raise DatasetError(
            f"--data_dir {data_dir}: schema_version {version}, this trainer reads "
            f"{contract.SCHEMA_VERSION}; rerun objrec-preprocess with this version of objrec"
        )
    labels_path = tf.io.gfile.join(data_dir, contract.LABELS_FILE)
    labels = tuple(line for line in _read_text(labels_path).splitlines() if line)
    if list(labels) != list(metadata[contract.META_LABELS]):
        raise DatasetError(
            f"--data_dir {data_dir}: {contract.LABELS_FILE} and {contract.METADATA_FILE} list "
            "different labels; the directory mixes two preprocessing runs, rerun it into an "
            "empty directory"
        )
    splits = metadata[contract.META_SPLITS]
    for split in splits.values():
        for name in split[contract.META_FILES]:
            if not tf.io.gfile.exists(tf.io.gfile.join(data_dir, name)):
                raise DatasetError(
                    f"--data_dir {data_dir}: {name}, listed in {contract.METADATA_FILE}, is "
                    "missing; copy the whole dataset directory, or rerun objrec-preprocess"
                )
    return DatasetInfo(
        data_dir=data_dir,
        labels=labels,
        image_size=int(metadata[contract.META_IMAGE_SIZE]),
        resize_mode=metadata[contract.META_RESIZE_MODE],
        num_examples={name: int(s[contract.META_NUM_EXAMPLES]) for name, s in splits.items()},
        files={
            name: [tf.io.gfile.join(data_dir, f) for f in s[contract.META_FILES]]
            for name, s in splits.items()
        },
        metadata=metadata,
        metadata_sha256=hashlib.sha256(metadata_text.encode()).hexdigest(),
        jpeg_quality=metadata.get(contract.META_JPEG_QUALITY),
    )


def class_weights(info: DatasetInfo) -> list[float]:
    """Inverse-frequency weights of the train split: n / (classes x count), 1.0 on average.

    3 classes of 80, 15 and 5 images get 0.42, 2.2 and 6.7: each class weighs the same in
    the loss as if the classes were balanced.
    """
    counts = info.metadata[contract.META_SPLITS][contract.TRAIN][contract.META_CLASS_COUNTS]
    total = sum(counts.get(label, 0) for label in info.labels)
    return [
        total / (info.num_classes * counts[label]) if counts.get(label) else 0.0
        for label in info.labels
    ]


def parse_example(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A serialized record to (encoded JPEG, label id)."""
    features = tf.io.parse_single_example(
        serialized,
        {
            contract.FEATURE_ENCODED: tf.io.FixedLenFeature([], tf.string),
            contract.FEATURE_LABEL: tf.io.FixedLenFeature([], tf.int64),
        },
    )
    return features[contract.FEATURE_ENCODED], features[contract.FEATURE_LABEL]


def _read_records(files: list[str], training: bool, seed: int) -> tf.data.Dataset:
    """Records of many shard files, read in parallel."""
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    return dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 16),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not training,
    )


def _shard_for_input_pipeline(
    files: list[str], context: tf.distribute.InputContext | None
) -> tuple[list[str], bool]:
    """This input pipeline's files, and whether records must be sharded instead of files."""
    if context is None or context.num_input_pipelines == 1:
        return files, False
    if len(files) >= context.num_input_pipelines:
        return files[context.input_pipeline_id :: context.num_input_pipelines], False
    return files, True


def augmentation_of(info: DatasetInfo, config: TrainConfig) -> image_ops.Augmentation:
    """The training augmentation a resolved config asks for."""
    return image_ops.Augmentation(
        image_size=info.image_size,
        input_size=config.input_size,
        crop=config.crop_augmentation,
        min_crop_area=config.min_crop_area,
        rotation_degrees=config.rotation_degrees,
        random_erasing=config.random_erasing,
    )


def make_train_dataset(
    info: DatasetInfo, config: TrainConfig, context: tf.distribute.InputContext | None = None
) -> tf.data.Dataset:
    """Endless, shuffled, augmented (image, one-hot label) batches of the per-replica size.

    Endless so that every worker takes the same number of steps per epoch whatever its
    shard sizes: the training loop counts steps, not end-of-data.
    """
    files, shard_records = _shard_for_input_pipeline(info.files[contract.TRAIN], context)
    dataset = _read_records(files, training=True, seed=config.seed)
    if shard_records:
        dataset = dataset.shard(context.num_input_pipelines, context.input_pipeline_id)
    dataset = dataset.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)
    if config.cache:
        dataset = dataset.cache()
    dataset = dataset.shuffle(config.shuffle_buffer, seed=config.seed).repeat()
    # One augmentation seed per example; each input pipeline (worker) draws its own.
    pipeline_id = context.input_pipeline_id if context else 0
    seeds = tf.data.Dataset.random(seed=config.seed + pipeline_id).batch(2)
    dataset = tf.data.Dataset.zip(dataset, seeds)
    augmentation = augmentation_of(info, config)

    def prepare(record, seed):
        encoded, label = record
        image = image_ops.augment(decode.decode_stored(encoded), seed, augmentation)
        return image, tf.one_hot(label, info.num_classes)

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    per_replica_batch = (
        context.get_per_replica_batch_size(config.batch_size) if context else config.batch_size
    )
    dataset = dataset.batch(per_replica_batch, drop_remainder=True)
    mixing = mixing_of(config)
    if mixing.enabled:
        # One seed per batch, apart from the examples' seeds above.
        batch_seeds = tf.data.Dataset.random(seed=config.seed + 7919 + pipeline_id).batch(2)
        dataset = tf.data.Dataset.zip(dataset, batch_seeds).map(
            lambda batch, seed: image_ops.mix_batch(*batch, seed, mixing),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def mixing_of(config: TrainConfig) -> image_ops.Mixing:
    """The batch mixing a resolved config asks for (recipe fields left None: off)."""
    return image_ops.Mixing(
        mixup_alpha=config.mixup_alpha or 0.0,
        cutmix_alpha=config.cutmix_alpha or 0.0,
        probability=1.0 if config.mix_probability is None else config.mix_probability,
    )


def eval_steps(num_examples: int, global_batch_size: int) -> int:
    """Steps that cover every example once: 1,000 examples / 64 per step = 16 steps."""
    return max(1, math.ceil(num_examples / global_batch_size))


def make_eval_dataset(
    info: DatasetInfo,
    split: str,
    config: TrainConfig,
    context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """(image, one-hot label, weight) batches that cover the split exactly once.

    The split is padded with weight-0 examples to a whole number of global batches and
    then dealt out record by record, so every input pipeline yields the same number of
    per-replica batches: metrics summed across replicas count each real example once.
    """
    num_examples = info.num_examples[split]
    padded_total = eval_steps(num_examples, config.batch_size) * config.batch_size
    records = _read_records(info.files[split], training=False, seed=config.seed)
    records = records.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)
    real = records.map(lambda encoded, label: (encoded, label, 1.0))
    padding = tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(0, tf.int64), 0.0))
    dataset = real.concatenate(padding.repeat(padded_total - num_examples))
    if context is not None and context.num_input_pipelines > 1:
        dataset = dataset.shard(context.num_input_pipelines, context.input_pipeline_id)

    def prepare(encoded, label, weight):
        image = tf.cond(
            weight > 0,
            lambda: decode.eval_crop(
                decode.decode_stored(encoded), info.image_size, config.input_size
            ),
            lambda: tf.zeros([config.input_size, config.input_size, 3]),
        )
        return image, tf.one_hot(label, info.num_classes), weight

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    per_replica_batch = (
        context.get_per_replica_batch_size(config.batch_size) if context else config.batch_size
    )
    return dataset.batch(per_replica_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
