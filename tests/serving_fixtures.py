"""A tiny stand-in for the trainer's export, with exactly the SavedModel signature contract.

`serving/` must rely on the contract only (DESIGN.md, "SavedModel signatures"), so its tests run
against this toy model: same signature names, input and output keys, dtypes and shapes as the
real export, a fixed random dense layer instead of ResNet50. Saved with `tf.saved_model.save`
like the trainer's export, with variables, so loading it exercises variable restore too.
"""

import contextlib
import pathlib
import shutil
import socket
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from objrec import contract
from serving.config import ServerConfig
from serving.server import ModelServer

LABELS = ("cat", "dog", "frog")
# A second, different model: more classes than K, so top-k is really a cut.
OTHER_LABELS = ("ant", "bee", "cow", "dog", "eel", "fox")
# Leading bytes of the formats the contract accepts: JPEG, PNG, GIF, BMP. Checked before decoding
# so that a non-image input gives valid=False instead of an op error failing the whole batch.
IMAGE_MAGIC_BYTES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


class ToyClassifier(tf.Module):
    """Resize, one fixed dense layer, softmax, top-k: the real export's signatures, tiny."""

    def __init__(self, labels: Sequence[str], input_size: int, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        num_features = input_size * input_size * 3
        self.input_size = input_size
        self.top_k = contract.top_k_for(len(labels))
        self.labels = tf.constant(list(labels))
        self.kernel = tf.Variable(rng.normal(size=(num_features, len(labels))).astype(np.float32))
        self.bias = tf.Variable(rng.normal(size=(len(labels),)).astype(np.float32))

        size = input_size
        self.serve_image_bytes = tf.function(
            self._serve_image_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name=contract.INPUT_IMAGE_BYTES)],
        )
        self.serve_images = tf.function(
            self._serve_images,
            input_signature=[
                tf.TensorSpec([None, size, size, 3], tf.uint8, name=contract.INPUT_IMAGES)
            ],
        )

    def _serve_image_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels, valid = tf.map_fn(
            self._decode_one,
            image_bytes,
            fn_output_signature=(
                tf.TensorSpec([self.input_size, self.input_size, 3], tf.float32),
                tf.TensorSpec([], tf.bool),
            ),
        )
        return self._classify(pixels, valid)

    def _serve_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        valid = tf.ones(tf.shape(images)[:1], tf.bool)
        return self._classify(tf.cast(images, tf.float32), valid)

    def _decode_one(self, encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        is_image = tf.reduce_any(
            [tf.strings.substr(encoded, 0, len(magic)) == magic for magic in IMAGE_MAGIC_BYTES]
        )
        blank = tf.zeros([self.input_size, self.input_size, 3], tf.float32)
        pixels = tf.cond(is_image, lambda: self._decode_and_resize(encoded), lambda: blank)
        return pixels, is_image

    def _decode_and_resize(self, encoded: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return tf.image.resize(tf.cast(image, tf.float32), [self.input_size, self.input_size])

    def _classify(self, pixels: tf.Tensor, valid: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.reshape(pixels / 255.0, [tf.shape(pixels)[0], -1])
        probabilities = tf.nn.softmax(tf.matmul(features, self.kernel) + self.bias)
        probabilities = tf.where(valid[:, None], probabilities, tf.zeros_like(probabilities))
        top_k = tf.math.top_k(probabilities, k=self.top_k)
        class_ids = tf.cast(top_k.indices, tf.int64)
        return {
            contract.OUTPUT_PROBABILITIES: probabilities,
            contract.OUTPUT_TOP_K_CLASSES: tf.gather(self.labels, class_ids),
            contract.OUTPUT_TOP_K_SCORES: top_k.values,
            contract.OUTPUT_TOP_K_CLASS_IDS: class_ids,
            contract.OUTPUT_VALID: valid,
        }


def export_toy_model(
    base_path: str | pathlib.Path,
    version: int = 1,
    labels: Sequence[str] = LABELS,
    input_size: int = 8,
    seed: int = 0,
) -> pathlib.Path:
    """Saves the toy classifier to `base_path/<version>/` in TF Serving layout.

    Returns:
        The version directory.
    """
    module = ToyClassifier(labels, input_size, seed)
    version_dir = pathlib.Path(base_path) / str(version)
    signatures = {
        contract.SERVING_SIGNATURE: module.serve_image_bytes,
        contract.PIXELS_SIGNATURE: module.serve_images,
    }
    tf.saved_model.save(module, str(version_dir), signatures=signatures)
    return version_dir


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W, 3] array."""
    return tf.io.encode_png(pixels).numpy()


def encode_jpeg(pixels: np.ndarray) -> bytes:
    """JPEG bytes of a uint8 [H, W, 3] array."""
    return tf.io.encode_jpeg(pixels, quality=95).numpy()


def random_pixels(seed: int, height: int = 12, width: int = 10) -> np.ndarray:
    """A reproducible uint8 [height, width, 3] image."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


_exports: dict[tuple, pathlib.Path] = {}


def shared_toy_export(
    root: pathlib.Path, labels: Sequence[str] = LABELS, seed: int = 0
) -> pathlib.Path:
    """A toy version directory exported once per session and argument set, under `root`.

    Exporting takes seconds; tests copy the result with `copy_version`, never modify it.
    """
    key = (tuple(labels), seed)
    if key not in _exports:
        base_path = root / f"toy-{len(_exports)}"
        _exports[key] = export_toy_model(base_path, version=1, labels=labels, seed=seed)
    return _exports[key]


def copy_version(
    version_dir: pathlib.Path, base_path: pathlib.Path, version: int | str
) -> pathlib.Path:
    """Copies an exported version directory to `base_path/<version>`, as a new export lands.

    The copy is staged beside it and renamed into place, as the export publishes a version:
    a polling server never sees `saved_model.pb` before the variables are there.
    """
    target = pathlib.Path(base_path) / str(version)
    staging = pathlib.Path(base_path) / f".staging-{version}"
    shutil.copytree(version_dir, staging)
    staging.rename(target)
    return target


def free_port() -> int:
    """A port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(
    model_base_path: pathlib.Path | None = None, **overrides
) -> Iterator[ModelServer]:
    """An in-process ModelServer on a free 127.0.0.1 port; `overrides` are ServerConfig fields.

    Without `model_base_path`, pass `model_config_file=` instead.
    """
    fields = {"port": 0, "host": "127.0.0.1", "grace_period_seconds": 0.0, **overrides}
    config = ServerConfig(model_base_path=str(model_base_path or ""), **fields)
    with ModelServer(config) as server:
        yield server


def model_config_text(
    models: Mapping[str, pathlib.Path],
    versions: Mapping[str, Sequence[int]] | None = None,
    labels: Mapping[str, Mapping[str, int]] | None = None,
) -> str:
    """TF Serving's text-format ModelServerConfig: name → base path, `specific` versions, labels.

    A model without listed versions gets TF Serving's default policy (the newest version).
    """
    versions, labels = versions or {}, labels or {}
    entries = []
    for name, base_path in models.items():
        lines = [f'name: "{name}"', f'base_path: "{base_path}"', 'model_platform: "tensorflow"']
        if name in versions:
            listed = " ".join(f"versions: {version}" for version in versions[name])
            lines.append(f"model_version_policy {{ specific {{ {listed} }} }}")
        for label, version in labels.get(name, {}).items():
            lines.append(f'version_labels {{ key: "{label}" value: {version} }}')
        entries.append("  config {\n" + "".join(f"    {line}\n" for line in lines) + "  }\n")
    return "model_config_list {\n" + "".join(entries) + "}\n"
