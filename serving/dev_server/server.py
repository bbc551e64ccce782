"""A local model server speaking TF Serving's gRPC (and REST) API, for development and tests.

No `tensorflow_model_server` binary is installable here, so this server stands in for it: it
loads each SavedModel version through its SignatureDefs exactly as TF Serving does (see
servable.py) and answers `tensorflow.serving.PredictionService`, `ModelService` and
`grpc.health.v1.Health` with TF Serving's status codes and messages. Clients cannot tell the
difference, so the same client code talks to TF Serving on Kubernetes.

`objrec-serve` (serving/dev_server/cli.py) runs it; `serve` is its work.
"""

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
import tensorflow as tf
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
    status_pb2,
)

from serving.dev_server import apis, config_files, model_config, status
from serving.dev_server.batching import BatchingOptions, BatchScheduler
from serving.dev_server.config import ServerConfig
from serving.dev_server.metrics import ServerMetrics
from serving.dev_server.rest import RestApiServer
from serving.dev_server.servable import ServableOptions
from serving.dev_server.server_core import ServerCore

# The services TF Serving's --enable_grpc_healthcheck_service answers for: gRPC's default
# health service ("", the server as a whole) and the two it registers (model_servers/server.cc).
HEALTH_SERVICES = ("", "ModelService", "PredictionService")


def aborts_on_error(method: Callable) -> Callable:
    """Turns ServingErrors into the gRPC status TF Serving would answer with."""

    @functools.wraps(method)
    def wrapper(self, request: Message, context: grpc.ServicerContext) -> Message:
        try:
            return method(self, request, context)
        except status.ServingError as error:
            context.abort(error.code, error.message)
        except Exception:
            logging.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__} internal error")

    return wrapper


