"""TF Serving's model config file: several models, version policies, version labels, reloads.

The golden messages and codes are TF Serving's (server_core.cc, http_rest_api_util.cc), so a
config and a client that work here work against `tensorflow_model_server --model_config_file`.
"""

import base64
import json
import pathlib
import re

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from objrec import contract
from serving.client import PredictionClient, cli
from serving.dev_server import cli as server_cli
from serving.dev_server import model_config
from tests import serving_fixtures
from tests.serving_fixtures import (
    LABELS,
    OTHER_LABELS,
    call,
    copy_version,
    model_config_text,
    predict_request,
    running_server,
    sample_images,
    version_states,
    wait_for,
)

# Version 1 is the 3-class toy (top 3), version 2 the 6-class one (top 5): a response's
# top-k width tells which version answered.
TOP_K_OF_VERSION = {1: len(LABELS), 2: contract.top_k_for(len(OTHER_LABELS))}


@pytest.fixture(scope="module")
def base_path(toy_version, other_toy_version, tmp_path_factory) -> pathlib.Path:
    """objrec/1 (3 classes) and objrec/2 (6 classes)."""
    path = tmp_path_factory.mktemp("models") / "objrec"
    copy_version(toy_version, path, 1)
    copy_version(other_toy_version, path, 2)
    return path


def write_config(directory: pathlib.Path, base_path: pathlib.Path, **labels: int) -> pathlib.Path:
    """models.config serving versions 1 and 2 of objrec with `labels`, and `other` (newest)."""
    path = directory / "models.config"
    path.write_text(
        model_config_text(
            {"objrec": base_path, "other": base_path},
            versions={"objrec": [1, 2]},
            labels={"objrec": labels},
        )
    )
    return path


@pytest.fixture(scope="module")
def labelled_server(base_path, tmp_path_factory):
    config_file = write_config(tmp_path_factory.mktemp("config"), base_path, stable=1, canary=2)
    with running_server(
        model_config_file=str(config_file),
        allow_version_labels_for_unavailable_models=True,
        rest_api_port=0,
    ) as running:
        yield running


@pytest.fixture
def predictions(labelled_server):
    with grpc.insecure_channel(f"127.0.0.1:{labelled_server.port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def labelled_request(label: str, model_name: str = "objrec"):
    request = predict_request(sample_images(), model_name)
    request.model_spec.version_label = label
    return request


def served_version(response) -> tuple[int, int]:
    """(version the response names, top-k width of its answer)."""
    width = response.outputs[contract.OUTPUT_TOP_K_CLASSES].tensor_shape.dim[1].size
    return response.model_spec.version.value, width


@pytest.mark.parametrize(("label", "version"), [("stable", 1), ("canary", 2)])
def test_a_label_pins_the_version_it_names(predictions, label, version):
    response = predictions.Predict(labelled_request(label), timeout=10)
    assert served_version(response) == (version, TOP_K_OF_VERSION[version])


def test_without_a_pin_the_newest_aspired_version_answers(predictions):
    response = predictions.Predict(predict_request(sample_images()), timeout=10)
    assert served_version(response) == (2, TOP_K_OF_VERSION[2])


def test_each_model_of_the_config_is_served_by_its_name(predictions, labelled_server):
    response = predictions.Predict(predict_request(sample_images(), "other"), timeout=10)
    assert response.model_spec.name == "other"
    assert version_states(labelled_server) == {2: "AVAILABLE", 1: "AVAILABLE"}


@pytest.mark.parametrize("model_name", ["objrec", "nope"])
def test_unknown_label_is_invalid_argument_and_the_server_keeps_serving(predictions, model_name):
    with pytest.raises(grpc.RpcError) as error:
        predictions.Predict(labelled_request("beta", model_name), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "Unrecognized servable version label: beta"
    response = predictions.Predict(labelled_request("stable"), timeout=10)
    assert response.model_spec.version.value == 1


def test_metadata_resolves_a_label(predictions):
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name="objrec", version_label="stable"),
        metadata_field=["signature_def"],
    )
    assert predictions.GetModelMetadata(request, timeout=10).model_spec.version.value == 1


