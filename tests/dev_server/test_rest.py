"""The local server's REST API answers like TF Serving's: JSON shapes, b64 strings, errors."""

import base64

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from objrec import contract
from tests import serving_fixtures
from tests.serving_fixtures import (
    LABELS,
    call,
    outputs_of,
    predict_request,
    sample_images,
    serving_toy,
)


@pytest.fixture(scope="module")
def server(toy_version, tmp_path_factory):
    with serving_toy(
        toy_version,
        tmp_path_factory.mktemp("served"),
        rest_api_port=0,
        max_message_bytes=1024 * 1024,
    ) as running:
        yield running


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def test_row_format_predict_answers_like_grpc(server):
    images = sample_images() + [b"not an image"]
    status, document = call(
        server,
        "/v1/models/objrec:predict",
        {"instances": [{contract.INPUT_IMAGE_BYTES: b64(image)} for image in images]},
    )

    assert status == 200
    predictions = document["predictions"]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        expected = outputs_of(stub.Predict(predict_request(images), timeout=10))
    assert [row[contract.OUTPUT_VALID] for row in predictions] == [True, True, True, False]
    np.testing.assert_array_equal(
        np.array([row[contract.OUTPUT_PROBABILITIES] for row in predictions], np.float32),
        expected[contract.OUTPUT_PROBABILITIES],
    )
    assert predictions[0][contract.OUTPUT_TOP_K_CLASSES][0] in LABELS


def test_bare_b64_instances_feed_the_single_input(server):
    images = sample_images()[:2]
    status, document = call(
        server, "/v1/models/objrec/versions/1:predict", {"instances": [b64(i) for i in images]}
    )
    assert status == 200
    assert len(document["predictions"]) == 2


def test_columnar_format_and_the_pixels_signature(server):
    pixels = serving_fixtures.random_pixels(5, 8, 8)
    status, document = call(
        server,
        "/v1/models/objrec:predict",
        {"signature_name": contract.PIXELS_SIGNATURE, "inputs": [pixels.tolist()]},
    )
    assert status == 200
    outputs = document["outputs"]
    assert np.array(outputs[contract.OUTPUT_PROBABILITIES]).shape == (1, len(LABELS))
    assert outputs[contract.OUTPUT_VALID] == [True]


def test_model_status_and_metadata(server):
    assert call(server, "/v1/models/objrec") == (
        200,
        {
            "model_version_status": [
                {
                    "version": "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        },
    )
    status, document = call(server, "/v1/models/objrec/metadata")
    assert status == 200
    assert document["model_spec"]["version"] == "1"
    signatures = document["metadata"]["signature_def"]["signature_def"]
    assert set(signatures[contract.SERVING_SIGNATURE]["inputs"]) == {contract.INPUT_IMAGE_BYTES}


@pytest.mark.parametrize(
    ("path", "body", "http_status", "message"),
    [
        ("/v1/models/nope:predict", {"instances": ["x"]}, 404, "Latest(nope)"),
        ("/v1/models/objrec/versions/9", None, 404, "Could not find version 9 of model objrec"),
        ("/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        ("/v1/models/objrec/labels/stable:predict", {"instances": ["x"]}, 400,
         "Unrecognized servable version label: stable"),
        ("/v1/models/objrec:predict", b"{not json", 400, "JSON Parse error"),
        ("/v1/models/objrec:predict", {"instance": []}, 400, "Missing 'inputs' or 'instances'"),
        ("/v1/models/objrec:predict", {"instances": [{"image": b64(b"x")}]}, 400,
         "Signature input alias: image_bytes"),
        ("/v1/models/objrec:predict", {"instances": [{"b64": "@@@"}]}, 400,
         "input 'image_bytes': cannot make a DT_STRING tensor"),
        ("/v1/models/objrec:predict", {"instances": ["x"], "signature_name": "nope"}, 400,
         'Serving signature name: "nope" not found'),
        ("/v1/models/objrec:classify", {"examples": []}, 400,
         "Expected classification signature method_name to be tensorflow/serving/classify. "
         "Was: tensorflow/serving/predict"),
        ("/v1/models/objrec:regress", {"examples": []}, 400,
         "Expected regression signature method_name to be tensorflow/serving/regress."),
        ("/v1/models/nope:classify", {"examples": []}, 404, "Latest(nope)"),
        ("/v1/models/objrec:predict", {"instances": ["x" * 2 * 1024 * 1024]}, 413,
         "over the 1048576-byte limit"),
    ],
)  # fmt: skip
def test_errors_are_json_with_tf_servings_http_status(server, path, body, http_status, message):
    status, document = call(server, path, body)
    assert status == http_status
    assert message in document["error"]


def test_rest_answers_without_nagle_delay_and_keeps_a_long_listen_queue(server):
    # A kept-alive connection must not wait for delayed ACKs (TCP_NODELAY on every answer),
    # and thousands of clients connecting at once must not overflow a 5-deep queue.
    httpd = server._rest_server._httpd
    assert httpd.RequestHandlerClass.disable_nagle_algorithm is True
    assert httpd.request_queue_size >= 128