def counts_requests(method: Callable) -> Callable:
    """Records a PredictionService call in the server's metrics, as TF Serving does for
    Predict, Classify and Regress: a count by model and status, the latency of a success."""

    @functools.wraps(method)
    def wrapper(self, request: Message, context: grpc.ServicerContext) -> Message:
        started = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            return method(self, request, context)
        except status.ServingError as error:
            code = error.code
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            raise
        finally:
            self._metrics.record_request(
                request.model_spec.name,
                method.__name__,
                "GRPC",
                code.name,
                time.monotonic() - started,
            )

    return wrapper


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService over a ServerCore."""

    def __init__(self, core: ServerCore, metrics: ServerMetrics):
        self._core = core
        self._metrics = metrics

    @aborts_on_error
    @counts_requests
    def Predict(  # noqa: N802 (gRPC method name)
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        if not request.HasField("model_spec"):
            raise status.invalid_argument("Missing ModelSpec")
        return self._core.servable(request.model_spec).predict(request)

    @aborts_on_error
    def GetModelMetadata(  # noqa: N802
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return apis.model_metadata(self._core, request)

    @aborts_on_error
    @counts_requests
    def Classify(  # noqa: N802
        self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        apis.refuse_for_predict_signature(self._core, request.model_spec, "classify")

    @aborts_on_error
    @counts_requests
    def Regress(  # noqa: N802
        self, request: regression_pb2.RegressionRequest, context: grpc.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        apis.refuse_for_predict_signature(self._core, request.model_spec, "regress")

    @aborts_on_error
    def MultiInference(  # noqa: N802
        self, request: inference_pb2.MultiInferenceRequest, context: grpc.ServicerContext
    ) -> inference_pb2.MultiInferenceResponse:
        for task in request.tasks:
            apis.refuse_for_predict_signature(self._core, task.model_spec, "multi_inference")
        raise status.invalid_argument("MultiInferenceRequest has no tasks")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: version states, and config reloads."""

    def __init__(self, core: ServerCore):
        self._core = core

    @aborts_on_error
    def GetModelStatus(  # noqa: N802
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        return apis.model_status(self._core, request)

    @aborts_on_error
    def HandleReloadConfigRequest(  # noqa: N802
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        # As TF Serving: the whole config is replaced (a model left out is unloaded), and a
        # refused one is an error status with the old config still in force.
        self._core.reload_config(request.config)
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto())


class ModelServer:
    """A ServerCore behind a gRPC server (and optionally a REST one).

    Usable in-process, e.g. in tests:

        with ModelServer(ServerConfig(base_path, port=0, host="127.0.0.1")) as server:
            channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    """

    def __init__(self, config: ServerConfig):
        """Reads the config files the flags name; nothing is loaded or bound yet.

        Raises:
            ValueError: a flag combination or config file TF Serving would refuse.
        """
        self.config = config
        self.metrics = ServerMetrics()
        self._prometheus_path = config_files.prometheus_path(config.monitoring_config_file)
        self._grpc_options = grpc_channel_arguments(config.grpc_channel_arguments)
        self.batch_scheduler = batch_scheduler(config, self.metrics)
        self._health = health.HealthServicer() if config.enable_grpc_healthcheck_service else None
        self._set_health(False)
        self.core = ServerCore(
            enable_model_warmup=config.enable_model_warmup,
            servable_options=ServableOptions(
                session_config=session_config(config),
                batch_scheduler=self.batch_scheduler,
                metrics=self.metrics,
            ),
            allow_version_labels_for_unavailable_models=(
                config.allow_version_labels_for_unavailable_models
            ),
            on_availability_change=self._update_health,
        )
        self._grpc_server: grpc.Server | None = None
        self._rest_server: RestApiServer | None = None
        self.port: int | None = None

    @property
    def rest_port(self) -> int | None:
        """The bound REST port, None without a REST API."""
        return self._rest_server.port if self._rest_server else None

    def start(self) -> int:
        """Loads the configured models, starts serving and polling; returns the gRPC port.

        Raises:
            ValueError: the model config is refused (TF Serving's message).
            OSError: a port cannot be bound.
        """
        self._load_initial_config()
        try:
            self.port = self._start_grpc()
            if self.config.rest_api_port is not None:
                self._rest_server = RestApiServer(
                    self.core,
                    self.config.max_message_bytes,
                    metrics=self.metrics,
                    prometheus_path=self._prometheus_path,
                    timeout_seconds=self.config.rest_api_timeout_in_ms / 1000,
                )
                self._rest_server.start(self.config.host, self.config.rest_api_port)
        except OSError:
            self.stop(grace=0)
            raise
        if self.config.file_system_poll_wait_seconds > 0:
            self.core.start_polling(self.config.file_system_poll_wait_seconds)
        if self.config.model_config_file and self.config.model_config_file_poll_wait_seconds > 0:
            self.core.start_config_polling(
                self.config.model_config_file, self.config.model_config_file_poll_wait_seconds
            )
        return self.port

    def stop(self, grace: float | None = None) -> None:
        """Refuses new requests, lets running ones finish for `grace` seconds, unloads."""
        grace = self.config.grace_period_seconds if grace is None else grace
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        if self._rest_server is not None:
            self._rest_server.stop()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace).wait()
        if self.batch_scheduler is not None:
            self.batch_scheduler.close()
        self.core.close()

    def __enter__(self) -> "ModelServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _load_initial_config(self) -> None:
        try:
            self.core.reload_config(initial_model_server_config(self.config))
        except status.ServingError as error:
            hint = ""
            if error.code == grpc.StatusCode.FAILED_PRECONDITION:
                # Nothing is loaded before the first config, so TF Serving refuses any label
                # in it unless told otherwise; the hint saves a trip to its source code.
                hint = " (start with --allow_version_labels_for_unavailable_models=true)"
            raise ValueError(f"{error.code.name}: {error.message}{hint}") from None

    def _start_grpc(self) -> int:
        self._grpc_server = self._build_grpc_server()
        address = f"{self.config.host}:{self.config.port}"
        try:
            port = self._grpc_server.add_insecure_port(address)
        except RuntimeError:  # grpc's only signal that the port cannot be bound
            raise OSError(f"cannot bind the gRPC port {address}: is it in use?") from None
        self._grpc_server.start()
        return port

    def _build_grpc_server(self) -> grpc.Server:
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self.config.grpc_max_threads, thread_name_prefix="grpc"
            ),
            options=[
                ("grpc.max_receive_message_length", self.config.max_message_bytes),
                ("grpc.max_send_message_length", self.config.max_message_bytes),
                # A single port per server: a second server on the same port is a mistake
                # that SO_REUSEPORT would silently turn into load balancing.
                ("grpc.so_reuseport", 0),
                *self._grpc_options,
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.core, self.metrics), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.core), server)
        if self._health is not None:
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        return server

    def _update_health(self) -> None:
        self._set_health(self.core.is_available())

    def _set_health(self, available: bool) -> None:
        # TF Serving's gRPC port opens only once the configured models have loaded, and its
        # health service then says SERVING; here the port opens at the same point, and the
        # status also follows later loads and unloads (NOT_SERVING while a model has no
        # version answering), so a Kubernetes grpc probe keeps traffic away until then.
        if self._health is None:
            return
        serving_status = (
            health_pb2.HealthCheckResponse.SERVING
            if available
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in HEALTH_SERVICES:
            self._health.set(service, serving_status)


def initial_model_server_config(config: ServerConfig) -> model_config.ModelServerConfig:
    """The models to serve: the config file's, or the one `--model_base_path` names.

    Raises:
        ValueError: the config file cannot be read or TF Serving would refuse it.
    """
    if config.model_config_file:
        return model_config.read_model_server_config(config.model_config_file)
    return model_config.single_model_config(
        config.model_name, config.model_base_path, config.num_versions
    )


def session_config(config: ServerConfig) -> tf.compat.v1.ConfigProto:
    """Session threads as TF Serving's three parallelism flags set them (server.cc).

    Raises:
        ValueError: all three flags are set, which TF Serving refuses.
    """
    intra, inter = config.tensorflow_intra_op_parallelism, config.tensorflow_inter_op_parallelism
    if intra > 0 and inter > 0 and config.tensorflow_session_parallelism > 0:
        raise ValueError(
            "Either configure --tensorflow_session_parallelism or "
            "(--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) "
            "separately. You cannot configure all."
        )
    if intra <= 0 and inter <= 0:
        intra = inter = config.tensorflow_session_parallelism
    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter
    )


