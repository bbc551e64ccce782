"""gRPC prediction client for an objrec model behind TF Serving (library and CLI).

Library:

    with PredictionClient("localhost:8500") as client:
        predictions = client.predict([open("cat.jpg", "rb").read()], top_k=3)

Command line (files or folders, local or gs://, folders searched recursively):

    python -m serving.client --server localhost:8500 --model_name objrec photos/ cat.jpg
    python -m serving.client --server dns:///objrec-serving.default.svc.cluster.local:8500 \
        --model_name objrec --top_k 3 --json gs://BUCKET/incoming/
    python -m serving.client --server localhost:8500 --status

or through the console script `objrec-predict` with the same flags.
"""

import argparse
import concurrent.futures
import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence

import grpc
import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from objrec import contract
from serving import evaluation, image_files, report, tensors

MIB = 1024 * 1024
# Room in a request for all but the image bytes: model spec, tensor header, a few bytes of
# framing per image. A batch of 16 needs well under 1 KiB.
FRAMING_BYTES = 64 * 1024
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
# The outputs a Prediction is made of; `probabilities` ([N, num_classes]) is left on the server.
PREDICTION_OUTPUTS = (
    contract.OUTPUT_TOP_K_CLASSES,
    contract.OUTPUT_TOP_K_SCORES,
    contract.OUTPUT_TOP_K_CLASS_IDS,
    contract.OUTPUT_VALID,
)
# Predict and the status calls are idempotent, so a call that found no server (UNAVAILABLE: a
# pod restarting, a rolling update) is safely retried: 0.2 s, 0.4 s, 0.8 s, 1.6 s apart.
# CANCELLED too: a server shutting down answers CANCELLED to calls it had received but not yet
# started (grpc/grpc#41785, in the C core that TF Serving is built on); the load test saw one
# in 500 calls across a restart. The client's own cancellations are never retried.
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.2s",
    "maxBackoff": "5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
}


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The model's answer for one image.

    Attributes:
        label: the most likely class; None when the image is not `valid`.
        score: its probability; 0.0 when not `valid`.
        top_k: (label, score) of the most likely classes, best first; empty when not `valid`.
        valid: False when the model could not decode the image.
        class_id: index of `label` in the model's labels; None when not `valid`.
    """

    label: str | None
    score: float
    top_k: tuple[tuple[str, float], ...]
    valid: bool
    class_id: int | None


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One model version as GetModelStatus reports it (state: AVAILABLE, LOADING, END...)."""

    version: int
    state: str
    error_message: str = ""


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """The served version and its SignatureDefs, from GetModelMetadata."""

    model_name: str
    version: int
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]


