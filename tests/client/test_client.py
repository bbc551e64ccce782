"""The prediction client: predictions, batching, top-k, retries, balancing, TLS, and the CLI."""

import concurrent.futures
import json
import pathlib
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from objrec import contract, testing
from objrec.metrics import score_predictions
from objrec.savedmodel import tensors
from serving import values
from serving.client import Prediction, PredictionClient, cli, image_files, library
from tests import REPO, html_pages, serving_fixtures
from tests.serving_fixtures import LABELS, copy_version, running_server, serving_toy


@pytest.fixture(scope="module")
def server(toy_version, tmp_path_factory):
    with serving_toy(toy_version, tmp_path_factory.mktemp("served")) as running:
        yield running


@pytest.fixture
def address(server) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def client(address):
    with PredictionClient(address, timeout=10, batch_size=2) as open_client:
        yield open_client


def images(count: int) -> list[bytes]:
    """`count` distinct images, PNG and JPEG alternately."""
    encoders = (serving_fixtures.encode_png, serving_fixtures.encode_jpeg)
    return [
        encoders[index % 2](serving_fixtures.random_pixels(index, 9 + index, 11))
        for index in range(count)
    ]


def saved_model_probabilities(version_dir: pathlib.Path, batch: list[bytes]) -> np.ndarray:
    signature = tf.saved_model.load(str(version_dir)).signatures[contract.SERVING_SIGNATURE]
    return signature(image_bytes=tf.constant(batch))[contract.OUTPUT_PROBABILITIES].numpy()


def test_predict_answers_each_image_in_input_order_across_batches(client, toy_version):
    batch = images(5)
    batch.insert(2, b"not an image")  # 6 images, 3 requests of 2
    predictions = client.predict(batch)

    probabilities = saved_model_probabilities(toy_version, batch)
    assert len(predictions) == 6
    for prediction, expected in zip(predictions, probabilities, strict=True):
        if not expected.any():
            assert prediction == Prediction(None, 0.0, (), False, None)
            continue
        best = int(np.argmax(expected))
        assert prediction.valid
        assert prediction.class_id == best
        assert prediction.label == LABELS[best]
        assert prediction.score == pytest.approx(expected[best], abs=1e-6)
        assert [label for label, _ in prediction.top_k] == [
            LABELS[i] for i in np.argsort(-expected)
        ]
    assert not predictions[2].valid


def test_top_k_cuts_the_list_and_is_checked_against_what_the_model_exports(client):
    assert len(client.predict(images(1))[0].top_k) == 3  # K = min(5, 3 classes)
    assert len(client.predict(images(1), top_k=2)[0].top_k) == 2

    with pytest.raises(ValueError, match="top_k=4 but the model exports its top 3 classes"):
        client.predict(images(1), top_k=4)
    with pytest.raises(ValueError, match="at least 1"):
        client.predict(images(1), top_k=0)


def test_predict_of_nothing_sends_nothing(client):
    assert client.predict([]) == []


def test_model_metadata_and_status(client):
    metadata = client.model_metadata()
    assert metadata.model_name == contract.DEFAULT_MODEL_NAME
    assert metadata.version == 1
    signature = metadata.signature_defs[contract.SERVING_SIGNATURE]
    assert set(signature.inputs) == {contract.INPUT_IMAGE_BYTES}

    assert client.model_status() == [values.VersionStatus(1, "AVAILABLE", "")]


def test_unknown_model_raises_not_found(address):
    with (
        PredictionClient(address, "nope", timeout=10) as unknown,
        pytest.raises(grpc.RpcError) as error,
    ):
        unknown.predict(images(1))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("sizes", "batch_size", "max_bytes", "expected"),
    [
        ([1] * 5, 2, 100, [(0, 2), (2, 4), (4, 5)]),
        ([40, 40, 40, 10], 16, 100, [(0, 2), (2, 4)]),
        ([100, 1], 16, 100, [(0, 1), (1, 2)]),
        ([], 4, 100, []),
    ],
)
def test_plan_batches_respects_count_and_bytes(sizes, batch_size, max_bytes, expected):
    batches = library.plan_batches(sizes, batch_size, max_bytes)
    assert [(batch.start, batch.stop) for batch in batches] == expected


def test_plan_batches_refuses_an_image_over_the_limit():
    with pytest.raises(ValueError, match="image 1 is"):
        library.plan_batches([10, 200], 16, 100)


class FakePredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Answers Predict with fixed outputs, after failing the first calls with `failure_code`."""

    def __init__(
        self, failures: int = 0, failure_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    ):
        self.failures = failures
        self.failure_code = failure_code
        self.calls: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def Predict(self, request, context):  # noqa: N802
        with self._lock:
            self.calls.append(dict(context.invocation_metadata()))
            failing = len(self.calls) <= self.failures
        if failing:
            context.abort(self.failure_code, "warming up")
        batch_size = len(request.inputs[contract.INPUT_IMAGE_BYTES].string_val)
        return fixed_response(batch_size)


def fixed_response(batch_size: int) -> predict_pb2.PredictResponse:
    """Every image: dog 0.7, cat 0.2, frog 0.1."""
    outputs = {
        contract.OUTPUT_TOP_K_CLASSES: np.array([[b"dog", b"cat", b"frog"]] * batch_size),
        contract.OUTPUT_TOP_K_SCORES: np.array([[0.7, 0.2, 0.1]] * batch_size, np.float32),
        contract.OUTPUT_TOP_K_CLASS_IDS: np.array([[1, 0, 2]] * batch_size, np.int64),
        contract.OUTPUT_VALID: np.ones([batch_size], bool),
    }
    response = predict_pb2.PredictResponse()
    for name, array in outputs.items():
        response.outputs[name].CopyFrom(tensors.to_tensor_proto(array))
    return response


def start_fake(service, credentials=None) -> tuple[grpc.Server, int]:
    fake = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, fake)
    if credentials is None:
        port = fake.add_insecure_port("127.0.0.1:0")
    else:
        port = fake.add_secure_port("127.0.0.1:0", credentials)
    fake.start()
    return fake, port


# CANCELLED: what a shutting-down server answers calls it had not started (grpc/grpc#41785).
@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
def test_server_going_away_is_retried_with_backoff_and_metadata_is_sent(code):
    service = FakePredictionService(failures=2, failure_code=code)
    fake, port = start_fake(service)
    try:
        with PredictionClient(
            f"127.0.0.1:{port}",
            timeout=10,
            metadata=[("authorization", "Bearer s3cret")],
            wait_for_ready=False,  # so that only the service config's retryPolicy can help
        ) as retrying:
            (prediction,) = retrying.predict(images(1))
    finally:
        fake.stop(0)
    assert prediction.label == "dog"
    assert prediction.score == pytest.approx(0.7)
    assert len(service.calls) == 3
    assert all(call["authorization"] == "Bearer s3cret" for call in service.calls)


def test_requests_are_balanced_round_robin_over_every_address():
    services = [FakePredictionService(), FakePredictionService()]
    fakes = [start_fake(service) for service in services]
    # What a dns:/// name of a headless Service resolves to: several pod addresses.
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, port in fakes)
    try:
        with PredictionClient(target, timeout=10, batch_size=1) as balanced:
            # round_robin uses a pod once its connection is ready, so the first calls may all
            # go to one pod; pick_first (gRPC's default) would send every call there.
            for _ in range(200):
                balanced.predict(images(1))
                if all(service.calls for service in services):
                    break
    finally:
        for fake, _ in fakes:
            fake.stop(0)
    assert all(service.calls for service in services)


def self_signed_certificate(directory: pathlib.Path) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) for 127.0.0.1, made by the openssl command."""
    key, certificate = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key.read_bytes(), certificate.read_bytes()


def test_tls_channel_trusts_the_given_ca_file(tmp_path):
    key, certificate = self_signed_certificate(tmp_path)
    credentials = grpc.ssl_server_credentials([(key, certificate)])
    fake, port = start_fake(FakePredictionService(), credentials)
    try:
        ca_file = tmp_path / "cert.pem"
        with PredictionClient(f"127.0.0.1:{port}", timeout=10, ca_file=str(ca_file)) as secure:
            assert secure.predict(images(1))[0].label == "dog"
        # Without the CA the same server is out of reach: the channel really is TLS.
        with (
            PredictionClient(f"127.0.0.1:{port}", timeout=1, wait_for_ready=False) as plain,
            pytest.raises(grpc.RpcError) as error,
        ):
            plain.predict(images(1))
        unreachable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert error.value.code() in unreachable
    finally:
        fake.stop(0)


@pytest.mark.slow
def test_client_started_before_the_server_succeeds_within_its_deadline(toy_version, tmp_path):
    copy_version(toy_version, tmp_path, 1)
    port = testing.free_port()
    server_up = threading.Event()
    release = threading.Event()

    def start_server_late():
        time.sleep(1.5)
        with running_server(tmp_path, port=port):
            server_up.set()
            release.wait(30)

    late = threading.Thread(target=start_server_late)
    late.start()
    try:
        with PredictionClient(f"127.0.0.1:{port}", timeout=30) as early:
            predictions = early.predict(images(3))
        assert server_up.is_set()
        assert all(prediction.valid for prediction in predictions)
    finally:
        release.set()
        late.join()


