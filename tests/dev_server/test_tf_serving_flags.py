"""objrec-serve takes TF Serving's command line: monitoring, batching, health, threads, refusals."""

import base64
import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import prediction_service_pb2_grpc

from objrec import contract
from serving.dev_server import cli, server
from serving.dev_server.config import ServerConfig
from tests.serving_fixtures import (
    call,
    predict_request,
    sample_images,
    serving_toy,
)

METRICS_PATH = "/monitoring/prometheus/metrics"


def scrape(running, path: str = METRICS_PATH) -> tuple[str, dict]:
    """(Content-Type, {sample name: [(labels, value), ...]}) of the metrics page."""
    url = f"http://127.0.0.1:{running.rest_port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return content_type, samples


def value(samples: dict, name: str, **labels) -> float:
    return sum(v for got, v in samples.get(name, []) if labels.items() <= got.items())


@pytest.fixture(scope="module")
def monitored(toy_version, tmp_path_factory):
    root = tmp_path_factory.mktemp("monitored")
    monitoring = root / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    with serving_toy(
        toy_version,
        root,
        rest_api_port=0,
        monitoring_config_file=str(monitoring),
        enable_batching=True,
    ) as running:
        yield running


def test_prometheus_metrics_have_tf_servings_names_and_labels(monitored):
    with grpc.insecure_channel(f"127.0.0.1:{monitored.port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(2):
            stub.Predict(predict_request(sample_images()), timeout=30)
        with pytest.raises(grpc.RpcError):
            stub.Predict(predict_request(sample_images(), model_name="nope"), timeout=30)
    image = {"b64": base64.b64encode(sample_images()[0]).decode()}
    assert call(monitored, "/v1/models/objrec:predict", {"instances": [image]})[0] == 200

    content_type, samples = scrape(monitored)

    assert content_type.startswith("text/plain; version=0.0.4")
    prefix = ":tensorflow:serving:"
    # Warmup runs no request through the API, so these count exactly the calls above.
    assert value(samples, prefix + "request_count", model_name="objrec", status="OK") == 3
    assert value(samples, prefix + "request_count", model_name="nope", status="NOT_FOUND") == 1
    grpc_latency = {"model_name": "objrec", "API": "Predict", "entrypoint": "GRPC"}
    assert value(samples, prefix + "request_latency_count", **grpc_latency) == 2
    rest_latency = {"model_name": "objrec", "API": "predict", "entrypoint": "REST"}
    assert value(samples, prefix + "request_latency_count", **rest_latency) == 1
    runtime = {"model_name": "objrec", "API": "Predict", "runtime": "TF1"}
    assert value(samples, prefix + "runtime_latency_count", **runtime) >= 3
    assert value(samples, prefix + "batching_session:processed_batch_size_count") >= 3
    # No prometheus_client-only series: counters without _total, no _created.
    assert not [name for name in samples if name.endswith(("_total", "_created"))]


def test_metrics_are_served_only_when_the_monitoring_config_enables_them(toy_version, tmp_path):
    with (
        serving_toy(toy_version, tmp_path, rest_api_port=0) as plain,
        pytest.raises(urllib.error.HTTPError) as error,
    ):
        scrape(plain)
    assert error.value.code == 400  # TF Serving: "Malformed request" for an unknown path


def test_batched_server_answers_as_the_unbatched_one(monitored, toy_version, tmp_path):
    images = sample_images()
    with serving_toy(toy_version, tmp_path) as plain:
        answers = []
        for running in (monitored, plain):
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                response = stub.Predict(predict_request(images), timeout=30)
            answers.append(response.outputs[contract.OUTPUT_PROBABILITIES])
    assert answers[0] == answers[1]


def test_metadata_prints_default_valued_fields_as_tf_serving_does(monitored):
    status, document = call(monitored, "/v1/models/objrec/metadata")
    assert status == 200
    signature = document["metadata"]["signature_def"]["signature_def"][contract.SERVING_SIGNATURE]
    image_bytes = signature["inputs"][contract.INPUT_IMAGE_BYTES]
    assert image_bytes["tensor_shape"]["unknown_rank"] is False
    assert signature["defaults"] == {}


# The command line ---------------------------------------------------------------------------


def test_unimplemented_tf_serving_flags_are_refused_by_name(tmp_path, capsys):
    for flag in ("--rest_api_num_threads=8", "--ssl_config_file", "--saved_model_tags=serve"):
        with pytest.raises(SystemExit) as exited:
            cli.parse_args(["--model_base_path", str(tmp_path), flag])
        assert exited.value.code == 2
        name = flag.split("=")[0]
        assert f"{name} is a tensorflow_model_server flag that objrec-serve does not implement" in (
            capsys.readouterr().err
        )


def test_a_batching_file_without_enable_batching_is_refused_as_tf_serving_does(tmp_path, capsys):
    args = ["--model_base_path", str(tmp_path), "--batching_parameters_file", "b.config"]
    with pytest.raises(SystemExit):
        cli.parse_args(args)
    assert "--batching_parameters_file is set without setting --enable_batching to true." in (
        capsys.readouterr().err
    )


def test_tf_servings_flag_spellings_parse(tmp_path):
    config = cli.parse_args(
        [
            f"--model_base_path={tmp_path}",
            "--enable_batching",
            "--enable_grpc_healthcheck_service=true",
            "--tensorflow_intra_op_parallelism=3",
            "--tensorflow_inter_op_parallelism=2",
            "--grpc_channel_arguments=grpc.max_connection_age_ms=300000,grpc.lb_policy_name=x",
            "--rest_api_timeout_in_ms=5000",
        ]
    )
    assert config.enable_batching is True
    assert config.enable_grpc_healthcheck_service is True
    session = server.session_config(config)
    assert (session.intra_op_parallelism_threads, session.inter_op_parallelism_threads) == (3, 2)
    assert server.grpc_channel_arguments(config.grpc_channel_arguments) == [
        ("grpc.max_connection_age_ms", 300000),
        ("grpc.lb_policy_name", "x"),
    ]


def test_all_three_parallelism_flags_together_are_refused_as_tf_serving_does():
    config = ServerConfig(
        tensorflow_session_parallelism=2,
        tensorflow_intra_op_parallelism=2,
        tensorflow_inter_op_parallelism=2,
    )
    with pytest.raises(ValueError, match="You cannot configure all"):
        server.session_config(config)


def test_a_malformed_channel_argument_is_refused_naming_it():
    with pytest.raises(ValueError, match="'grpc.keepalive_time_ms' is not key=value"):
        server.grpc_channel_arguments("grpc.max_connection_age_ms=1,grpc.keepalive_time_ms")
