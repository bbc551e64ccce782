"""The local model server speaks TF Serving's gRPC API: outputs, metadata, status codes, versions.

Talks to an in-process server with the raw TF Serving stubs (not objrec's client), so these
tests pin the wire behaviour any TF Serving client relies on.
"""

import concurrent.futures
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from objrec import contract, testing
from objrec.savedmodel import tensors, warmup
from serving.dev_server import cli as server_cli
from serving.dev_server import model_manager
from serving.dev_server.config import ServerConfig
from serving.dev_server.servable import SavedModelServable
from serving.dev_server.server import ModelServer
from tests import REPO, serving_fixtures
from tests.serving_fixtures import (
    LABELS,
    OTHER_LABELS,
    copy_version,
    outputs_of,
    predict_request,
    running_server,
    sample_images,
    serving_toy,
    version_states,
    wait_for,
)


@pytest.fixture(scope="module")
def server(toy_version, tmp_path_factory):
    with serving_toy(
        toy_version, tmp_path_factory.mktemp("served"), enable_grpc_healthcheck_service=True
    ) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as open_channel:
        yield open_channel


@pytest.fixture
def predictions(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def saved_model_outputs(version_dir: pathlib.Path, images: list[bytes]) -> dict[str, np.ndarray]:
    """What the SavedModel itself answers, through TensorFlow's Python API."""
    signature = tf.saved_model.load(str(version_dir)).signatures[contract.SERVING_SIGNATURE]
    return {k: v.numpy() for k, v in signature(image_bytes=tf.constant(images)).items()}


def assert_still_serving(predictions) -> None:
    response = predictions.Predict(predict_request(sample_images()[:1]), timeout=10)
    assert outputs_of(response)[contract.OUTPUT_VALID].tolist() == [True]


def test_predict_answers_every_contract_output_in_input_order(predictions):
    images = sample_images()
    response = predictions.Predict(predict_request(images), timeout=10)

    outputs = outputs_of(response)
    assert outputs[contract.OUTPUT_PROBABILITIES].shape == (3, len(LABELS))
    assert outputs[contract.OUTPUT_PROBABILITIES].dtype == np.float32
    assert outputs[contract.OUTPUT_TOP_K_CLASSES].shape == (3, 3)
    assert outputs[contract.OUTPUT_TOP_K_SCORES].dtype == np.float32
    assert outputs[contract.OUTPUT_TOP_K_CLASS_IDS].dtype == np.int64
    assert outputs[contract.OUTPUT_VALID].tolist() == [True, True, True]
    for row in range(3):  # each row answers its own image: the top class is its argmax
        probabilities = outputs[contract.OUTPUT_PROBABILITIES][row]
        best = int(np.argmax(probabilities))
        assert outputs[contract.OUTPUT_TOP_K_CLASS_IDS][row, 0] == best
        assert outputs[contract.OUTPUT_TOP_K_CLASSES][row, 0].decode() == LABELS[best]
    # Answering like TF Serving's AsProtoField: typed fields, which many clients read directly.
    assert len(response.outputs[contract.OUTPUT_TOP_K_SCORES].float_val) == 9
    assert response.model_spec.name == contract.DEFAULT_MODEL_NAME
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == contract.SERVING_SIGNATURE


def test_served_outputs_equal_the_saved_models_own(predictions, toy_version):
    images = sample_images()
    # Reversed order too: a server mixing up rows would fail one of the two.
    for batch in (images, images[::-1]):
        served = outputs_of(predictions.Predict(predict_request(batch), timeout=10))
        expected = saved_model_outputs(toy_version, batch)
        for alias in (contract.OUTPUT_PROBABILITIES, contract.OUTPUT_TOP_K_SCORES):
            np.testing.assert_allclose(served[alias], expected[alias], atol=1e-6)
        for alias in (contract.OUTPUT_TOP_K_CLASSES, contract.OUTPUT_VALID):
            np.testing.assert_array_equal(served[alias], expected[alias])


def test_undecodable_image_is_invalid_without_failing_the_batch(predictions):
    good = sample_images()
    batch = [good[0], b"this is not an image", good[1], b""]
    outputs = outputs_of(predictions.Predict(predict_request(batch), timeout=10))

    assert outputs[contract.OUTPUT_VALID].tolist() == [True, False, True, False]
    assert not outputs[contract.OUTPUT_PROBABILITIES][[1, 3]].any()
    assert outputs[contract.OUTPUT_PROBABILITIES][[0, 2]].sum(axis=1) == pytest.approx([1, 1])


def test_images_signature_takes_decoded_pixels(predictions):
    pixels = serving_fixtures.random_pixels(4, 8, 8)[None]
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(
            name=contract.DEFAULT_MODEL_NAME, signature_name=contract.PIXELS_SIGNATURE
        )
    )
    request.inputs[contract.INPUT_IMAGES].CopyFrom(tensors.to_tensor_proto(pixels))
    response = predictions.Predict(request, timeout=10)

    assert response.model_spec.signature_name == contract.PIXELS_SIGNATURE
    assert outputs_of(response)[contract.OUTPUT_PROBABILITIES].shape == (1, len(LABELS))