def write_image_folder(root: pathlib.Path) -> pathlib.Path:
    """root/photos with a PNG, a JPEG in a subfolder, a corrupt JPEG, and files to skip."""
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / ".hidden").mkdir()
    png, jpeg = images(2)
    (photos / "a.png").write_bytes(png)
    (photos / "sub" / "b.JPG").write_bytes(jpeg)
    (photos / "broken.jpg").write_bytes(b"this is not a JPEG")
    (photos / "notes.txt").write_text("not looked at in a folder")
    (photos / ".hidden" / "c.png").write_bytes(png)
    return photos


def test_image_files_finds_images_recursively_and_skips_the_rest(tmp_path):
    photos = write_image_folder(tmp_path)
    notes = str(photos / "notes.txt")

    found = image_files.find([str(photos), notes])
    assert found == [
        str(photos / "a.png"), str(photos / "broken.jpg"), str(photos / "sub" / "b.JPG"), notes
    ]  # fmt: skip
    with pytest.raises(FileNotFoundError, match="missing.jpg: no such file or folder"):
        image_files.find([str(photos / "missing.jpg")])


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.run(cli.parse_args(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prints_a_table_and_marks_files_that_are_not_images(address, tmp_path, capsys):
    photos = write_image_folder(tmp_path)
    argv = ["--server", address, "--batch_size", "2", str(photos), str(photos / "notes.txt")]
    code, out, err = run_cli(argv, capsys)

    # Every row printed, then exit 2 with one line: two of the four files got no label.
    assert code == 2 and err == "objrec-predict: 2 of 4 files got no label (see their rows)\n"
    header, *rows = out.splitlines()
    assert header.split() == ["path", "label", "score", "top-k"]
    assert [row.split()[0] for row in rows] == image_files.find([str(photos)]) + [
        str(photos / "notes.txt")
    ]
    assert rows[0].split()[1] in LABELS
    assert rows[1].endswith("not a decodable image")  # broken.jpg
    assert rows[3].endswith("not a decodable image")  # notes.txt


def test_cli_json_lines(address, tmp_path, capsys):
    photos = write_image_folder(tmp_path)
    code, out, err = run_cli(["--server", address, "--json", "--top_k", "2", str(photos)], capsys)

    assert code == 2, err  # broken.jpg
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["valid"] for line in lines] == [True, False, True]
    assert lines[0]["label"] in LABELS
    assert lines[0]["label"] == lines[0]["top_k"][0]["label"]
    assert len(lines[0]["top_k"]) == 2
    assert lines[1] == {
        "path": str(photos / "broken.jpg"), "valid": False, "error": "not a decodable image"
    }  # fmt: skip


def test_cli_status(address, capsys):
    code, out, _ = run_cli(["--server", address, "--status"], capsys)
    assert code == 0
    assert "version 1: AVAILABLE" in out
    assert "input  image_bytes DT_STRING [-1]" in out


@pytest.mark.parametrize(
    ("extra_argv", "expected_code", "message"),
    [
        (["--model_name", "nope"], 1, "does not serve that model"),
        (["--top_k", "9"], 2, "top_k=9 but the model exports its top 3 classes"),
    ],
)
def test_cli_errors_are_one_line_with_an_exit_code(
    address, tmp_path, capsys, extra_argv, expected_code, message
):
    photos = write_image_folder(tmp_path)
    code, out, err = run_cli(["--server", address, *extra_argv, str(photos)], capsys)
    assert code == expected_code
    assert out == ""
    assert message in err
    assert len(err.splitlines()) == 1


def test_cli_reports_a_server_error_on_one_line(address, tmp_path, capsys):
    # Files sent to the `images` signature, which takes pixels: the server refuses the request
    # with a message of several lines (the inputs it expected, the defaults it has).
    (tmp_path / "a.png").write_bytes(serving_fixtures.encode_png(serving_fixtures.random_pixels(0)))
    argv = ["--server", address, "--signature_name", contract.PIXELS_SIGNATURE, str(tmp_path)]
    code, out, err = run_cli(argv, capsys)
    assert code == 1
    assert "answered INVALID_ARGUMENT" in err
    assert len(err.splitlines()) == 1


def test_cli_reports_a_missing_path(address, capsys):
    code, _, err = run_cli(["--server", address, "/no/such/photos"], capsys)
    assert code == 2
    assert err.strip() == "objrec-predict: /no/such/photos: no such file or folder"


def test_cli_reports_a_server_that_does_not_answer(tmp_path, capsys):
    photos = write_image_folder(tmp_path)
    dead = f"127.0.0.1:{testing.free_port()}"
    code, _, err = run_cli(["--server", dead, "--timeout", "0.5", str(photos)], capsys)
    assert code == 1
    assert f"no answer from {dead} within 0.5 s" in err


@pytest.mark.slow
def test_cli_module_entry_point(address, tmp_path):
    photos = write_image_folder(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "serving.client", "--server", address, "--json", str(photos)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # broken.jpg has no label: the command fails, after printing every file's line.
    assert result.returncode == 2, result.stderr
    assert (
        result.stderr.splitlines()[-1]
        == "objrec-predict: 1 of 3 files got no label (see their rows)"
    )
    assert len(result.stdout.splitlines()) == 3


def test_score_counts_undecodable_images_as_misses():
    metrics = score_predictions(["cat", "cat", "dog", "dog"], ["cat", "dog", "dog", None])
    assert metrics["accuracy"] == 0.5
    assert metrics["num_invalid"] == 1
    assert metrics["labels"] == ["cat", "dog"]
    assert metrics["confusion_matrix"] == [[1, 1], [0, 1]]
    assert metrics["per_class"]["dog"]["precision"] == 0.5


def test_cli_evaluate_scores_the_served_predictions(address, tmp_path, capsys):
    rng = np.random.default_rng(5)
    folder = tmp_path / "heldout"
    for label in LABELS:
        (folder / label).mkdir(parents=True)
        for index in range(3):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            (folder / label / f"{index}.png").write_bytes(serving_fixtures.encode_png(pixels))
    (folder / LABELS[0] / "broken.png").write_bytes(b"not an image")
    pairs = [(p, p.parent.name) for p in sorted(folder.glob("*/*.png"))]
    with library.PredictionClient(address) as direct:
        served = direct.predict([path.read_bytes() for path, _ in pairs])
    expected = sum(p.label == label for p, (_, label) in zip(served, pairs, strict=True)) / len(
        pairs
    )

    code, out, err = run_cli(["--server", address, "--evaluate", str(folder), "--json"], capsys)
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["accuracy"] == pytest.approx(expected)
    assert metrics["num_examples"] == 3 * len(LABELS) + 1
    assert metrics["num_invalid"] == 1
    code, out, err = run_cli(["--server", address, "--evaluate", str(folder)], capsys)
    assert out.startswith(f"{folder}: accuracy {expected:.4f} on {len(pairs)} images")
    assert "confusion matrix" in out


def test_evaluate_names_the_file_it_cannot_send_and_why(tmp_path):
    from serving.client import evaluation

    class SmallRequests:  # what evaluate_folder uses of a PredictionClient
        batch_size = 2

        def request_budget(self) -> int:
            return 10

    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.png").write_bytes(b"12345")
    (tmp_path / "cat" / "b.png").write_bytes(bytes(100))
    with pytest.raises(OSError) as error:
        evaluation.evaluate_folder(SmallRequests(), str(tmp_path), as_json=True)
    assert str(error.value) == (
        f"cannot send {tmp_path / 'cat' / 'b.png'}: too large to send: 100 bytes, over 10 bytes "
        "per request"
    )


def test_evaluate_shows_its_progress_on_stderr_when_asked(address, tmp_path, capsys):
    folder = tmp_path / "heldout"
    for label, data in zip(LABELS[:2], images(2), strict=True):
        (folder / label).mkdir(parents=True)
        (folder / label / "x.png").write_bytes(data)
    argv = ["--server", address, "--evaluate", str(folder)]
    code, _, err = run_cli([*argv, "--progress", "on"], capsys)
    assert code == 0, err
    assert "evaluating" in err and "2/2" in err
    code, _, err = run_cli([*argv, "--progress", "off"], capsys)
    assert (code, err) == (0, "")


def test_evaluate_writes_a_report_of_the_served_model(address, tmp_path, capsys):
    folder = tmp_path / "heldout"
    for index, data in enumerate(images(9)):
        label = LABELS[index % len(LABELS)]
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{index}.png").write_bytes(data)
    page = tmp_path / "report.html"
    argv = ["--server", address, "--evaluate", str(folder), "--json", "--report", str(page)]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    metrics = json.loads(out)
    parts = html_pages.parse(page)
    assert parts.external == []
    assert {"Per class", "Confusion matrix", "Most confused", "Top losses"} <= set(parts.headings)
    assert f"{metrics['accuracy']:.4f} on 9 images (0 not decodable)" in parts.cells
    wrong = [alt for _, alt in parts.images]
    assert len(wrong) == 9 - round(metrics["accuracy"] * 9)
    scores = [float(alt.rsplit("(", 1)[1].rstrip(")")) for alt in wrong]
    assert scores == sorted(scores, reverse=True)  # the surest mistakes first


def test_report_needs_evaluate(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args(["--report", "r.html", "photo.jpg"])
    assert exit_.value.code == 2
    assert "--report needs --evaluate FOLDER" in capsys.readouterr().err