def batch_scheduler(config: ServerConfig, metrics: ServerMetrics) -> BatchScheduler | None:
    """The server's batch scheduler with `--enable_batching`, else None.

    Raises:
        ValueError: a batching file without --enable_batching, or parameters TF Serving
            (or this server) refuses.
    """
    if not config.enable_batching:
        if config.batching_parameters_file:
            raise ValueError(
                "--batching_parameters_file is set without setting --enable_batching to true."
            )
        return None
    parameters = config_files.read_batching_parameters(config.batching_parameters_file)
    try:
        options = BatchingOptions.from_parameters(parameters)
    except ValueError as error:
        where = config.batching_parameters_file or "the default BatchingParameters"
        raise ValueError(f"{where}: {error}") from None
    return BatchScheduler(options, metrics)


def grpc_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """TF Serving's --grpc_channel_arguments: "key=value,..."; integer values as integers.

    Raises:
        ValueError: an entry that is not key=value.
    """
    arguments: list[tuple[str, int | str]] = []
    for entry in filter(None, text.split(",")):
        key, separator, value = entry.partition("=")
        if not separator or not key:
            raise ValueError(
                f"--grpc_channel_arguments entry {entry!r} is not key=value "
                "(e.g. grpc.max_connection_age_ms=300000)"
            )
        try:
            arguments.append((key, int(value)))
        except ValueError:
            arguments.append((key, value))
    return arguments


def serve(config: ServerConfig) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down gracefully."""
    server = ModelServer(config)
    port = server.start()
    # Installed once serving: a signal during startup has nothing to drain and just exits.
    stop_requested = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop_requested.set())
    logging.info("Running gRPC ModelServer at %s:%d ...", config.host, port)
    if server.rest_port is not None:
        logging.info("Exporting HTTP/REST API at %s:%d ...", config.host, server.rest_port)
    # Waiting with a timeout keeps the main thread responsive to signals.
    while not stop_requested.wait(timeout=1.0):
        pass
    logging.info("Shutting down, %.0f s for running requests", config.grace_period_seconds)
    server.stop()