def test_output_filter_returns_only_the_outputs_asked_for(predictions):
    request = predict_request(sample_images())
    request.output_filter.extend([contract.OUTPUT_VALID, contract.OUTPUT_TOP_K_CLASSES])
    response = predictions.Predict(request, timeout=10)
    assert set(response.outputs) == {contract.OUTPUT_VALID, contract.OUTPUT_TOP_K_CLASSES}

    request.output_filter.append("logits")
    with pytest.raises(grpc.RpcError) as error:
        predictions.Predict(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: logits" in error.value.details()


def test_get_model_metadata_returns_the_signature_def_map(predictions):
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name=contract.DEFAULT_MODEL_NAME),
        metadata_field=["signature_def"],
    )
    response = predictions.GetModelMetadata(request, timeout=10)

    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_def_map)
    signatures = signature_def_map.signature_def
    contract_outputs = {
        contract.OUTPUT_PROBABILITIES,
        contract.OUTPUT_TOP_K_CLASSES,
        contract.OUTPUT_TOP_K_SCORES,
        contract.OUTPUT_TOP_K_CLASS_IDS,
        contract.OUTPUT_VALID,
    }
    assert set(signatures[contract.SERVING_SIGNATURE].inputs) == {contract.INPUT_IMAGE_BYTES}
    assert set(signatures[contract.SERVING_SIGNATURE].outputs) == contract_outputs
    assert set(signatures[contract.PIXELS_SIGNATURE].inputs) == {contract.INPUT_IMAGES}
    assert set(signatures[contract.PIXELS_SIGNATURE].outputs) == contract_outputs
    assert response.model_spec.name == contract.DEFAULT_MODEL_NAME
    assert response.model_spec.version.value == 1


def test_get_model_status_reports_the_loaded_version_available(models):
    request = get_model_status_pb2.GetModelStatusRequest(
        model_spec=model_pb2.ModelSpec(name=contract.DEFAULT_MODEL_NAME)
    )
    (status,) = models.GetModelStatus(request, timeout=10).model_version_status

    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0


