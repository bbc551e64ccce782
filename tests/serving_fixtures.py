"""A tiny export for the serving tests, written by the trainer's own export code.

`serving/` relies on the SavedModel contract only (docs/contracts.md, "SavedModel
signatures"), so its tests run against a toy model exported as the trainer exports: the same
signatures, in-graph decode, input and output keys, dtypes and shapes, with one fixed random
dense layer instead of ResNet50 so that an export takes seconds.
"""

import contextlib
import json
import pathlib
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2

from objrec import contract
from objrec.savedmodel import signatures, tensors
from serving.dev_server.config import ServerConfig
from serving.dev_server.server import ModelServer

LABELS = ("cat", "dog", "frog")
# A second, different model: more classes than K, so top-k is really a cut.
OTHER_LABELS = ("ant", "bee", "cow", "dog", "eel", "fox")
# The toy export's pixel limit (the trainer's default is 50 M; tests send small images).
TOY_MAX_PIXELS = 50_000_000


def toy_classifier(labels: Sequence[str], input_size: int, seed: int) -> keras.Model:
    """Pixels in [0, 255] to class probabilities through one fixed random dense layer."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input([input_size, input_size, 3])
    features = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(len(labels), activation="softmax")
    model = keras.Model(inputs, dense(features))
    num_features = input_size * input_size * 3
    dense.set_weights([rng.normal(size=(num_features, len(labels))), rng.normal(size=len(labels))])
    return model


def export_toy_model(
    base_path: str | pathlib.Path,
    version: int = 1,
    labels: Sequence[str] = LABELS,
    input_size: int = 8,
    seed: int = 0,
) -> pathlib.Path:
    """Exports the toy classifier to `base_path/<version>/` through the trainer's own export
    code (`objrec.savedmodel.signatures`): the real signatures and in-graph decode over a
    model of one dense layer.

    Returns:
        The version directory.
    """
    functions = signatures.ServingFunctions(
        toy_classifier(labels, input_size, seed),
        tuple(labels),
        image_size=input_size,
        resize_mode=contract.DEFAULT_RESIZE_MODE,
        input_size=input_size,
        max_pixels=TOY_MAX_PIXELS,
    )
    version_dir = pathlib.Path(base_path) / str(version)
    signatures.write_saved_model(functions, str(version_dir))
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


@contextlib.contextmanager
def serving_toy(
    version_dir: pathlib.Path, root: pathlib.Path, **overrides
) -> Iterator[ModelServer]:
    """`running_server` on a copy of a toy export as version 1 of `root/objrec`."""
    base_path = root / contract.DEFAULT_MODEL_NAME
    copy_version(version_dir, base_path, 1)
    with running_server(base_path, **overrides) as server:
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


def sample_images() -> list[bytes]:
    """Three images of different formats and sizes."""
    return [
        encode_png(random_pixels(1, 12, 10)),
        encode_jpeg(random_pixels(2, 30, 17)),
        encode_png(random_pixels(3, 5, 40)),
    ]


def predict_request(
    images, model_name=contract.DEFAULT_MODEL_NAME, version=None, signature_name=""
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    )
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[contract.INPUT_IMAGE_BYTES].CopyFrom(
        tensors.to_tensor_proto(np.array(images, dtype=object))
    )
    return request


def outputs_of(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return {alias: tensors.to_ndarray(proto) for alias, proto in response.outputs.items()}


def version_states(server) -> dict[int, str]:
    return {state.version: state.state for state in server.core.version_states("objrec")}


def wait_for(condition, timeout=20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def call(server, path: str, body: object = None) -> tuple[int, dict]:
    """(HTTP status, JSON) of a GET, or of a POST when there is a body."""
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