def test_rest_label_routes(labelled_server):
    image = serving_fixtures.encode_png(serving_fixtures.random_pixels(1))
    body = {"instances": [{"b64": base64.b64encode(image).decode()}]}

    status, document = call(labelled_server, "/v1/models/objrec/labels/canary:predict", body)
    assert status == 200
    assert len(document["predictions"][0][contract.OUTPUT_TOP_K_CLASSES]) == TOP_K_OF_VERSION[2]

    status, document = call(labelled_server, "/v1/models/objrec/labels/beta:predict", body)
    assert (status, document) == (400, {"error": "Unrecognized servable version label: beta"})

    status, document = call(labelled_server, "/v1/models/objrec/labels/stable/metadata")
    assert (status, document["model_spec"]["version"]) == (200, "1")


def test_client_pins_a_label(labelled_server):
    address = f"127.0.0.1:{labelled_server.port}"
    for label, version in (("stable", 1), ("canary", 2)):
        with PredictionClient(address, timeout=10, version_label=label) as pinned:
            (prediction,) = pinned.predict(sample_images()[:1])
            assert len(prediction.top_k) == TOP_K_OF_VERSION[version]
            assert pinned.model_metadata().version == version
    with pytest.raises(ValueError, match="not both"):
        PredictionClient(address, version=1, version_label="stable")


def test_cli_pins_a_label_and_names_an_unknown_one(labelled_server, tmp_path, capsys):
    image = tmp_path / "cat.png"
    image.write_bytes(sample_images()[0])
    address = f"127.0.0.1:{labelled_server.port}"

    argv = ["--server", address, "--json", "--model_version_label", "canary", str(image)]
    assert cli.run(cli.parse_args(argv)) == 0
    row = json.loads(capsys.readouterr().out)
    assert len(row["top_k"]) == TOP_K_OF_VERSION[2]

    argv = ["--server", address, "--model_version_label", "beta", str(image)]
    assert cli.run(cli.parse_args(argv)) == 1
    assert "Unrecognized servable version label: beta" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        cli.parse_args([*argv, "--model_version", "1"])


def test_labels_in_the_startup_config_need_the_flag_as_in_tf_serving(base_path, tmp_path):
    # Nothing is loaded when TF Serving reads its first config, so it refuses every label.
    config_file = write_config(tmp_path, base_path, stable=1)
    message = (
        "FAILED_PRECONDITION: Request to assign label to version 1 of model objrec, which is "
        "not currently available for inference (start with "
        "--allow_version_labels_for_unavailable_models=true)"
    )
    with (
        pytest.raises(ValueError, match=re.escape(message)),
        running_server(model_config_file=str(config_file)),
    ):
        pass


def reload(stub, config_file: pathlib.Path) -> None:
    config = model_config.read_model_server_config(str(config_file))
    stub.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=config), timeout=30
    )