@pytest.mark.parametrize(
    ("model_name", "version", "message"),
    [
        ("nope", None, "Servable not found for request: Latest(nope)"),
        (contract.DEFAULT_MODEL_NAME, 7, "Servable not found for request: Specific(objrec, 7)"),
    ],
)
def test_unknown_model_or_version_is_not_found(predictions, models, model_name, version, message):
    with pytest.raises(grpc.RpcError) as error:
        predictions.Predict(predict_request(sample_images(), model_name, version), timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == message

    spec = model_pb2.ModelSpec(name=model_name)
    if version is not None:
        spec.version.value = version
    with pytest.raises(grpc.RpcError) as error:
        models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert model_name in error.value.details()
    assert_still_serving(predictions)


def wrong_input_name(request):
    request.inputs["image"].CopyFrom(request.inputs.pop(contract.INPUT_IMAGE_BYTES))


def extra_input(request):
    request.inputs["mask"].CopyFrom(tensors.to_tensor_proto(np.zeros([1], np.float32)))


def wrong_dtype(request):
    request.inputs[contract.INPUT_IMAGE_BYTES].CopyFrom(
        tensors.to_tensor_proto(np.zeros([2], np.float32))
    )


def empty_batch(request):
    request.inputs[contract.INPUT_IMAGE_BYTES].CopyFrom(
        tensors.to_tensor_proto(np.array([], dtype=object))
    )


def wrong_rank(request):
    request.inputs[contract.INPUT_IMAGE_BYTES].CopyFrom(
        tensors.to_tensor_proto(np.array([[b"a", b"b"]], dtype=object))
    )


def no_model_name(request):
    request.model_spec.name = ""


@pytest.mark.parametrize(
    ("break_request", "message"),
    [
        (wrong_input_name, "Signature input alias: image_bytes"),
        (extra_input, "Sent extra: {mask}"),
        (
            wrong_dtype,
            "input 'image_bytes' of signature 'serving_default' expects DT_STRING, got DT_FLOAT",
        ),
        (empty_batch, "input 'image_bytes' of signature 'serving_default' has an empty batch"),
        (wrong_rank, "expects shape [None], got [1, 2]"),
        (no_model_name, "ModelSpec has no name specified."),
    ],
)
def test_bad_request_is_invalid_argument_and_the_server_keeps_serving(
    predictions, break_request, message
):
    request = predict_request(sample_images())
    break_request(request)
    with pytest.raises(grpc.RpcError) as error:
        predictions.Predict(request, timeout=10)

    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()
    assert_still_serving(predictions)


def test_unknown_signature_is_failed_precondition_as_in_tf_serving(predictions):
    with pytest.raises(grpc.RpcError) as error:
        predictions.Predict(predict_request(sample_images(), signature_name="predict"), timeout=10)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.value.details() == 'Serving signature key "predict" not found.'


def test_classify_regress_and_multi_inference_answer_as_tf_serving_for_a_predict_model(
    predictions,
):
    spec = model_pb2.ModelSpec(name=contract.DEFAULT_MODEL_NAME)
    calls = [
        (predictions.Classify, classification_pb2.ClassificationRequest(model_spec=spec),
         "Expected classification signature method_name to be tensorflow/serving/classify. "
         "Was: tensorflow/serving/predict"),
        (predictions.Regress, regression_pb2.RegressionRequest(model_spec=spec),
         "Expected regression signature method_name to be tensorflow/serving/regress. "
         "Was: tensorflow/serving/predict"),
        (predictions.MultiInference, inference_pb2.MultiInferenceRequest(
            tasks=[inference_pb2.InferenceTask(model_spec=spec, method_name="x")]),
         "Unsupported signature method_name: tensorflow/serving/predict"),
    ]  # fmt: skip
    for method, request, message in calls:
        with pytest.raises(grpc.RpcError) as error:
            method(request, timeout=10)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details() == message
    unknown = classification_pb2.ClassificationRequest(model_spec=model_pb2.ModelSpec(name="no"))
    with pytest.raises(grpc.RpcError) as error:
        predictions.Classify(unknown, timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_request_over_the_message_limit_is_resource_exhausted(toy_version, tmp_path):
    copy_version(toy_version, tmp_path, 1)
    with (
        running_server(tmp_path, max_message_bytes=1024 * 1024) as small,
        grpc.insecure_channel(f"127.0.0.1:{small.port}") as small_channel,
    ):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(small_channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(predict_request([b"\xff\xd8\xff" + bytes(2 * 1024 * 1024)]))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # gRPC's own message, the one TF Serving's clients see too.
        assert "Received message larger than max (" in error.value.details()
        assert_still_serving(stub)


def test_health_service_reports_serving_under_tf_servings_names(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "ModelService", "PredictionService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as error:
        stub.Check(health_pb2.HealthCheckRequest(service="Other"), timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_service_is_off_unless_asked_for_as_in_tf_serving(toy_version, tmp_path):
    copy_version(toy_version, tmp_path, 1)
    with (
        running_server(tmp_path) as plain,
        grpc.insecure_channel(f"127.0.0.1:{plain.port}") as own_channel,
    ):
        with pytest.raises(grpc.RpcError) as error:
            health_pb2_grpc.HealthStub(own_channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert_still_serving(prediction_service_pb2_grpc.PredictionServiceStub(own_channel))


def test_concurrent_clients_are_all_served(server):
    images = sample_images()
    expected = None

    def client_session(_) -> list[np.ndarray]:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as own_channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(own_channel)
            return [
                outputs_of(stub.Predict(predict_request(images), timeout=30))[
                    contract.OUTPUT_PROBABILITIES
                ]
                for _ in range(4)
            ]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = [answer for session in pool.map(client_session, range(8)) for answer in session]
    assert len(answers) == 32
    expected = answers[0]
    for answer in answers:
        np.testing.assert_allclose(answer, expected, atol=1e-6)


def test_pinned_version_is_served_while_the_newest_is_the_default(
    toy_version, other_toy_version, tmp_path
):
    copy_version(toy_version, tmp_path, 1)
    copy_version(other_toy_version, tmp_path, 2)
    with (
        running_server(tmp_path, num_versions=2) as both,
        grpc.insecure_channel(f"127.0.0.1:{both.port}") as both_channel,
    ):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(both_channel)
        newest = stub.Predict(predict_request(sample_images()), timeout=10)
        pinned = stub.Predict(predict_request(sample_images(), version=1), timeout=10)

    assert newest.model_spec.version.value == 2
    assert set(outputs_of(newest)[contract.OUTPUT_TOP_K_CLASSES].ravel()) <= {
        label.encode() for label in OTHER_LABELS
    }
    assert outputs_of(newest)[contract.OUTPUT_TOP_K_CLASSES].shape == (3, 5)
    assert pinned.model_spec.version.value == 1
    assert outputs_of(pinned)[contract.OUTPUT_TOP_K_CLASSES].shape == (3, 3)


@pytest.mark.slow
def test_new_version_is_loaded_the_old_one_unloaded_and_back_on_rollback(
    toy_version, other_toy_version, tmp_path
):
    copy_version(toy_version, tmp_path, 1)
    with running_server(tmp_path, file_system_poll_wait_seconds=0.1) as polling:
        # Half-written exports and non-version entries are ignored meanwhile.
        (tmp_path / "3").mkdir()
        (tmp_path / "tmp-4").mkdir()
        copy_version(other_toy_version, tmp_path, 2)
        wait_for(lambda: version_states(polling) == {2: "AVAILABLE", 1: "END"})

        with grpc.insecure_channel(f"127.0.0.1:{polling.port}") as polling_channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(polling_channel)
            response = stub.Predict(predict_request(sample_images()), timeout=10)
            assert response.model_spec.version.value == 2

            # Rolling back is deleting the new version: the old one is loaded again.
            shutil.rmtree(tmp_path / "2")
            wait_for(lambda: version_states(polling)[1] == "AVAILABLE")
            response = stub.Predict(predict_request(sample_images()), timeout=10)
            assert response.model_spec.version.value == 1


def broken_export(toy_version: pathlib.Path, base_path: pathlib.Path, version: int) -> None:
    """A version directory whose graph cannot be parsed, landed atomically like a real export."""
    staging = copy_version(toy_version, base_path, f"{version}.tmp")
    (staging / "saved_model.pb").write_bytes(b"not a SavedModel")
    staging.rename(base_path / str(version))


def test_broken_new_version_is_reported_and_the_old_one_keeps_serving(toy_version, tmp_path):
    copy_version(toy_version, tmp_path, 1)
    with running_server(tmp_path, file_system_poll_wait_seconds=0.05) as server:
        broken_export(toy_version, tmp_path, 2)
        wait_for(lambda: version_states(server).get(2) == "END")  # LOADING, then END

        states = {s.version: s for s in server.core.version_states("objrec")}
        assert states[2].state == "END"
        assert "saved_model.pb" in states[2].error_message
        assert states[1].state == "AVAILABLE"
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as own_channel:
            assert_still_serving(prediction_service_pb2_grpc.PredictionServiceStub(own_channel))


def test_broken_newest_version_at_startup_serves_nothing_as_in_tf_serving(toy_version, tmp_path):
    # TF Serving aspires the newest version only; it does not fall back to an older one, so a
    # CI check against a broken export fails instead of passing on the previous version.
    copy_version(toy_version, tmp_path, 1)
    broken_export(toy_version, tmp_path, 2)
    with running_server(tmp_path, enable_grpc_healthcheck_service=True) as server:
        assert version_states(server) == {2: "END"}
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as own_channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(own_channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.Predict(predict_request(sample_images()), timeout=10)
            health = health_pb2_grpc.HealthStub(own_channel)
            response = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_is_not_serving_until_a_version_loads(toy_version, tmp_path):
    with (
        running_server(
            tmp_path, file_system_poll_wait_seconds=0.05, enable_grpc_healthcheck_service=True
        ) as waiting,
        grpc.insecure_channel(f"127.0.0.1:{waiting.port}") as own_channel,
    ):
        health = health_pb2_grpc.HealthStub(own_channel)

        def status():
            request = health_pb2.HealthCheckRequest(service="")
            return health.Check(request, timeout=10).status

        assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
        copy_version(toy_version, tmp_path, 1)
        wait_for(lambda: status() == health_pb2.HealthCheckResponse.SERVING)


def test_warmup_records_are_replayed_and_a_failing_one_fails_the_load(toy_version, tmp_path):
    good = copy_version(toy_version, tmp_path, 1)
    warmup.write_warmup_file(str(good), [warmup.predict_log(sample_images())] * 3)
    servable = SavedModelServable("objrec", 1, str(good))
    assert model_manager.run_warmup(servable) == 3

    bad = copy_version(toy_version, tmp_path, 2)
    log = warmup.predict_log(sample_images())
    log.predict_log.request.inputs["image"].CopyFrom(
        log.predict_log.request.inputs.pop(contract.INPUT_IMAGE_BYTES)
    )
    warmup.write_warmup_file(str(bad), [log])
    with running_server(tmp_path, num_versions=2) as server:
        states = {s.version: s for s in server.core.version_states("objrec")}
    assert states[1].state == "AVAILABLE"
    assert states[2].state == "END"
    assert "Signature input alias: image_bytes" in states[2].error_message


@pytest.mark.slow
def test_command_line_server_serves_then_stops_gracefully_on_sigterm(toy_version, tmp_path):
    copy_version(toy_version, tmp_path, 1)
    port = testing.free_port()
    command = [
        sys.executable, "-m", "serving.dev_server", "--model_base_path", str(tmp_path),
        "--model_name", "objrec", "--port", str(port), "--host", "127.0.0.1",
        "--enable_grpc_healthcheck_service",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as own_channel:
            health = health_pb2_grpc.HealthStub(own_channel)
            request = health_pb2.HealthCheckRequest(service="")
            response = health.Check(request, timeout=60, wait_for_ready=True)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
            assert_still_serving(prediction_service_pb2_grpc.PredictionServiceStub(own_channel))
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "Shutting down" in output


def test_stop_lets_running_requests_finish_and_refuses_new_ones(toy_version, tmp_path, monkeypatch):
    copy_version(toy_version, tmp_path, 1)
    running, stop_begun, server_started = threading.Event(), threading.Event(), threading.Event()
    predict = SavedModelServable.predict

    def slow_predict(self, request):
        if server_started.is_set():  # not warmup's requests
            running.set()
            assert stop_begun.wait(30)  # still running when the stop begins
        return predict(self, request)

    monkeypatch.setattr(SavedModelServable, "predict", slow_predict)
    config = ServerConfig(
        str(tmp_path),
        port=0,
        host="127.0.0.1",
        grace_period_seconds=10,
        enable_grpc_healthcheck_service=True,
    )
    server = ModelServer(config)
    enter_graceful_shutdown = server._health.enter_graceful_shutdown

    def begin_stop():
        enter_graceful_shutdown()
        stop_begun.set()

    monkeypatch.setattr(server._health, "enter_graceful_shutdown", begin_stop)
    address = f"127.0.0.1:{server.start()}"
    server_started.set()
    with grpc.insecure_channel(address) as own_channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(own_channel)
        in_flight = stub.Predict.future(predict_request(sample_images()), timeout=30)
        assert running.wait(10)
        stopping = threading.Thread(target=server.stop)  # what SIGTERM does in serve()
        stopping.start()
        response = in_flight.result()
        stopping.join(30)
    assert outputs_of(response)[contract.OUTPUT_VALID].tolist() == [True, True, True]
    with grpc.insecure_channel(address) as new_channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(new_channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(predict_request(sample_images()), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_port_in_use_is_a_clear_error(toy_version, tmp_path):
    copy_version(toy_version, tmp_path, 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = f"cannot bind the REST port 127.0.0.1:{port}: Address already in use"
        with pytest.raises(OSError, match=message), running_server(tmp_path, rest_api_port=port):
            pass


def test_a_relative_model_base_path_is_resolved(tmp_path, monkeypatch):
    """TF Serving wants an absolute base path; objrec-serve resolves a relative one."""
    (tmp_path / "job" / "export" / "objrec").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = server_cli.parse_args(["--model_base_path", "job/export/objrec"])
    assert config.model_base_path == str(tmp_path / "job" / "export" / "objrec")
