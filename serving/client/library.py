"""gRPC prediction client for an objrec model behind TF Serving: the library.

    with PredictionClient("localhost:8500") as client:
        predictions = client.predict([open("cat.jpg", "rb").read()], top_k=3)

The command line over it is `serving.client.cli` (`objrec-predict`).
"""

import concurrent.futures
import json
from collections.abc import Mapping, Sequence

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from objrec import contract
from objrec.savedmodel import tensors
from serving.values import ModelMetadata, Prediction, VersionStatus

# Room in a request for all but the image bytes: model spec, tensor header, a few bytes of
# framing per image. A batch of 16 needs well under 1 KiB.
FRAMING_BYTES = 64 * 1024


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
        max_message_bytes: int = contract.DEFAULT_MAX_MESSAGE_BYTES,
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
                "name": [
                    {"service": contract.PREDICTION_SERVICE},
                    {"service": contract.MODEL_SERVICE},
                ],
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
                f"image {index} is {size / contract.MIB:.1f} MiB, over the "
                f"{max_batch_bytes / contract.MIB:.1f} MiB a request may carry: raise "
                "max_message_bytes (on the server too) or send a smaller image"
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
            "(see docs/contracts.md, SavedModel signatures)"
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
