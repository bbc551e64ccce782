"""Hostile requests: each is refused with the caller's error, before any work, in bounded memory.

Every attack is sent to one server; afterwards a good request still succeeds and the server's
resident memory has not grown past a bound that the attacks, if they were expanded, would
exceed many times over.
"""

import json
import os
import resource
import socket
import subprocess
import sys

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from objrec import contract
from objrec.testing import free_port
from serving.dev_server import servable
from tests.serving_fixtures import (
    call,
    copy_version,
    encode_png,
    outputs_of,
    predict_request,
    sample_images,
    serving_toy,
    wait_for,
)


@pytest.fixture(scope="module")
def server(toy_version, tmp_path_factory):
    with serving_toy(toy_version, tmp_path_factory.mktemp("served"), rest_api_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def declared_only(alias: str, dtype: int, shape: list[int], signature: str = "") -> bytes:
    """A request whose tensor declares `shape` and holds no values: a few dozen bytes."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = contract.DEFAULT_MODEL_NAME
    request.model_spec.signature_name = signature
    tensor = request.inputs[alias]
    tensor.dtype = dtype
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    return request


def refused(stub, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    return error.value


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_shape_without_its_values_is_refused_before_any_work(server, stub):
    request = declared_only(contract.INPUT_IMAGE_BYTES, types_pb2.DT_STRING, [1000])
    assert request.ByteSize() < 64
    error = refused(stub, request)
    assert "declares shape [1000] (1000 values) but holds 0" in error.details()
    pixels = declared_only(contract.INPUT_IMAGES, types_pb2.DT_UINT8, [8, 8, 8, 3],
                           contract.PIXELS_SIGNATURE)  # fmt: skip
    assert "(1536 values) but holds 0" in refused(stub, pixels).details()


def test_a_batch_over_the_maximum_is_refused(stub):
    too_many = [b"x"] * (servable.MAX_BATCH_SIZE + 1)
    error = refused(stub, predict_request(too_many))
    assert f"batch of {servable.MAX_BATCH_SIZE + 1}, over the server's maximum" in error.details()
    pixels = declared_only(contract.INPUT_IMAGES, types_pb2.DT_UINT8, [20000, 8, 8, 3],
                           contract.PIXELS_SIGNATURE)  # fmt: skip
    assert "batch of 20000" in refused(stub, pixels).details()


def test_unknown_dtypes_and_negative_sizes_are_the_callers_error(stub):
    request = predict_request(sample_images())
    request.inputs[contract.INPUT_IMAGE_BYTES].dtype = 999
    assert "expects DT_STRING, got DataType(999)" in refused(stub, request).details()
    negative = declared_only(contract.INPUT_IMAGE_BYTES, types_pb2.DT_STRING, [-1])
    assert "negative dimension in shape [-1]" in refused(stub, negative).details()


def test_rest_attacks_get_400s(server):
    status, document = call(server, f"/v1/models/objrec/versions/{2**70}")
    assert status == 400 and "is over the largest" in document["error"]
    deep = b'{"instances": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    status, document = call(server, "/v1/models/objrec:predict", deep)
    assert status == 400 and "nested too deeply" in document["error"]
    nested = {"instances": [{contract.INPUT_IMAGE_BYTES: json.loads("[" * 900 + "]" * 900)}]}
    assert call(server, "/v1/models/objrec:predict", nested)[0] == 400
    many = {"instances": [{"b64": "eA=="}] * (servable.MAX_BATCH_SIZE + 1)}
    status, document = call(server, "/v1/models/objrec:predict", many)
    assert status == 400 and "over the server's maximum" in document["error"]


def raw_http(server, head: bytes, timeout: float = 60) -> bytes:
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=timeout) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_a_lying_or_broken_content_length_is_answered_and_closed(toy_version, tmp_path):
    path = b"POST /v1/models/objrec:predict HTTP/1.1\r\nHost: x\r\n"
    # A body shorter than declared, the client then silent: the read times out after
    # --rest_api_timeout_in_ms, the server answers and closes instead of holding the connection.
    with serving_toy(toy_version, tmp_path, rest_api_port=0, rest_api_timeout_in_ms=1000) as server:
        answer = raw_http(server, path + b"Content-Length: lots\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400") and b"is not a number of bytes" in answer
        answer = raw_http(server, path + b"Content-Length: 1000\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 408") and b"within 1 s (1000 bytes declared)" in answer


def test_after_every_attack_memory_is_bounded_and_good_requests_succeed(server, stub):
    before = peak_rss_mib()
    for _ in range(3):
        for shape in ([30000], [20000]):
            refused(stub, declared_only(contract.INPUT_IMAGE_BYTES, types_pb2.DT_STRING, shape))
        refused(stub, declared_only(contract.INPUT_IMAGES, types_pb2.DT_UINT8,
                                    [20000, 8, 8, 3], contract.PIXELS_SIGNATURE))  # fmt: skip
    # Expanded, the [20000, 8, 8, 3] request alone would be 61 MiB of uint8 and 245 MiB
    # as the model's float input; refused first, it costs nothing.
    assert peak_rss_mib() - before < 50
    # 50 MB of REST body, 50,000 strings of 1 KB (under the 64 MiB body limit): refused on the
    # batch size once parsed, before any image is decoded. Parsing costs a few times the body.
    body = json.dumps({"instances": [{"b64": "A" * 1024}] * 50_000}).encode()
    assert 50_000_000 < len(body) < server.config.max_message_bytes
    status, document = call(server, "/v1/models/objrec:predict", body)
    assert status == 400 and "batch of 50000, over the server's maximum" in document["error"]
    print(f"peak RSS growth after the 50 MB REST body: {peak_rss_mib() - before:.0f} MiB")
    assert peak_rss_mib() - before < 400
    response = stub.Predict(predict_request(sample_images()), timeout=30)
    assert outputs_of(response)[contract.OUTPUT_VALID].tolist() == [True, True, True]
    assert np.isfinite(outputs_of(response)[contract.OUTPUT_PROBABILITIES]).all()


def resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def answers(stub, request) -> bool:
    try:
        stub.Predict(request, timeout=10)
    except grpc.RpcError:
        return False
    return True


@pytest.mark.slow
def test_a_large_image_leaves_no_memory_behind_in_objrec_serve(toy_version, tmp_path):
    """A 7000 x 7000 PNG (within the pixel limit) decoded twice by the real `objrec-serve`
    process: its working set (~1 GB as float pixels) is given back once answered. With
    oneDNN's pooled allocator (TF_ONEDNN_USE_SYSTEM_ALLOCATOR=0) 742 MiB stayed."""
    base_path = tmp_path / "objrec"
    copy_version(toy_version, base_path, 1)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"}
    command = [sys.executable, "-m", "serving.dev_server", "--model_base_path", str(base_path),
               "--port", str(port), "--host", "127.0.0.1"]  # fmt: skip
    with subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as server:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                wait_for(lambda: answers(stub, predict_request(sample_images())), timeout=120)
                before = resident_mib(server.pid)
                large = predict_request([encode_png(np.zeros((7000, 7000, 3), np.uint8))])
                for _ in range(2):
                    response = stub.Predict(large, timeout=300)
                    assert outputs_of(response)[contract.OUTPUT_VALID].tolist() == [True]
                grown = resident_mib(server.pid) - before
        finally:
            server.terminate()
    print(f"objrec-serve resident memory after two 7000 x 7000 PNGs: +{grown:.0f} MiB")
    assert grown < 300
