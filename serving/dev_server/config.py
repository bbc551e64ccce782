"""Configuration of the local model server; `serving.dev_server` flags override these defaults."""

import dataclasses

from objrec import contract


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """What `python -m serving.dev_server` serves, and how.

    Attributes:
        model_base_path: directory (local or gs://) holding integer version subdirectories;
            empty when `model_config_file` lists the models instead.
        model_name: the name clients put in ModelSpec.name.
        port: gRPC port; 0 picks a free one (tests).
        rest_api_port: REST port; None serves no REST API, 0 picks a free one.
        host: address both servers bind to; TF Serving binds every interface.
        num_versions: how many of the newest versions stay loaded (TF Serving's
            `latest {num_versions: N}` policy; 1 is its default). Not with `model_config_file`,
            whose models carry their own policy.
        model_config_file: TF Serving's text-format ModelServerConfig (model_config.py): several
            models, version policies, version labels. Instead of model_base_path/model_name.
        model_config_file_poll_wait_seconds: how often to re-read `model_config_file`; 0 reads
            it once (TF Serving's default).
        allow_version_labels_for_unavailable_models: let a new label name a version that is
            not loaded yet. TF Serving refuses labels at startup without it.
        file_system_poll_wait_seconds: how often to look for new versions; 0 or less looks
            only at startup.
        grpc_max_threads: requests served at once.
        max_message_bytes: largest request or response; bigger requests get RESOURCE_EXHAUSTED.
            64 MiB fits a batch of 16 photos of 4 MB each.
        enable_model_warmup: replay `assets.extra/tf_serving_warmup_requests` after loading.
        tensorflow_session_parallelism: TensorFlow intra- and inter-op threads; 0 lets
            TensorFlow choose.
        tensorflow_intra_op_parallelism, tensorflow_inter_op_parallelism: the two pools set
            apart (TF Serving refuses them together with `tensorflow_session_parallelism`).
        enable_batching: merge concurrent requests into batches (batching.py).
        batching_parameters_file: TF Serving's text-format BatchingParameters; None uses its
            defaults. Only with `enable_batching`.
        monitoring_config_file: TF Serving's text-format MonitoringConfig: Prometheus metrics
            on the REST port at its path.
        enable_grpc_healthcheck_service: serve grpc.health.v1.Health for "", "ModelService"
            and "PredictionService", as TF Serving's flag does; off by default, as there.
        grpc_channel_arguments: TF Serving's "key=value,key=value" gRPC server arguments
            (an integer value is passed as an integer), e.g. grpc.max_connection_age_ms=300000.
        rest_api_timeout_in_ms: how long a REST client may take to send its request.
        grace_period_seconds: how long running requests may finish after SIGTERM; Kubernetes
            allows 30 s before it kills the pod.
    """

    model_base_path: str = ""
    model_name: str = contract.DEFAULT_MODEL_NAME
    port: int = contract.DEFAULT_GRPC_PORT
    rest_api_port: int | None = None
    host: str = "0.0.0.0"
    num_versions: int = 1
    model_config_file: str | None = None
    model_config_file_poll_wait_seconds: float = 0.0
    allow_version_labels_for_unavailable_models: bool = False
    file_system_poll_wait_seconds: float = 1.0
    grpc_max_threads: int = 16
    max_message_bytes: int = contract.DEFAULT_MAX_MESSAGE_BYTES
    enable_model_warmup: bool = True
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    enable_batching: bool = False
    batching_parameters_file: str | None = None
    monitoring_config_file: str | None = None
    enable_grpc_healthcheck_service: bool = False
    grpc_channel_arguments: str = ""
    rest_api_timeout_in_ms: int = 30000
    grace_period_seconds: float = 10.0