def test_reload_moves_labels_only_onto_available_versions(base_path, tmp_path):
    config_file = write_config(tmp_path, base_path, stable=1)
    with (
        running_server(
            model_config_file=str(config_file), allow_version_labels_for_unavailable_models=True
        ) as running,
        grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        reload(models, write_config(tmp_path, base_path, stable=2))  # promote
        assert stub.Predict(labelled_request("stable"), timeout=10).model_spec.version.value == 2

        # Moving a label onto a version that is not loaded is refused even with the flag, and
        # the config in force stays.
        with pytest.raises(grpc.RpcError) as error:
            reload(models, write_config(tmp_path, base_path, stable=3))
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.value.details() == (
            "Request to assign label to version 3 of model objrec, which is not currently "
            "available for inference"
        )
        assert stub.Predict(labelled_request("stable"), timeout=10).model_spec.version.value == 2

        # A new label may name a version still to come; until it loads, it is NOT_FOUND.
        reload(models, write_config(tmp_path, base_path, stable=2, next=3))
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(labelled_request("next"), timeout=10)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert error.value.details() == "Servable not found for request: Specific(objrec, 3)"

        # The whole config is replaced: a model left out is unloaded.
        only_objrec = tmp_path / "objrec.config"
        only_objrec.write_text(model_config_text({"objrec": base_path}))
        reload(models, only_objrec)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(predict_request(sample_images(), "other"), timeout=10)
        assert error.value.details() == "Servable not found for request: Latest(other)"


def test_config_file_edits_are_picked_up_without_a_restart(base_path, tmp_path):
    config_file = write_config(tmp_path, base_path, stable=1)
    with running_server(
        model_config_file=str(config_file),
        model_config_file_poll_wait_seconds=0.1,
        allow_version_labels_for_unavailable_models=True,
    ) as running:
        stable = model_pb2.ModelSpec(name="objrec", version_label="stable")
        assert running.core.servable(stable).version == 1

        # Retire version 1 and move the label, as a ConfigMap update would: the kubelet
        # swaps the whole file at once.
        edited = tmp_path / "models.config.new"
        edited.write_text(
            model_config_text({"objrec": base_path}, {"objrec": [2]}, {"objrec": {"stable": 2}})
        )
        edited.replace(config_file)
        wait_for(lambda: version_states(running) == {2: "AVAILABLE", 1: "END"})
        # The label moved no later than version 1 was unloaded.
        assert running.core.config.model_config_list.config[0].version_labels == {"stable": 2}
        assert running.core.servable(stable).version == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model_config_list { config { name: "a" base_path: "/m" model_platform: "tensorflow" } '
         'config { name: "a" base_path: "/n" model_platform: "tensorflow" } }',
         "Illegal to list model a multiple times in config list"),
        ('model_config_list { config { name: "a" base_path: "m" model_platform: "tensorflow" } }',
         "Expected model a to have an absolute path or URI; got base_path()=m"),
        ('model_config_list { config { name: "a" base_path: "/m" } }',
         "nor ModelServerConfig::model_platform"),
        ('model_config_list { config { name: "a" base_path: "/m" model_platform: "onnx" } }',
         "Model a requests unsupported platform onnx"),
        ("model_config_list { config { nme: 1 } }", "is not a text-format ModelServerConfig"),
    ],
)  # fmt: skip
def test_config_files_tf_serving_would_refuse_are_refused(tmp_path, text, message):
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        model_config.read_model_server_config(str(path))
    assert message in str(error.value)


def policy(text: str) -> model_config.VersionPolicy:
    return text_format.Parse(text, model_config.VersionPolicy())


@pytest.mark.parametrize(
    ("policy_text", "expected"),
    [
        ("", [9]),
        ("latest { num_versions: 2 }", [9, 4]),
        ("all {}", [9, 4, 1]),
        ("specific { versions: 1 versions: 4 versions: 7 }", [4, 1]),
    ],
)
def test_version_policies_pick_versions_as_tf_serving_does(policy_text, expected):
    assert model_config.aspired_versions([1, 9, 4], policy(policy_text)) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give --model_base_path"),
        (["--model_config_file", "m.config", "--model_base_path", "/m"], "drop --model_base_path"),
    ],
)
def test_server_command_line_takes_a_base_path_or_a_config_file(argv, message, capsys):
    with pytest.raises(SystemExit):
        server_cli.parse_args(argv)
    assert message in capsys.readouterr().err


def test_server_command_line_refuses_startup_labels_in_one_line(base_path, tmp_path):
    config_file = write_config(tmp_path, base_path, stable=1)
    with pytest.raises(SystemExit) as exit_info:
        server_cli.main(
            ["--model_config_file", str(config_file), "--host", "127.0.0.1", "--port", "0"]
        )
    message = str(exit_info.value.code)
    assert message.startswith("objrec-serve: FAILED_PRECONDITION: Request to assign label")
    assert "\n" not in message
