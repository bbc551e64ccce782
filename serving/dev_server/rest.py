"""TF Serving's REST API (`/v1/models/...`) over the same ServerCore as the gRPC server.

Standard library only (a threaded `http.server`). Request and response JSON follow TF Serving's
REST API: `{"instances": [...]}` (row format) → `{"predictions": [...]}`, `{"inputs": ...}`
(columnar) → `{"outputs": ...}`; binary strings as `{"b64": "..."}`; errors as
`{"error": "..."}` with TF Serving's HTTP status for the gRPC code.

    curl -d '{"instances": [{"image_bytes": {"b64": "'$(base64 -w0 cat.jpg)'"}}]}' \
        localhost:8501/v1/models/objrec:predict
"""

import base64
import binascii
import http.server
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from objrec import contract
from objrec.savedmodel import tensors
from serving.dev_server import apis, servable, status
from serving.dev_server.metrics import ServerMetrics
from serving.dev_server.server_core import ServerCore

# TF Serving's routes (model_servers/http_rest_api_util.cc): a version or a label, not both.
_VERSION_OR_LABEL = r"(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
PREDICT_PATH = re.compile(
    rf"/v1/models/([^/:]+){_VERSION_OR_LABEL}:(classify|regress|predict)", re.IGNORECASE
)
MODEL_PATH = re.compile(rf"/v1/models(?:/([^/:]+))?{_VERSION_OR_LABEL}(/metadata)?", re.IGNORECASE)
# TF Serving returns a string output whose alias ends in `_bytes` base64-encoded.
BYTES_SUFFIX = "_bytes"
B64_KEY = "b64"
DISCARD_CHUNK_BYTES = 1024 * 1024
# Seconds a client may leave the connection silent while its request is due.
BODY_TIMEOUT_SECONDS = 30.0
# Largest version number a ModelSpec holds (an int64).
MAX_VERSION = 2**63 - 1

Json = Any


class ListeningHTTPServer(http.server.ThreadingHTTPServer):
    """http.server's threaded server with a listen backlog for many clients, not 5."""

    request_queue_size = socket.SOMAXCONN