class PredictionClient:
    """A reusable gRPC channel to a TF Serving model, with batching, deadlines and retries.

    One channel per client; calls from several threads share it. Use as a context manager,
    or call `close`.
    """

    def __init__(
        self,
        server: str,
        model_name: str = contract.DEFAULT_MODEL_NAME,
        *,
        timeout: float = 30.0,
        signature_name: str = contract.SERVING_SIGNATURE,
        version: int | None = None,
        version_label: str | None = None,
        batch_size: int = 16,
        max_concurrent_requests: int = 4,
        max_message_bytes: int = 64 * MIB,
        ca_file: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        wait_for_ready: bool = True,
    ):
        """Opens the channel (lazily: nothing is sent until the first call).

        Args:
            server: `host:port`, or `dns:///service:port` to balance over every address
                (pods of a headless Kubernetes Service).
            model_name: ModelSpec.name.
            timeout: deadline of each call, in seconds.
            signature_name: the signature Predict runs.
            version: pin a model version; None asks for the newest.
            version_label: pin the version a label of the server's model config names
                (e.g. "stable", "canary"); not together with `version`.
            batch_size: images per Predict request.
            max_concurrent_requests: Predict requests in flight at once.
            max_message_bytes: largest request or response; a request never exceeds it.
            ca_file: PEM CA certificates; given, the channel uses TLS.
            metadata: extra call metadata, e.g. (("authorization", "Bearer TOKEN"),).
            wait_for_ready: wait (within `timeout`) for a server that is not up yet, instead of
                failing at once.
        """
        if version is not None and version_label is not None:
            raise ValueError("pin a version or a version label, not both")
        if batch_size < 1 or max_concurrent_requests < 1:
            raise ValueError("batch_size and max_concurrent_requests must be at least 1")
        if max_message_bytes <= FRAMING_BYTES:
            raise ValueError(f"max_message_bytes={max_message_bytes}: allow more than 64 KiB")
        self.server = server
        self.model_name = model_name
        self.timeout = timeout
        self.signature_name = signature_name
        self.version = version
        self.version_label = version_label
        self.batch_size = batch_size
        self.max_message_bytes = max_message_bytes
        self._metadata = tuple(metadata)
        self._wait_for_ready = wait_for_ready
        self._channel = open_channel(server, max_message_bytes, ca_file)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_concurrent_requests, thread_name_prefix="predict"
        )
        self._exported_top_k: int | None = None

    def predict(self, images: Sequence[bytes], top_k: int | None = None) -> list[Prediction]:
        """Predictions for encoded images (JPEG, PNG, GIF, BMP), in input order.

        Images go `batch_size` to a request, several requests at once.

        Args:
            images: encoded image files' bytes.
            top_k: how many classes each Prediction.top_k lists; None for all the model exports.

        Raises:
            ValueError: `top_k` is not within 1..K, K the number of classes the model exports;
                or one image alone is over `max_message_bytes`.
            grpc.RpcError: the server could not be reached or refused the request.
        """
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k={top_k}: ask for at least 1 class")
        batches = plan_batches(
            [len(image) for image in images], self.batch_size, self.request_budget()
        )
        results = []
        if self._exported_top_k is None and batches:
            # Learn K from the first answer, so a top_k too large fails before the rest is sent.
            results.append(self._predict_batch(images[batches[0]], top_k))
            batches = batches[1:]
        results.extend(
            self._pool.map(lambda batch: self._predict_batch(images[batch], top_k), batches)
        )
        return [prediction for batch in results for prediction in batch]

    def model_metadata(self) -> ModelMetadata:
        """The served version's SignatureDefs (GetModelMetadata)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._model_spec(), metadata_field=["signature_def"]
        )
        response = self._call(self._predictions.GetModelMetadata, request)
        signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_def_map)
        return ModelMetadata(
            response.model_spec.name,
            response.model_spec.version.value,
            dict(signature_def_map.signature_def),
        )

    def model_status(self) -> list[VersionStatus]:
        """Every version's state, or the pinned version's (GetModelStatus).

        A label pin lists every version: TF Serving's GetModelStatus ignores labels.
        """
        spec = self._model_spec()
        spec.ClearField("signature_name")
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        response = self._call(self._models.GetModelStatus, request)
        return [
            VersionStatus(
                version_status.version,
                get_model_status_pb2.ModelVersionStatus.State.Name(version_status.state),
                version_status.status.error_message,
            )
            for version_status in response.model_version_status
        ]

    def request_budget(self) -> int:
        """Image bytes per request: the message limit less room for the request's framing."""
        return self.max_message_bytes - FRAMING_BYTES

    def close(self) -> None:
        """Closes the channel and the request threads."""
        self._pool.shutdown(wait=True)
        self._channel.close()

    def __enter__(self) -> "PredictionClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _predict_batch(self, images: Sequence[bytes], top_k: int | None) -> list[Prediction]:
        request = predict_pb2.PredictRequest(
            model_spec=self._model_spec(), output_filter=PREDICTION_OUTPUTS
        )
        request.inputs[contract.INPUT_IMAGE_BYTES].CopyFrom(
            tensors.to_tensor_proto(np.array(list(images), dtype=object))
        )
        response = self._call(self._predictions.Predict, request)
        outputs = prediction_outputs(response, len(images))
        self._exported_top_k = outputs[contract.OUTPUT_TOP_K_CLASSES].shape[1]
        top_k = check_top_k(top_k, self._exported_top_k)
        return to_predictions(outputs, top_k)

    def _model_spec(self) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.model_name, signature_name=self.signature_name)
        if self.version is not None:
            spec.version.value = self.version
        if self.version_label is not None:
            spec.version_label = self.version_label
        return spec

    def _call(self, method: grpc.UnaryUnaryMultiCallable, request):
        return method(
            request,
            timeout=self.timeout,
            metadata=self._metadata,
            wait_for_ready=self._wait_for_ready,
        )


def open_channel(server: str, max_message_bytes: int, ca_file: str | None = None) -> grpc.Channel:
    """A channel with raised message limits, round-robin balancing and retries; TLS given a CA."""
    options = channel_options(max_message_bytes)
    if ca_file is None:
        return grpc.insecure_channel(server, options=options)
    with open(ca_file, "rb") as ca:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
    return grpc.secure_channel(server, credentials, options=options)


def channel_options(max_message_bytes: int) -> list[tuple[str, object]]:
    """gRPC channel arguments: message limits and the service config (balancing, retries)."""
    service_config = {
        # With a `dns:///` target naming a headless Service, one subchannel per pod; the
        # default pick_first would pin every request to the first pod.
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": PREDICTION_SERVICE}, {"service": MODEL_SERVICE}],
                "retryPolicy": RETRY_POLICY,
            }
        ],
    }
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(service_config)),
        # gRPC only retries a call whose request still fits its retry buffer (256 KiB by
        # default, about two photos): make room for a whole batch.
        ("grpc.per_rpc_retry_buffer_size", max_message_bytes),
    ]


