"""One version of a SavedModel, loaded and run through its SignatureDefs as TF Serving does.

TF Serving's C++ server never touches the Python objects a SavedModel may carry: it loads the
MetaGraphDef tagged `serve` into a Session, restores the variables, and runs `Session::Run`
with the tensor names each SignatureDef maps its input and output aliases to. This module does
exactly that with `tf.compat.v1.Session`, so a model that works here works under TF Serving,
and one that only works through `tf.saved_model.load` (a Python-only signature) fails here too.
Error codes and messages follow TF Serving's `predict_util.cc` and `saved_model/util.cc`.
"""

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2

from objrec import contract
from objrec.savedmodel import tensors
from serving.dev_server import status
from serving.dev_server.batching import BatchScheduler
from serving.dev_server.metrics import ServerMetrics

SERVE_TAG = "serve"
# Examples one request may hold. TF Serving bounds a request by its batching's max_batch_size
# (or splits it); objrec's server always bounds it, before any work.
MAX_BATCH_SIZE = 1024
# Method names TF Serving accepts for Predict (predict_util.cc, VerifySignature).
PREDICT_METHOD_NAMES = (
    "tensorflow/serving/predict",
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
)

SignatureDef = meta_graph_pb2.SignatureDef
TensorInfo = meta_graph_pb2.TensorInfo


@dataclasses.dataclass(frozen=True)
class ServableOptions:
    """How every loaded version runs.

    Attributes:
        session_config: TensorFlow's session options (thread pools).
        batch_scheduler: merges concurrent requests into batches (`--enable_batching`);
            None runs each request on its own.
        metrics: where Session::Run latencies are recorded; None records nothing.
    """

    session_config: tf.compat.v1.ConfigProto | None = None
    batch_scheduler: BatchScheduler | None = None
    metrics: ServerMetrics | None = None