class RestApiServer:
    """A threaded HTTP server answering TF Serving's REST API.

    Args:
        core: the models.
        max_body_bytes: the largest request body.
        metrics: where requests are counted and timed; None records nothing.
        prometheus_path: the path serving `metrics` as Prometheus text (TF Serving's
            MonitoringConfig); None serves none.
        timeout_seconds: how long a client may leave the connection silent while its request
            is due (TF Serving's --rest_api_timeout_in_ms).
    """

    def __init__(
        self,
        core: ServerCore,
        max_body_bytes: int,
        *,
        metrics: ServerMetrics | None = None,
        prometheus_path: str | None = None,
        timeout_seconds: float = BODY_TIMEOUT_SECONDS,
    ):
        self._core = core
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.prometheus_path = prometheus_path
        self.timeout_seconds = timeout_seconds
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The bound port, None before `start`."""
        return self._httpd.server_address[1] if self._httpd else None

    def start(self, host: str, port: int) -> int:
        """Starts serving on a background thread; returns the bound port."""
        handler = type(
            "Handler",
            (RestRequestHandler,),
            {"rest_server": self, "timeout": self.timeout_seconds},
        )
        try:
            self._httpd = ListeningHTTPServer((host, port), handler)
        except OSError as error:
            raise OSError(f"cannot bind the REST port {host}:{port}: {error.strerror}.") from None
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="rest-api", daemon=True
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stops accepting requests and closes the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Json]:
        """(HTTP status, JSON body) for one request; errors become `{"error": ...}`.

        Counted and timed in the metrics as TF Serving's HTTP server does: by the model the
        path names (empty when it names none) and its status; the API is the verb of a
        POST (`predict`, `classify`, `regress`) and empty for a GET.
        """
        started = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            return 200, route(self._core, method, path, body)
        except status.ServingError as error:
            code = error.code
            return error.http_status, {"error": error.message}
        except Exception:
            code = grpc.StatusCode.INTERNAL
            logging.exception("REST %s %s failed", method, path)
            return 500, {"error": f"internal error serving {method} {path}"}
        finally:
            if self.metrics is not None:
                model_name, api = request_labels(method, path)
                self.metrics.record_request(
                    model_name, api, "REST", code.name, time.monotonic() - started
                )


class RestRequestHandler(http.server.BaseHTTPRequestHandler):
    """Reads the request, lets RestApiServer.handle answer it, writes JSON."""

    rest_server: RestApiServer
    protocol_version = "HTTP/1.1"
    # Small answers on a kept-alive connection: without TCP_NODELAY each one waits for the
    # client's delayed ACK (Nagle), 66 ms against 30 ms on a fresh connection.
    disable_nagle_algorithm = True
    timeout = BODY_TIMEOUT_SECONDS  # socket timeout of every read (StreamRequestHandler)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.rest_server
        if server.prometheus_path and self.path.split("?", 1)[0] == server.prometheus_path:
            self._write_bytes(200, server.metrics.page(), CONTENT_TYPE_PLAIN_0_0_4)
            return
        self._answer(b"")

    def do_POST(self) -> None:  # noqa: N802
        declared = self.headers.get("Content-Length") or "0"
        if not declared.isdigit():
            self.close_connection = True
            self._write(400, {"error": f"Content-Length {declared!r} is not a number of bytes"})
            return
        length = int(declared)
        limit = self.rest_server.max_body_bytes
        if length > limit:
            # Same limit as gRPC's max message size. The body is read and dropped, chunk by
            # chunk, rather than left unread: a client still sending would see a broken pipe
            # instead of this answer.
            self._discard(length)
            self._write(
                413,
                {
                    "error": f"request body of {length} bytes is over the "
                    f"{limit}-byte limit (--max_message_bytes)"
                },
            )
            return
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            # A client that stops sending mid-body (a Content-Length larger than its body)
            # would hold this thread forever: the socket's timeout ends the wait.
            self.close_connection = True
            self._write(408, {"error": f"request body not received within {self.timeout:g} s "
                                       f"({length} bytes declared)"})  # fmt: skip
            return
        if len(body) < length:  # the client closed its side early
            self.close_connection = True
            return
        self._answer(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        logging.debug("REST %s", format % args)

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, DISCARD_CHUNK_BYTES))
            if not chunk:
                break
            length -= len(chunk)

    def _answer(self, body: bytes) -> None:
        path = self.path.split("?", 1)[0]
        self._write(*self.rest_server.handle(self.command, path, body))

    def _write(self, http_status: int, payload: Json) -> None:
        self._write_bytes(http_status, json.dumps(payload).encode("utf-8"), "application/json")

    def _write_bytes(self, http_status: int, data: bytes, content_type: str) -> None:
        self.send_response(http_status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def route(core: ServerCore, method: str, path: str, body: bytes) -> Json:
    """Dispatches a request to predict, model status or model metadata."""
    predict_match = PREDICT_PATH.fullmatch(path)
    if method == "POST" and predict_match:
        name, version, label, verb = predict_match.groups()
        spec = model_spec(name, version, label)
        document = parse_json(body)
        if verb.lower() != "predict":
            spec.signature_name = str(document.get("signature_name", ""))
            apis.refuse_for_predict_signature(core, spec, verb.lower())
        return predict(core, spec, document)
    model_match = MODEL_PATH.fullmatch(path)
    if method == "GET" and model_match:
        name, version, label, metadata = model_match.groups()
        if not name:
            raise status.invalid_argument("Missing model name in request.")
        if metadata:
            return model_metadata(core, model_spec(name, version, label))
        return model_status(core, model_spec(name, version, label))
    raise status.invalid_argument(f"Malformed request: {method} {path}")


def request_labels(method: str, path: str) -> tuple[str, str]:
    """(model name, API) of a request for the metrics, as TF Serving's handler parses them."""
    predict_match = PREDICT_PATH.fullmatch(path)
    if method == "POST" and predict_match:
        return urllib.parse.unquote(predict_match.group(1)), predict_match.group(4).lower()
    model_match = MODEL_PATH.fullmatch(path)
    if method == "GET" and model_match and model_match.group(1):
        return urllib.parse.unquote(model_match.group(1)), ""
    return "", ""