def plan_batches(sizes: Sequence[int], batch_size: int, max_batch_bytes: int) -> list[slice]:
    """Consecutive slices of at most `batch_size` items and `max_batch_bytes` bytes each.

    Raises:
        ValueError: one item alone is over `max_batch_bytes`.
    """
    batches, start, batch_bytes = [], 0, 0
    for index, size in enumerate(sizes):
        if size > max_batch_bytes:
            raise ValueError(
                f"image {index} is {size / MIB:.1f} MiB, over the "
                f"{max_batch_bytes / MIB:.1f} MiB a request may carry: raise max_message_bytes "
                "(on the server too) or send a smaller image"
            )
        if index > start and (index - start == batch_size or batch_bytes + size > max_batch_bytes):
            batches.append(slice(start, index))
            start, batch_bytes = index, 0
        batch_bytes += size
    if start < len(sizes):
        batches.append(slice(start, len(sizes)))
    return batches


def prediction_outputs(
    response: predict_pb2.PredictResponse, batch_size: int
) -> dict[str, np.ndarray]:
    """The contract outputs of a PredictResponse, checked for presence and batch size."""
    missing = [name for name in PREDICTION_OUTPUTS if name not in response.outputs]
    if missing:
        raise ValueError(
            f"the model's answer lacks the outputs {missing}: is it an objrec export? "
            "(see DESIGN.md, SavedModel signatures)"
        )
    outputs = {name: tensors.to_ndarray(response.outputs[name]) for name in PREDICTION_OUTPUTS}
    for name, values in outputs.items():
        if values.shape[0] != batch_size:
            raise ValueError(f"output {name} has {values.shape[0]} rows for {batch_size} images")
    return outputs


def check_top_k(top_k: int | None, exported_top_k: int) -> int:
    """`top_k`, or all the model exports when None.

    Raises:
        ValueError: more classes asked for than the model exports.
    """
    if top_k is None:
        return exported_top_k
    if top_k > exported_top_k:
        raise ValueError(
            f"top_k={top_k} but the model exports its top {exported_top_k} classes: "
            f"ask for {exported_top_k} or fewer"
        )
    return top_k


