"""The whole path: image folder -> Beam -> TFRecords -> training -> export -> gRPC -> labels."""

import json
import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from objrec import contract
from preprocessing import pipeline
from serving.client import PredictionClient
from serving.config import ServerConfig
from serving.server import ModelServer
from tests import dataset_fixtures
from tests.conftest import TINY_TRAINING_FLAGS
from trainer import config as config_lib
from trainer import export, image_ops, train
from trainer import model as model_lib

IMAGES_PER_CLASS = 12


def write_image_folder(root) -> list[str]:
    """Class folders of 40x48 photos (PNG and JPEG), plus one corrupt file; returns paths."""
    rng = np.random.default_rng(11)
    paths = []
    for label_id, label in enumerate(dataset_fixtures.LABELS):
        folder = root / label
        folder.mkdir(parents=True)
        for index in range(IMAGES_PER_CLASS):
            pixels = dataset_fixtures.class_image(label_id, 48, rng)[:40]
            suffix = "png" if index % 2 else "jpg"
            path = folder / f"{index}.{suffix}"
            Image.fromarray(pixels).save(path)
            paths.append(str(path))
    (root / dataset_fixtures.LABELS[0] / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off")
    return paths


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def read_jsonl(directory: str, prefix: str) -> list[dict]:
    rows = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(prefix):
            with open(os.path.join(directory, name)) as file:
                rows.extend(json.loads(line) for line in file if line.strip())
    return rows


@pytest.mark.slow
def test_folder_to_served_predictions(tmp_path):
    image_paths = write_image_folder(tmp_path / "images")
    data_dir = str(tmp_path / "dataset")
    pipeline.run(["--input", str(tmp_path / "images"), "--output", data_dir, "--image_size", "32"])

    rejected = read_jsonl(data_dir, contract.REJECTED_PREFIX)
    assert [row["uri"] for row in rejected] == [
        str(tmp_path / "images" / dataset_fixtures.LABELS[0] / "corrupt.jpg")
    ]
    with open(os.path.join(data_dir, contract.LABELS_FILE)) as file:
        labels = file.read().split()
    assert labels == sorted(dataset_fixtures.LABELS)

    job_dir = str(tmp_path / "job")
    config = config_lib.parse_flags(
        ["--data_dir", data_dir, "--job_dir", job_dir, *TINY_TRAINING_FLAGS]
    )
    summary = train.train_and_evaluate(config)
    model_base_path = os.path.dirname(summary["export_dir"])

    with ModelServer(ServerConfig(model_base_path, port=0, host="127.0.0.1")) as server:
        address = f"127.0.0.1:{server.port}"
        with PredictionClient(address) as client:
            predictions = client.predict([read_bytes(p) for p in image_paths])
        assert all(p.valid for p in predictions)
        assert {p.label for p in predictions} <= set(labels)
        assert all(len(p.top_k) == 3 for p in predictions)

        # The served probabilities are the Keras model's on the same decoded image.
        sample = [read_bytes(p) for p in image_paths[:4]]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = contract.DEFAULT_MODEL_NAME
        request.inputs[contract.INPUT_IMAGE_BYTES].CopyFrom(tf.make_tensor_proto(sample))
        with grpc.insecure_channel(address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(request, timeout=60)
        served = tf.make_ndarray(response.outputs[contract.OUTPUT_PROBABILITIES])

    model = model_lib.build_model(len(labels), config.input_size, "none")
    tf.train.Checkpoint(model=model).read(export.final_weights_path(job_dir)).expect_partial()
    images = tf.stack(
        [
            image_ops.decode_raw_image(tf.constant(data), 32, "shorter_side", 32, config.max_pixels)
            for data in sample
        ]
    )
    np.testing.assert_allclose(served, model(images, training=False), atol=1e-4)