def model_spec(name: str, version: str | None, label: str | None = None) -> model_pb2.ModelSpec:
    """The ModelSpec a REST path names: `/versions/<number>` or `/labels/<label>`, or neither."""
    spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name))
    if version is not None:
        if int(version) > MAX_VERSION:
            raise status.invalid_argument(f"version {version} is over the largest, {MAX_VERSION}")
        spec.version.value = int(version)
    if label is not None:
        spec.version_label = urllib.parse.unquote(label)
    return spec


def parse_json(body: bytes) -> Mapping[str, Json]:
    """The request body as a JSON object."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise status.invalid_argument(f"JSON Parse error: {error}") from None
    except RecursionError:
        raise status.invalid_argument("JSON Parse error: nested too deeply") from None
    if not isinstance(document, dict):
        raise status.invalid_argument("JSON Value: request body is not an object")
    return document


def model_status(core: ServerCore, spec: model_pb2.ModelSpec) -> Json:
    """GetModelStatus as TF Serving prints it: every field, proto field names."""
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
    response = apis.model_status(core, request)
    return json_format.MessageToDict(
        response, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def model_metadata(core: ServerCore, spec: model_pb2.ModelSpec) -> Json:
    """GetModelMetadata with the SignatureDefMap unpacked, as TF Serving's /metadata answers."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=spec, metadata_field=[apis.SIGNATURE_DEF_FIELD]
    )
    response = apis.model_metadata(core, request)
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[apis.SIGNATURE_DEF_FIELD].Unpack(signature_def_map)
    return {
        "model_spec": json_format.MessageToDict(
            response.model_spec,
            always_print_fields_with_no_presence=True,
            preserving_proto_field_name=True,
        ),
        "metadata": {
            # Every field, defaults too, as TF Serving prints it (always_print_primitive_fields).
            "signature_def": json_format.MessageToDict(
                signature_def_map,
                always_print_fields_with_no_presence=True,
                preserving_proto_field_name=True,
            )
        },
    }


def predict(core: ServerCore, spec: model_pb2.ModelSpec, document: Mapping[str, Json]) -> Json:
    """Runs a row- or column-format predict request; answers in the same format."""
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise status.invalid_argument("'signature_name' key must be a string value.")
    served = core.servable(spec)
    signature = served.signature_defs.get(signature_name or contract.SERVING_SIGNATURE)
    if signature is None:
        raise status.invalid_argument(
            f'Serving signature name: "{signature_name}" not found in signature def'
        )
    row_format = request_format(document)
    named_values = (
        rows_to_columns(document["instances"], list(signature.inputs))
        if row_format
        else named_inputs(document["inputs"], list(signature.inputs))
    )
    servable.check_input_names(signature, named_values)
    request = predict_pb2.PredictRequest(model_spec=served.model_spec(signature_name))
    for alias, value in named_values.items():
        array = to_array(alias, value, signature.inputs[alias].dtype)
        # Packed: the request never leaves the process, so typed fields would only cost a
        # Python loop each way (6 ms for a 224x224 image).
        request.inputs[alias].CopyFrom(tensors.to_compact_tensor_proto(array))
    response = served.predict(request)
    outputs = {alias: tensors.to_ndarray(proto) for alias, proto in response.outputs.items()}
    return rows_json(outputs) if row_format else columns_json(outputs)


def request_format(document: Mapping[str, Json]) -> bool:
    """True for the row format (`instances`), False for the columnar one (`inputs`)."""
    if ("instances" in document) == ("inputs" in document):
        raise status.invalid_argument(
            "Missing 'inputs' or 'instances' key"
            if "instances" not in document
            else "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists"
        )
    if "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list) or not instances:
            raise status.invalid_argument("'instances' must be a non-empty JSON list")
        return True
    return False


