"""The trainer's real export, served by the local server: loads the TF Serving way, same answers."""

import pathlib

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from objrec import contract
from objrec.savedmodel import tensors, warmup
from serving.client import PredictionClient
from tests import dataset_fixtures, serving_fixtures


@pytest.fixture(scope="module")
def model_base_path(trained_job) -> pathlib.Path:
    return pathlib.Path(trained_job["job_dir"]) / contract.EXPORT_DIR / contract.DEFAULT_MODEL_NAME


@pytest.fixture(scope="module")
def real_server(model_base_path):
    with serving_fixtures.running_server(model_base_path) as server:
        yield server


@pytest.mark.slow
def test_real_export_is_served_like_the_saved_model_answers(model_base_path, real_server):
    (version_dir,) = sorted(model_base_path.iterdir())
    rng = np.random.default_rng(0)
    images = [
        dataset_fixtures.jpeg_bytes(dataset_fixtures.class_image(label, 48, rng))
        for label in range(3)
    ]
    images.insert(1, b"\xff\xd8\xff" + bytes(20))  # a truncated JPEG: valid False, batch fine
    signature = tf.saved_model.load(str(version_dir)).signatures[contract.SERVING_SIGNATURE]
    expected = signature(image_bytes=tf.constant(images))

    with PredictionClient(f"127.0.0.1:{real_server.port}", timeout=60) as client:
        predictions = client.predict(images)
        signatures = client.model_metadata().signature_defs

    assert [p.valid for p in predictions] == expected[contract.OUTPUT_VALID].numpy().tolist()
    assert [p.valid for p in predictions] == [True, False, True, True]
    for prediction, probabilities in zip(
        predictions, expected[contract.OUTPUT_PROBABILITIES].numpy(), strict=True
    ):
        if prediction.valid:
            assert prediction.score == pytest.approx(probabilities.max(), abs=1e-6)
    for name in (contract.SERVING_SIGNATURE, contract.PIXELS_SIGNATURE):
        assert contract.OUTPUT_VALID in signatures[name].outputs


@pytest.mark.slow
def test_every_warmup_request_of_the_real_export_succeeds_against_the_server(
    model_base_path, real_server
):
    (version_dir,) = sorted(model_base_path.iterdir())
    assert tf.io.gfile.exists(warmup.warmup_file_path(str(version_dir))), (
        "the export has no assets.extra/tf_serving_warmup_requests: trainer/export.py writes it"
    )
    logs = list(warmup.read_warmup_file(str(version_dir)))
    requests = [log.predict_log.request for log in logs]
    batch_sizes = [tensors.shape_of(r.inputs[contract.INPUT_IMAGE_BYTES])[0] for r in requests]

    # The server replayed them while loading (a failing one would have failed the load)...
    (state,) = real_server.core.version_states(contract.DEFAULT_MODEL_NAME)
    assert (state.state, state.error_message) == ("AVAILABLE", "")
    # ...and each one answers over gRPC as a client's would: every image a real, valid one.
    with grpc.insecure_channel(f"127.0.0.1:{real_server.port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for request, batch_size in zip(requests, batch_sizes, strict=True):
            response = stub.Predict(request, timeout=120)
            valid = tensors.to_ndarray(response.outputs[contract.OUTPUT_VALID])
            assert valid.tolist() == [True] * batch_size
    assert all(log.WhichOneof("log_type") == "predict_log" for log in logs)
    assert 1 in batch_sizes and max(batch_sizes) > 1  # batch 1 and the serving batch size
