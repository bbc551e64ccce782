"""Real sample images: a Kaggle-style class-folder tree cut from Fashion-MNIST.

    python -m preprocessing.sample_data --output ./images --per_class 100
    python -m preprocessing.sample_data --output ./images --per_class 20 --source test

writes `images/<class_name>/<source>_<index>.png` (28 x 28 grey product photos), taking the
first `per_class` images of each class after `offset`: the same call always picks the same
files, and a rerun leaves identical files untouched.

The idx files are looked for in the Debian package `dataset-fashion-mnist`
(/usr/share/datasets/fashion-mnist/), then in the Keras cache (~/.keras/datasets/fashion-mnist);
without either, Keras downloads them where there is internet.
"""

import argparse
import gzip
import io
import os
import pathlib
import struct
import sys

import numpy as np
from PIL import Image

from preprocessing.errors import PreprocessError

CLASS_NAMES = (
    "T-shirt_top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle_boot",
)
SOURCES = ("train", "test")
DEBIAN_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
KERAS_CACHE_DIR = pathlib.Path.home() / ".keras" / "datasets" / "fashion-mnist"
_FILE_PREFIX = {"train": "train", "test": "t10k"}
_IMAGES_MAGIC = 0x00000803  # idx3: unsigned bytes, 3 dimensions
_LABELS_MAGIC = 0x00000801  # idx1: unsigned bytes, 1 dimension


def idx_paths(directory: pathlib.Path, source: str) -> tuple[pathlib.Path, pathlib.Path]:
    """The (images, labels) idx .gz files of `source` in `directory`."""
    prefix = _FILE_PREFIX[source]
    return (
        directory / f"{prefix}-images-idx3-ubyte.gz",
        directory / f"{prefix}-labels-idx1-ubyte.gz",
    )


def parse_idx(data: bytes, magic: int) -> np.ndarray:
    """An idx array of unsigned bytes (the MNIST file format), checking its magic number."""
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise ValueError(f"idx magic number {found:#010x}, expected {magic:#010x}")
    num_dims = magic & 0xFF
    shape = struct.unpack(f">{num_dims}I", data[4 : 4 + 4 * num_dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * num_dims).reshape(shape)


def _read_idx_dir(directory: pathlib.Path, source: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = idx_paths(directory, source)
    images = parse_idx(gzip.decompress(images_path.read_bytes()), _IMAGES_MAGIC)
    labels = parse_idx(gzip.decompress(labels_path.read_bytes()), _LABELS_MAGIC)
    return images, labels


def _download_with_keras(source: str) -> tuple[np.ndarray, np.ndarray]:
    import keras

    try:
        train, test = keras.datasets.fashion_mnist.load_data()
    except Exception as error:  # noqa: BLE001 (any download failure means the same to the user)
        raise PreprocessError(
            f"Fashion-MNIST is not installed and could not be downloaded ({error}): "
            f"install the Debian package dataset-fashion-mnist (apt-get install "
            f"dataset-fashion-mnist), or pass --data_dir with the idx .gz files"
        ) from None
    return train if source == "train" else test


def load_fashion_mnist(
    source: str = "train", data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 and labels (n,) uint8 of the train or test set.

    Looks in `data_dir` if given, else the Debian package, the Keras cache, then downloads.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if data_dir is not None:
        directory = pathlib.Path(data_dir)
        if not all(path.is_file() for path in idx_paths(directory, source)):
            names = ", ".join(path.name for path in idx_paths(directory, source))
            raise PreprocessError(f"--data_dir {data_dir} lacks {names}")
        return _read_idx_dir(directory, source)
    for directory in (DEBIAN_DIR, KERAS_CACHE_DIR):
        if all(path.is_file() for path in idx_paths(directory, source)):
            return _read_idx_dir(directory, source)
    return _download_with_keras(source)


def select_indices(labels: np.ndarray, per_class: int, offset: int = 0) -> dict[str, list[int]]:
    """For each class, the indices of its images number offset to offset + per_class - 1."""
    return {
        name: np.flatnonzero(labels == class_id)[offset : offset + per_class].tolist()
        for class_id, name in enumerate(CLASS_NAMES)
    }


def png_bytes(pixels: np.ndarray) -> bytes:
    """A grey PNG of `pixels`; Pillow's PNG encoder is deterministic."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_if_changed(path: pathlib.Path, content: bytes) -> bool:
    """Writes `content` unless `path` already holds it; returns whether it wrote."""
    if path.is_file() and path.read_bytes() == content:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(content)
    os.replace(partial, path)  # atomic: an interrupted run never leaves half a PNG
    return True


def write_sample_folder(
    output_dir: str,
    per_class: int,
    source: str = "train",
    offset: int = 0,
    data_dir: str | None = None,
) -> dict[str, int]:
    """Writes `output_dir/<class_name>/<source>_<index>.png`; returns the images per class."""
    images, labels = load_fashion_mnist(source, data_dir)
    counts = {}
    for name, indices in select_indices(labels, per_class, offset).items():
        for index in indices:
            path = pathlib.Path(output_dir) / name / f"{source}_{index}.png"
            write_if_changed(path, png_bytes(images[index]))
        counts[name] = len(indices)
    return counts


def main(argv: list[str] | None = None) -> None:
    """`python -m preprocessing.sample_data --output DIR --per_class N`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="Folder to write class folders into.")
    parser.add_argument("--per_class", type=int, required=True, help="Images per class.")
    parser.add_argument("--source", choices=SOURCES, default="train")
    parser.add_argument("--offset", type=int, default=0, help="Skip this many images per class.")
    parser.add_argument("--data_dir", help="Folder with the idx .gz files (default: search).")
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.offset < 0:
        parser.error("--per_class must be at least 1 and --offset at least 0")
    try:
        counts = write_sample_folder(
            args.output, args.per_class, args.source, args.offset, args.data_dir
        )
    except PreprocessError as error:
        sys.exit(f"sample_data: error: {error}")
    print(f"{sum(counts.values())} images in {len(counts)} class folders under {args.output}")


if __name__ == "__main__":
    main()