def is_named(instance: Json) -> bool:
    """An instance naming its inputs (`{"image_bytes": ...}`), not a bare `{"b64": ...}`."""
    return isinstance(instance, dict) and set(instance) != {B64_KEY}


def rows_to_columns(instances: list[Json], input_names: list[str]) -> dict[str, list[Json]]:
    """Row format → one list per input; a single-input signature takes bare values too."""
    if not all(is_named(instance) for instance in instances):
        if len(input_names) != 1:
            raise status.invalid_argument(
                f"each instance must be an object naming the inputs {{{','.join(input_names)}}}"
            )
        return {input_names[0]: instances}
    columns: dict[str, list[Json]] = {}
    for instance in instances:
        if set(instance) != set(instances[0]):
            raise status.invalid_argument(
                "instances must all name the same inputs; "
                f"got {sorted(instance)} and {sorted(instances[0])}"
            )
        for name, value in instance.items():
            columns.setdefault(name, []).append(value)
    return columns


def named_inputs(inputs: Json, input_names: list[str]) -> dict[str, Json]:
    """Columnar format → input name → value; a single-input signature takes a bare value."""
    if is_named(inputs):
        return dict(inputs)
    if len(input_names) != 1:
        raise status.invalid_argument(
            f"'inputs' must be an object naming the inputs {{{','.join(input_names)}}}"
        )
    return {input_names[0]: inputs}


def to_array(alias: str, value: Json, dtype: int) -> np.ndarray:
    """A JSON value as an array of the signature's dtype; `{"b64": ...}` decoded for strings."""
    try:
        if dtype == types_pb2.DT_STRING:
            return np.array(decode_strings(value), dtype=object)
        return np.array(value, dtype=tf.dtypes.as_dtype(dtype).as_numpy_dtype)
    except (ValueError, TypeError, binascii.Error, RecursionError) as error:
        expected = tensors.dtype_name(dtype)
        raise status.invalid_argument(
            f"input '{alias}': cannot make a {expected} tensor from the JSON value ({error})"
        ) from None


def decode_strings(value: Json) -> Json:
    """Nested JSON strings → bytes: `{"b64": "..."}` base64-decoded, plain text UTF-8 encoded."""
    if isinstance(value, list):
        return [decode_strings(item) for item in value]
    if isinstance(value, dict) and set(value) == {B64_KEY}:
        return base64.b64decode(value[B64_KEY], validate=True)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"expected a string or {{'b64': ...}}, got {type(value).__name__}")


def to_json_value(alias: str, values: np.ndarray) -> Json:
    """An output array as nested JSON lists; bytes as text, or base64 for `*_bytes` aliases."""
    if values.dtype == np.float32:
        # Shortest text that reads back as the same float32: 0.6782584, not 0.6782584190368652.
        return map_nested(values.tolist(), lambda value: float(str(np.float32(value))))
    if values.dtype != object:
        return values.tolist()
    if alias.endswith(BYTES_SUFFIX):
        return map_nested(values.tolist(), lambda raw: {B64_KEY: base64.b64encode(raw).decode()})
    return map_nested(values.tolist(), lambda raw: raw.decode("utf-8", errors="replace"))


def map_nested(value: Json, function: Callable[[Any], Json]) -> Json:
    """`function` applied to every leaf of nested lists."""
    if isinstance(value, list):
        return [map_nested(item, function) for item in value]
    return function(value)


def rows_json(outputs: Mapping[str, np.ndarray]) -> Json:
    """`{"predictions": [...]}`: one entry per example, an object when there are several outputs."""
    columns = {alias: to_json_value(alias, values) for alias, values in outputs.items()}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    batch_size = len(next(iter(columns.values())))
    return {
        "predictions": [
            {alias: column[row] for alias, column in columns.items()} for row in range(batch_size)
        ]
    }


def columns_json(outputs: Mapping[str, np.ndarray]) -> Json:
    """`{"outputs": ...}`: the value itself for one output, else an object of outputs."""
    columns = {alias: to_json_value(alias, values) for alias, values in outputs.items()}
    return {"outputs": next(iter(columns.values())) if len(columns) == 1 else columns}
