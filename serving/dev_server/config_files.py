"""TF Serving's batching and monitoring config files, read as TF Serving reads them.

`--batching_parameters_file` holds a text-format `tensorflow.serving.BatchingParameters`
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto) and
`--monitoring_config_file` a text-format `tensorflow.serving.MonitoringConfig`
(tensorflow_serving/config/monitoring_config.proto):

    max_batch_size { value: 16 }                prometheus_config {
    batch_timeout_micros { value: 0 }             enable: true
    num_batch_threads { value: 4 }                path: "/monitoring/prometheus/metrics"
    max_enqueued_batches { value: 64 }          }

The tensorflow-serving-api package ships neither message, so both are declared here with TF
Serving's package, names and field numbers: a file this module parses is one TF Serving
parses, and a field TF Serving does not know is refused here too.
"""

import tensorflow as tf
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

_PACKAGE = "tensorflow.serving"
_WRAPPERS = wrappers_pb2.DESCRIPTOR
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_TYPES = descriptor_pb2.FieldDescriptorProto

# (field name, number, type, label, message type) as in TF Serving's .proto files.
_BATCHING_FIELDS = (
    ("max_batch_size", 1, _TYPES.TYPE_MESSAGE, _OPTIONAL, ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, _TYPES.TYPE_MESSAGE, _OPTIONAL, ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, _TYPES.TYPE_MESSAGE, _OPTIONAL, ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, _TYPES.TYPE_MESSAGE, _OPTIONAL, ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, _TYPES.TYPE_MESSAGE, _OPTIONAL, ".google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, _TYPES.TYPE_INT64, _REPEATED, None),
    ("pad_variable_length_inputs", 7, _TYPES.TYPE_BOOL, _OPTIONAL, None),
    (
        "enable_large_batch_splitting",
        8,
        _TYPES.TYPE_MESSAGE,
        _OPTIONAL,
        ".google.protobuf.BoolValue",
    ),
    ("max_execution_batch_size", 9, _TYPES.TYPE_MESSAGE, _OPTIONAL, ".google.protobuf.Int64Value"),
)
_PROMETHEUS_FIELDS = (
    ("enable", 1, _TYPES.TYPE_BOOL, _OPTIONAL, None),
    ("path", 2, _TYPES.TYPE_STRING, _OPTIONAL, None),
)
_MONITORING_FIELDS = (
    ("prometheus_config", 1, _TYPES.TYPE_MESSAGE, _OPTIONAL, f".{_PACKAGE}.PrometheusConfig"),
)


def _message(file_proto: descriptor_pb2.FileDescriptorProto, name: str, fields) -> None:
    message = file_proto.message_type.add(name=name)
    for field_name, number, field_type, label, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=field_type, label=label)
        if type_name:
            field.type_name = type_name


def _build_messages() -> dict[str, type]:
    # A pool of its own: TensorFlow or another library may register TF Serving's real files
    # in the default pool one day, and two definitions of one name there would clash.
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    _WRAPPERS.CopyToProto(wrappers)
    pool.Add(wrappers)
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="objrec/tf_serving_config_files.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=[_WRAPPERS.name],
    )
    _message(file_proto, "BatchingParameters", _BATCHING_FIELDS)
    _message(file_proto, "PrometheusConfig", _PROMETHEUS_FIELDS)
    _message(file_proto, "MonitoringConfig", _MONITORING_FIELDS)
    pool.Add(file_proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig")
    }


_MESSAGES = _build_messages()
BatchingParameters = _MESSAGES["BatchingParameters"]
MonitoringConfig = _MESSAGES["MonitoringConfig"]

# TF Serving's PrometheusExporter::kPrometheusPath, used when the config names no path.
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def read_text_proto(path: str, message_class: type, flag: str):
    """Parses a text-format proto file (local or gs://) into `message_class`.

    Raises:
        ValueError: the file cannot be read or parsed; the message names the flag and file.
    """
    try:
        with tf.io.gfile.GFile(path, "r") as file:
            text = file.read()
    except tf.errors.OpError as error:
        raise ValueError(f"cannot read --{flag} {path}: {error.message}") from None
    try:
        return text_format.Parse(text, message_class())
    except text_format.ParseError as error:
        name = message_class.DESCRIPTOR.full_name
        raise ValueError(f"--{flag} {path} is not a text-format {name}: {error}") from None


def read_batching_parameters(path: str | None):
    """`--batching_parameters_file`, or TF Serving's defaults when there is none."""
    if not path:
        # What TF Serving uses for --enable_batching without a file (server.cc).
        parameters = BatchingParameters()
        parameters.thread_pool_name.value = "model_server_batch_threads"
        return parameters
    return read_text_proto(path, BatchingParameters, "batching_parameters_file")


def prometheus_path(path: str | None) -> str | None:
    """The REST path of Prometheus metrics a `--monitoring_config_file` asks for, or None."""
    if not path:
        return None
    config = read_text_proto(path, MonitoringConfig, "monitoring_config_file")
    if not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH
