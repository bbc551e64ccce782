"""TF Serving's model server config: which models to serve, their version policies and labels.

The same text-format `ModelServerConfig` file TF Serving reads with `--model_config_file`:

    model_config_list {
      config {
        name: "objrec"
        base_path: "/models/objrec"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 3 versions: 4 } }
        version_labels { key: "stable" value: 3 }
        version_labels { key: "canary" value: 4 }
      }
    }

A file that this module accepts is one TF Serving accepts too (absolute base paths, a
platform, unique names), so a config checked here can be mounted into the real server.
"""

import os
from collections.abc import Sequence

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import (
    file_system_storage_path_source_pb2,
    model_server_config_pb2,
)

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig
_SourceConfig = file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig
VersionPolicy = _SourceConfig.ServableVersionPolicy

TENSORFLOW_PLATFORM = "tensorflow"


def single_model_config(name: str, base_path: str, num_versions: int = 1) -> ModelServerConfig:
    """What `--model_name` and `--model_base_path` mean: one model, the newest version(s)."""
    config = ModelServerConfig()
    model = config.model_config_list.config.add(
        name=name, base_path=base_path, model_platform=TENSORFLOW_PLATFORM
    )
    model.model_version_policy.latest.num_versions = num_versions
    return config


def read_model_server_config(path: str) -> ModelServerConfig:
    """Parses a text-format ModelServerConfig file (local or gs://) and checks it.

    Raises:
        ValueError: the file cannot be parsed, or TF Serving would refuse its content.
    """
    try:
        text = tf.io.gfile.GFile(path, "r").read()
    except tf.errors.OpError as error:
        raise ValueError(f"cannot read --model_config_file {path}: {error.message}") from None
    try:
        config = text_format.Parse(text, ModelServerConfig())
    except text_format.ParseError as error:
        raise ValueError(
            f"--model_config_file {path} is not a text-format ModelServerConfig: {error}"
        ) from None
    validate(config)
    return config


def validate(config: ModelServerConfig) -> None:
    """The checks TF Serving's ServerCore makes before loading anything, with its messages.

    Raises:
        ValueError: custom configs, duplicate names, relative base paths, a missing or
            non-TensorFlow platform.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError("only a model_config_list is supported (no custom_model_config)")
    names = [model.name for model in config.model_config_list.config]
    for model in config.model_config_list.config:
        if not model.name:
            raise ValueError("every model config needs a name")
        if names.count(model.name) > 1:
            raise ValueError(f"Illegal to list model {model.name} multiple times in config list")
        if not is_absolute(model.base_path):
            raise ValueError(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )
        check_platform(model)


def is_absolute(base_path: str) -> bool:
    """An absolute local path or any URI (`gs://...`): what TF Serving accepts as a base path."""
    return "://" in base_path or os.path.isabs(base_path)


def check_platform(model: ModelConfig) -> None:
    """TF Serving needs `model_platform: "tensorflow"`; it has no default."""
    if not model.model_platform:
        raise ValueError(
            f"model {model.name}: Illegal setting neither ModelServerConfig::model_type "
            '(deprecated) nor ModelServerConfig::model_platform: add model_platform: "tensorflow"'
        )
    if model.model_platform != TENSORFLOW_PLATFORM:
        raise ValueError(f"Model {model.name} requests unsupported platform {model.model_platform}")


def aspired_versions(on_disk: Sequence[int], policy: VersionPolicy) -> list[int]:
    """The versions a policy keeps loaded, newest first, from the versions found on disk.

    As TF Serving's file-system source: `latest` (the default, N=1) the newest N; `all` every
    one; `specific` those listed that exist.
    """
    newest_first = sorted(on_disk, reverse=True)
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return newest_first
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [version for version in newest_first if version in wanted]
    num_versions = policy.latest.num_versions if choice == "latest" else 1
    return newest_first[: max(num_versions, 1)]
