"""objrec-serve: the development model server's command line, with TF Serving's flag names.

Run it on a trainer's export (local path or gs://):

    python -m serving.dev_server --model_base_path JOB_DIR/export/objrec --model_name objrec \
        --port 8500 --rest_api_port 8501
    python -m serving.dev_server --model_base_path gs://BUCKET/JOB_DIR/export/objrec \
        --model_name objrec --port 8500

or on TF Serving's model config file (several models, version policies, version labels;
see model_config.py), re-read every 30 s:

    python -m serving.dev_server --model_config_file models.config \
        --model_config_file_poll_wait_seconds 30 --allow_version_labels_for_unavailable_models true

or through the console script `objrec-serve` with the same flags.
"""

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from objrec.flags import DefaultsHelpFormatter, parse_bool
from serving.dev_server.config import ServerConfig


def build_parser() -> argparse.ArgumentParser:
    """The objrec-serve command line: TF Serving's flag names and defaults."""
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="objrec-serve",
        description=__doc__.split("\n\n")[0],
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model_base_path",
        default="",
        help="JOB_DIR/export/objrec: holds integer version directories",
    )
    parser.add_argument(
        "--model_name", default=defaults.model_name, help="the name clients put in ModelSpec.name"
    )
    parser.add_argument(
        "--model_config_file",
        default=None,
        help="TF Serving's text-format ModelServerConfig, instead of --model_base_path",
    )
    parser.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=defaults.model_config_file_poll_wait_seconds,
        help="re-read --model_config_file this often; 0 reads it once",
    )
    parser.add_argument(
        "--allow_version_labels_for_unavailable_models",
        type=parse_bool,
        nargs="?",
        const=True,
        default=defaults.allow_version_labels_for_unavailable_models,
        help="let a label name a version that is not loaded yet (TF Serving refuses such "
        "labels at startup without it)",
    )
    parser.add_argument("--port", type=int, default=defaults.port, help="gRPC port")
    parser.add_argument(
        "--rest_api_port",
        type=int,
        default=0,
        help="REST port; 0 (the default) serves no REST API, like TF Serving",
    )
    parser.add_argument("--host", default=defaults.host, help="address to bind")
    parser.add_argument(
        "--num_versions",
        type=int,
        default=None,
        help=f"how many of the newest versions to keep loaded (default {defaults.num_versions})",
    )
    parser.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=defaults.file_system_poll_wait_seconds,
        help="how often to look for new versions; 0 or less looks only at startup",
    )
    parser.add_argument(
        "--grpc_max_threads",
        type=int,
        default=defaults.grpc_max_threads,
        help="requests served at once",
    )
    parser.add_argument(
        "--max_message_bytes",
        type=int,
        default=defaults.max_message_bytes,
        help="largest gRPC request or response",
    )
    parser.add_argument(
        "--enable_model_warmup",
        type=parse_bool,
        nargs="?",
        const=True,
        default=defaults.enable_model_warmup,
        help="replay the export's assets.extra/tf_serving_warmup_requests after loading",
    )
    parser.add_argument(
        "--tensorflow_session_parallelism",
        type=int,
        default=defaults.tensorflow_session_parallelism,
        help="TensorFlow's intra- and inter-op threads; 0 lets TensorFlow choose",
    )
    parser.add_argument(
        "--tensorflow_intra_op_parallelism",
        type=int,
        default=defaults.tensorflow_intra_op_parallelism,
        help="threads that run one op; with the next flag instead of "
        "--tensorflow_session_parallelism",
    )
    parser.add_argument(
        "--tensorflow_inter_op_parallelism",
        type=int,
        default=defaults.tensorflow_inter_op_parallelism,
        help="threads that run independent ops",
    )
    parser.add_argument(
        "--enable_batching",
        type=parse_bool,
        nargs="?",
        const=True,
        default=defaults.enable_batching,
        help="merge concurrent requests into batches (TF Serving's BatchingSession)",
    )
    parser.add_argument(
        "--batching_parameters_file",
        default=None,
        help="text-format BatchingParameters: max_batch_size, batch_timeout_micros, "
        "num_batch_threads, max_enqueued_batches, allowed_batch_sizes",
    )
    parser.add_argument(
        "--monitoring_config_file",
        default=None,
        help="text-format MonitoringConfig: Prometheus metrics on the REST port at its path",
    )
    parser.add_argument(
        "--enable_grpc_healthcheck_service",
        type=parse_bool,
        nargs="?",
        const=True,
        default=defaults.enable_grpc_healthcheck_service,
        help='serve grpc.health.v1.Health for "", ModelService and PredictionService',
    )
    parser.add_argument(
        "--grpc_channel_arguments",
        default=defaults.grpc_channel_arguments,
        help="gRPC server arguments, key=value,key=value (e.g. grpc.max_connection_age_ms=300000)",
    )
    parser.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        default=defaults.rest_api_timeout_in_ms,
        help="how long a REST client may take to send its request",
    )
    parser.add_argument(
        "--grace_period_seconds",
        type=float,
        default=defaults.grace_period_seconds,
        help="how long running requests may finish after SIGTERM",
    )
    return parser