class SavedModelServable:
    """A loaded SavedModel version answering PredictRequests.

    Thread-safe: `tf.compat.v1.Session.run` may be called from many threads at once.
    """

    def __init__(
        self,
        model_name: str,
        version: int,
        export_dir: str,
        options: ServableOptions | None = None,
    ):
        self.model_name = model_name
        self.version = version
        self.export_dir = export_dir
        self._options = options or ServableOptions()
        self._session = tf.compat.v1.Session(graph=tf.Graph(), config=self._options.session_config)
        meta_graph = tf.compat.v1.saved_model.loader.load(self._session, [SERVE_TAG], export_dir)
        self.signature_defs: Mapping[str, SignatureDef] = dict(meta_graph.signature_def)

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """Runs the requested signature on the request's inputs.

        Raises:
            status.ServingError: the request does not fit the signature, or the graph failed.
        """
        signature_name = request.model_spec.signature_name or contract.SERVING_SIGNATURE
        signature = self._signature(signature_name)
        feeds = input_feeds(signature_name, signature, request.inputs)
        aliases = output_aliases(signature, request.output_filter)
        fetches = [signature.outputs[alias].name for alias in aliases]
        started = time.monotonic()
        values = self._run(fetches, feeds)
        if self._options.metrics is not None:
            self._options.metrics.record_runtime(self.model_name, time.monotonic() - started)
        response = predict_pb2.PredictResponse(model_spec=self.model_spec(signature_name))
        for alias, value in zip(aliases, values, strict=True):
            response.outputs[alias].CopyFrom(tensors.to_tensor_proto(value))
        return response

    def run_signature(
        self, signature_name: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Runs a signature on arrays, no protos: the in-process baseline of benchmarks.

        The same Session and tensors Predict uses, without a request to parse or a response
        to build; inputs are not checked against the signature.
        """
        signature = self._signature(signature_name)
        feeds = {signature.inputs[alias].name: value for alias, value in inputs.items()}
        aliases = list(signature.outputs)
        values = self._run([signature.outputs[alias].name for alias in aliases], feeds)
        return dict(zip(aliases, values, strict=True))

    def model_spec(self, signature_name: str = "") -> model_pb2.ModelSpec:
        """The ModelSpec TF Serving puts in its responses: name, version, signature."""
        spec = model_pb2.ModelSpec(name=self.model_name, signature_name=signature_name)
        spec.version.value = self.version
        return spec

    def close(self) -> None:
        """Releases the session; later calls fail."""
        self._session.close()

    def _signature(self, signature_name: str) -> SignatureDef:
        signature = self.signature_defs.get(signature_name)
        if signature is None:
            raise status.ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature_name}" not found.',
            )
        if signature.method_name not in PREDICT_METHOD_NAMES:
            raise status.ServingError(
                grpc.StatusCode.INTERNAL,
                "Expected prediction signature method_name to be one of "
                f"{{{', '.join(PREDICT_METHOD_NAMES)}}}. Was: {signature.method_name}",
            )
        return signature

    def _run(self, fetches: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        scheduler = self._options.batch_scheduler
        if scheduler is None:
            return self._session_run(fetches, feeds)
        return scheduler.run(self, self._session_run, fetches, feeds)

    def _session_run(
        self, fetches: Sequence[str], feeds: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        try:
            return self._session.run(fetches, feeds)
        except tf.errors.OpError as error:
            logging.warning(
                "Predict failed on %s version %d: %s", self.model_name, self.version, error.message
            )
            raise status.from_op_error(error) from None


def input_feeds(
    signature_name: str,
    signature: SignatureDef,
    request_inputs: Mapping[str, tensor_pb2.TensorProto],
) -> dict[str, np.ndarray]:
    """Feed tensor name → value for each signature input, checked against the signature.

    Raises:
        status.ServingError: INVALID_ARGUMENT naming the input and what the signature expects.
    """
    check_input_names(signature, request_inputs)
    return {
        info.name: parse_input(signature_name, alias, info, request_inputs[alias])
        for alias, info in signature.inputs.items()
    }


def check_input_names(signature: SignatureDef, request_inputs: Mapping[str, object]) -> None:
    """Every signature input sent, nothing else; TF Serving's own messages."""
    sent, expected = sorted(request_inputs), sorted(signature.inputs)
    if len(sent) != len(expected):
        extra = sorted(set(sent) - set(expected))
        missing = sorted(set(expected) - set(sent))
        raise status.invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sent)}}}) != len({{{','.join(expected)}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
        )
    for alias, info in sorted(signature.inputs.items()):
        if alias not in request_inputs:
            raise status.invalid_argument(
                f"Signature input alias: {alias}(feed name: {info.name}) not found in request "
                f"and no default value provided. Inputs expected to be in the request "
                f"{{{','.join(sent)}}}, or default input alias set: "
            )


def parse_input(
    signature_name: str, alias: str, info: TensorInfo, proto: tensor_pb2.TensorProto
) -> np.ndarray:
    """The request tensor for `alias` as an array, if its dtype and shape fit the signature."""
    where = f"input '{alias}' of signature '{signature_name}'"
    if proto.dtype != info.dtype:
        raise status.invalid_argument(
            f"{where} expects {tensors.dtype_name(info.dtype)}, "
            f"got {tensors.dtype_name(proto.dtype)}: send a {tensors.dtype_name(info.dtype)} tensor"
        )
    expected_shape = signature_shape(info)
    shape = tensors.shape_of(proto)
    check_shape(where, shape, expected_shape)
    check_size(where, proto, shape)
    try:
        return tensors.to_ndarray(proto)
    except (TypeError, ValueError) as error:
        raise status.invalid_argument(f"tensor parsing error: {alias} ({error})") from None


def signature_shape(info: TensorInfo) -> tuple[int, ...] | None:
    """The signature's shape for a tensor, -1 for unknown sizes; None for unknown rank."""
    if info.tensor_shape.unknown_rank:
        return None
    return tuple(dim.size for dim in info.tensor_shape.dim)


def check_shape(where: str, shape: Sequence[int], expected: Sequence[int] | None) -> None:
    """Rank and fixed sizes must match; a batch-major input needs at least one example."""
    if any(size < 0 for size in shape):
        raise status.invalid_argument(
            f"{where} has a negative dimension in shape {list(shape)}: every size must be >= 0"
        )
    if expected is None:
        return
    expected_text = "[" + ", ".join("None" if size < 0 else str(size) for size in expected) + "]"
    fits = len(shape) == len(expected) and all(
        want < 0 or got == want for got, want in zip(shape, expected, strict=True)
    )
    if not fits:
        raise status.invalid_argument(
            f"{where} expects shape {expected_text}, got {list(shape)}: send a tensor of that shape"
        )
    # An empty batch is always a client bug, and TF Serving's batching rejects it too.
    if expected and expected[0] < 0 and shape[0] == 0:
        raise status.invalid_argument(
            f"{where} has an empty batch (shape {list(shape)}): send at least one example"
        )


def check_size(where: str, proto: tensor_pb2.TensorProto, shape: Sequence[int]) -> None:
    """The bounds checked before any work: a batch of at most MAX_BATCH_SIZE examples, and
    exactly the values the shape declares (TensorFlow would fill the rest, so a proto of a
    few bytes could make a tensor of gigabytes)."""
    if shape and shape[0] > MAX_BATCH_SIZE:
        raise status.invalid_argument(
            f"{where} has a batch of {shape[0]}, over the server's maximum of {MAX_BATCH_SIZE}: "
            "split it into several requests"
        )
    declared = math.prod(shape)
    held = tensors.value_count(proto)
    if held != declared:
        raise status.invalid_argument(
            f"{where} declares shape {list(shape)} ({declared} values) but holds "
            f"{'no readable' if held is None else held}: send every value of the tensor"
        )


def output_aliases(signature: SignatureDef, output_filter: Sequence[str]) -> list[str]:
    """The outputs to fetch: `output_filter` in its order, or every output when it is empty."""
    if not output_filter:
        return list(signature.outputs)
    expected = ",".join(sorted(signature.outputs))
    for position, alias in enumerate(output_filter):
        if alias not in signature.outputs:
            raise status.invalid_argument(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{expected}}}."
            )
        if alias in output_filter[:position]:
            raise status.invalid_argument(f"duplicate output tensor alias: {alias}")
    return list(output_filter)