def to_predictions(outputs: Mapping[str, np.ndarray], top_k: int) -> list[Prediction]:
    """One Prediction per row of the contract outputs."""
    classes = outputs[contract.OUTPUT_TOP_K_CLASSES]
    scores = outputs[contract.OUTPUT_TOP_K_SCORES]
    class_ids = outputs[contract.OUTPUT_TOP_K_CLASS_IDS]
    predictions = []
    for row, valid in enumerate(outputs[contract.OUTPUT_VALID]):
        if not valid:
            predictions.append(Prediction(None, 0.0, (), False, None))
            continue
        ranked = tuple(
            (label.decode("utf-8"), float(score))
            for label, score in zip(classes[row, :top_k], scores[row, :top_k], strict=True)
        )
        predictions.append(
            Prediction(ranked[0][0], ranked[0][1], ranked, True, int(class_ids[row, 0]))
        )
    return predictions


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The objrec-predict command line."""
    parser = argparse.ArgumentParser(
        prog="objrec-predict",
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 every file labelled; 2 a usage error or a file that got no "
        "label (after every row is printed); 1 the server could not be reached or failed.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="image files or folders (searched recursively), local or gs://",
    )
    parser.add_argument(
        "--server",
        default=f"localhost:{contract.DEFAULT_GRPC_PORT}",
        help="HOST:PORT or dns:///HOST:PORT",
    )
    parser.add_argument("--model_name", default=contract.DEFAULT_MODEL_NAME)
    parser.add_argument(
        "--top_k",
        type=int,
        default=None,
        help="classes listed per image (default: all the model exports)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--batch_size", type=int, default=16, help="images per request")
    parser.add_argument("--max_concurrent_requests", type=int, default=4)
    pin = parser.add_mutually_exclusive_group()
    pin.add_argument("--model_version", type=int, default=None, help="pin a version")
    pin.add_argument(
        "--model_version_label",
        default=None,
        help="pin the version a label of the server's model config names, e.g. stable",
    )
    parser.add_argument("--signature_name", default=contract.SERVING_SIGNATURE)
    parser.add_argument("--ca_file", default=None, help="PEM CA certificates: use TLS")
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="call metadata, e.g. authorization='Bearer TOKEN' (repeatable)",
    )
    parser.add_argument(
        "--evaluate",
        metavar="FOLDER",
        default=None,
        help="score the served model on FOLDER/<class>/<image>: accuracy, per-class "
        "precision and recall, confusion matrix",
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="print the model's versions and signatures, predict nothing",
    )
    args = parser.parse_args(argv)
    if not args.paths and not args.status and not args.evaluate:
        parser.error("give at least one image file or folder (or --status, or --evaluate)")
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top_k {args.top_k}: ask for at least 1 class")
    if args.batch_size < 1 or args.max_concurrent_requests < 1:
        parser.error("--batch_size and --max_concurrent_requests must be at least 1")
    args.metadata = [parse_metadata(parser, item) for item in args.metadata]
    return args


def parse_metadata(parser: argparse.ArgumentParser, item: str) -> tuple[str, str]:
    """`KEY=VALUE` → (lower-case key, value): gRPC metadata keys are lower case."""
    key, separator, value = item.partition("=")
    if not separator or not key:
        parser.error(f"--metadata {item!r}: write KEY=VALUE")
    return key.strip().lower(), value


def client_from_args(args: argparse.Namespace) -> PredictionClient:
    """The PredictionClient the command line describes."""
    return PredictionClient(
        args.server,
        args.model_name,
        timeout=args.timeout,
        signature_name=args.signature_name,
        version=args.model_version,
        version_label=args.model_version_label,
        batch_size=args.batch_size,
        max_concurrent_requests=args.max_concurrent_requests,
        ca_file=args.ca_file,
        metadata=args.metadata,
    )


def predict_paths(
    client: PredictionClient, paths: Sequence[str], top_k: int | None, as_json: bool
) -> int:
    """Predicts every image file, printing one row (or JSON line) per file as results arrive.

    Returns:
        How many files got no label (unreadable, too large, not an image).
    """
    files = image_files.find(paths)
    if not files:
        raise FileNotFoundError(f"no image files in {' '.join(paths)}")
    formatter = report.Formatter(as_json, path_width=max(len(path) for path in files))
    # Read a few requests' worth of files at a time: bounded memory on any folder size.
    chunk_size = client.batch_size * 8
    failed = 0
    for start in range(0, len(files), chunk_size):
        rows = predict_files(client, files[start : start + chunk_size], top_k)
        if start == 0:  # after the first answer, so an error is not preceded by a header
            print(formatter.header(), end="")
        for row in rows:
            print(formatter.row(row), flush=True)
            failed += row.problem is not None
    if failed:
        print(
            f"objrec-predict: {failed} of {len(files)} files got no label (see their rows)",
            file=sys.stderr,
        )
    return failed


def predict_files(
    client: PredictionClient, paths: Sequence[str], top_k: int | None
) -> list[report.Row]:
    """Rows for `paths`: a prediction, or why a file could not be sent."""
    loaded = [image_files.read(path, client.request_budget()) for path in paths]
    sendable = [image for image in loaded if image.data is not None]
    predictions = iter(client.predict([image.data for image in sendable], top_k))
    return [
        report.Row(image.path, next(predictions) if image.data is not None else None, image.error)
        for image in loaded
    ]


def print_status(client: PredictionClient, as_json: bool) -> None:
    """Prints the model's version states and signatures."""
    versions = client.model_status()
    metadata = client.model_metadata()
    print(report.status_text(client.model_name, versions, metadata, as_json), end="")


def run(args: argparse.Namespace) -> int:
    """Runs the command; returns the exit code (1: transport or server error, 2: usage, or
    files that got no label: every other file's row is printed first)."""
    try:
        with client_from_args(args) as client:
            if args.status:
                print_status(client, args.json)
            elif args.evaluate:
                print(evaluation.evaluate_folder(client, args.evaluate, args.json), end="")
            elif predict_paths(client, args.paths, args.top_k, args.json):
                return 2
    except grpc.RpcError as error:
        print(f"objrec-predict: {describe_rpc_error(error, args)}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f"objrec-predict: {error}", file=sys.stderr)
        return 2
    return 0


def describe_rpc_error(error: grpc.RpcError, args: argparse.Namespace) -> str:
    """One line naming the server, the gRPC code and what to check."""
    # TensorFlow's messages span lines (op name, node); the CLI promises one line.
    code, details = error.code(), " ".join((error.details() or "").split())
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return (
            f"no answer from {args.server} within {args.timeout:g} s: is the model server "
            "up? (raise --timeout for slow models)"
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return (
            f"{args.server} does not serve that model or version: {details} "
            "(check --model_name and --model_version; --status lists the versions)"
        )
    if "version label" in details:
        return (
            f"{args.server} answered {code.name}: {details} "
            "(check --model_version_label against the server's model config)"
        )
    return f"{args.server} answered {code.name}: {details}"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `python -m serving.client` and `objrec-predict`."""
    sys.exit(run(parse_args(argv)))


if __name__ == "__main__":
    main()