# tensorflow_model_server's flags (model_servers/main.cc) that objrec-serve does not implement:
# each is refused by name rather than accepted and ignored, so a command line that works here
# means on TF Serving what it meant here.
UNIMPLEMENTED_TF_SERVING_FLAGS = frozenset(
    {
        "enable_per_model_batching_parameters",
        "enable_profiler",
        "enable_serialization_as_tensor_content",
        "enable_signature_method_name_check",
        "flush_filesystem_caches",
        "grpc_socket_path",
        "load_retry_interval_micros",
        "max_num_load_retries",
        "mixed_precision",
        "num_load_threads",
        "num_request_iterations_for_warmup",
        "num_tflite_interpreters_per_pool",
        "num_tflite_pools",
        "num_unload_threads",
        "per_process_gpu_memory_fraction",
        "platform_config_file",
        "prefer_tflite_model",
        "remove_unused_fields_from_bundle_metagraph",
        "rest_api_enable_cors_support",
        "rest_api_num_threads",
        "saved_model_tags",
        "skip_initialize_tpu",
        "ssl_config_file",
        "tensorflow_session_config_file",
        "thread_pool_factory_config_file",
        "use_alts_credentials",
        "version",
        "xla_cpu_compilation_enabled",
        "xla_gpu_compilation_enabled",
    }
)


def refuse_unimplemented_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """A TF Serving flag this server lacks is an error that names it, never ignored."""
    for argument in argv:
        name = argument.removeprefix("--").split("=", 1)[0]
        if argument.startswith("--") and name in UNIMPLEMENTED_TF_SERVING_FLAGS:
            parser.error(
                f"--{name} is a tensorflow_model_server flag that objrec-serve does not "
                "implement: drop it here (the real TF Serving honours it)"
            )


def check_model_source(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exactly one of --model_base_path and --model_config_file, each usable."""
    if args.model_config_file:
        if args.model_base_path or args.num_versions is not None:
            parser.error(
                "--model_config_file lists the models with their base paths and version "
                "policies: drop --model_base_path and --num_versions"
            )
        return
    if not args.model_base_path:
        parser.error("give --model_base_path JOB_DIR/export/objrec, or --model_config_file")
    if args.num_versions is not None and args.num_versions < 1:
        parser.error(f"--num_versions {args.num_versions}: keep at least 1 version loaded")
    # TensorFlow's file systems (gs:// too) load here, once the flags themselves are right.
    import tensorflow as tf

    from serving.dev_server import model_config

    if not tf.io.gfile.isdir(args.model_base_path):
        parser.error(
            f"--model_base_path {args.model_base_path} is not a directory: "
            "point it at JOB_DIR/export/objrec"
        )
    if not model_config.is_absolute(args.model_base_path):
        # TF Serving needs an absolute base path; this development server resolves one.
        resolved = os.path.abspath(args.model_base_path)
        logging.info("--model_base_path %s is relative: serving %s", args.model_base_path, resolved)
        args.model_base_path = resolved


def parse_args(argv: Sequence[str] | None) -> ServerConfig:
    """Command line (TF Serving's flag names) → ServerConfig."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    refuse_unimplemented_flags(parser, argv)
    args = parser.parse_args(argv)
    check_model_source(parser, args)
    if args.batching_parameters_file and not args.enable_batching:
        parser.error("--batching_parameters_file is set without setting --enable_batching to true.")
    fields = {name: value for name, value in vars(args).items() if value is not None}
    fields["rest_api_port"] = args.rest_api_port or None
    return ServerConfig(**fields)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `python -m serving.dev_server` and `objrec-serve`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # oneDNN's pooled allocator keeps the largest request's working set for good (a 7000 x 7000
    # PNG: +1.9 GB resident after its answer); the system allocator returns it. Read when the
    # first oneDNN kernel runs, so setting it here, before any model loads, is in time.
    os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
    config = parse_args(argv)
    # TensorFlow loads here, after --help and usage errors have answered.
    from serving.dev_server import server

    try:
        server.serve(config)
    except OSError as error:
        sys.exit(f"objrec-serve: {error} Pick another --port or --rest_api_port.")
    except ValueError as error:
        sys.exit(f"objrec-serve: {error}")


if __name__ == "__main__":
    main()
