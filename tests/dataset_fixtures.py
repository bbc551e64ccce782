"""Tiny dataset directories in the preprocessing output format, written without Beam.

Trainer and export tests use them to stay fast and independent of the Beam job; the
end-to-end test uses the real preprocessing output instead.
"""

import io
import json
import pathlib

import numpy as np
import tensorflow as tf
from PIL import Image

from objrec import contract
from preprocessing import pipeline, records

LABELS = ("circle", "square", "stripes")


def class_image(label_id: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy but learnable picture of class `label_id` (uint8 RGB)."""
    image = rng.integers(0, 60, size=(size, size, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    if label_id == 0:
        mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    elif label_id == 1:
        mask = (abs(yy - size / 2) < size / 4) & (abs(xx - size / 2) < size / 4)
    else:
        mask = (xx // max(1, size // 8)) % 2 == 0
    image[mask] = [220, 200 - 60 * label_id, 40 + 80 * label_id]
    return image


def jpeg_bytes(pixels: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _example(encoded: bytes, label_id: int, size: int, index: int) -> bytes:
    return records.build_example(
        jpeg=encoded,
        height=size,
        width=size,
        label=label_id,
        label_text=LABELS[label_id],
        source=f"synthetic://{index}.jpg",
        sha256=f"{index:064x}",
    )


def write_dataset(
    data_dir: str, counts: dict[str, int], size: int = 32, shards: int = 2, seed: int = 0
) -> str:
    """Writes `counts[split]` records per split (classes round-robin) in `shards` files each.

    `data_dir` may be any tf.io.gfile path (ram:// included).
    """
    rng = np.random.default_rng(seed)
    tf.io.gfile.makedirs(data_dir)
    splits, index = {}, 0
    for split, count in counts.items():
        if not count:
            continue
        num_shards = min(shards, count)
        names = [contract.shard_file_name(split, i, num_shards) for i in range(num_shards)]
        writers = [tf.io.TFRecordWriter(tf.io.gfile.join(data_dir, n)) for n in names]
        class_counts = dict.fromkeys(LABELS, 0)
        for i in range(count):
            label_id = i % len(LABELS)
            encoded = jpeg_bytes(class_image(label_id, size, rng))
            writers[i % num_shards].write(_example(encoded, label_id, size, index))
            class_counts[LABELS[label_id]] += 1
            index += 1
        for writer in writers:
            writer.close()
        splits[split] = {
            contract.META_NUM_EXAMPLES: count,
            contract.META_CLASS_COUNTS: class_counts,
            contract.META_FILES: names,
        }
    metadata = {
        contract.META_SCHEMA_VERSION: contract.SCHEMA_VERSION,
        contract.META_LABELS: list(LABELS),
        contract.META_NUM_CLASSES: len(LABELS),
        contract.META_IMAGE_SIZE: size,
        contract.META_RESIZE_MODE: "shorter_side",
        contract.META_JPEG_QUALITY: 95,
        contract.META_NUM_INPUTS: index,
        contract.META_NUM_REJECTED: 0,
        contract.META_NUM_DUPLICATES: 0,
        contract.META_SPLITS: splits,
    }
    with tf.io.gfile.GFile(tf.io.gfile.join(data_dir, contract.METADATA_FILE), "w") as file:
        json.dump(metadata, file)
    with tf.io.gfile.GFile(tf.io.gfile.join(data_dir, contract.LABELS_FILE), "w") as file:
        file.write("\n".join(LABELS) + "\n")
    return data_dir


def encode(image: Image.Image, image_format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def noise(seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def read_log(output_dir: pathlib.Path, prefix: str) -> list[dict]:
    text = (output_dir / contract.log_file_name(prefix)).read_text()
    return [json.loads(line) for line in text.splitlines()]


def read_records(output_dir: pathlib.Path) -> list[dict]:
    """Every record of every shard, as a dict of feature name to its single value."""
    paths = sorted(str(path) for path in output_dir.glob(f"*{contract.TFRECORD_SUFFIX}"))
    parsed = []
    for serialized in tf.data.TFRecordDataset(paths):
        features = tf.train.Example.FromString(serialized.numpy()).features.feature
        parsed.append(
            {
                name: (feature.bytes_list.value or feature.int64_list.value)[0]
                for name, feature in features.items()
            }
        )
    return parsed


def run_job(input_dir, output_dir, *flags: str) -> dict:
    argv = ["--input", str(input_dir), "--output", str(output_dir), *flags]
    return pipeline.run(argv, save_main_session=False)


def write(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_class_images(root: pathlib.Path, counts: dict[str, int], first_seed: int = 0) -> None:
    """`counts[label]` distinct noise images per class, PNG and JPEG, 40 x 30 or 30 x 40."""
    seed = first_seed
    for label, count in counts.items():
        for index in range(count):
            size = (40, 30) if index % 2 else (30, 40)
            image_format = "PNG" if index % 3 else "JPEG"
            name = f"{label}_{seed}.{image_format.lower()}"
            write(root / label / name, encode(noise(seed, size), image_format))
            seed += 1
