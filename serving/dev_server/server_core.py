"""Every model a server serves, as TF Serving's ServerCore: one manager per model, and labels.

A ModelServerConfig (model_config.py) says which models to serve, each with a base path, a
version policy and version labels. `reload_config` applies a new one the way TF Serving's
ServerCore::ReloadConfig does: labels are checked first, against the versions available at that
moment; then models are added, reconfigured or removed. A refused config leaves the old one in
force. Requests name a model and, optionally, a version or a label (`ModelSpec.version_choice`).
"""

import logging
import threading
from collections.abc import Callable

import grpc
import tensorflow as tf
from tensorflow_serving.apis import model_pb2

from serving.dev_server import model_config, status
from serving.dev_server.model_manager import (
    ModelManager,
    VersionState,
    servable_not_found,
    versions_not_found,
)
from serving.dev_server.servable import SavedModelServable, ServableOptions

LabelMap = dict[str, dict[str, int]]  # model name → label → version


class ServerCore:
    """The model managers of the current config, and its version labels.

    Args:
        enable_model_warmup: replay each version's warmup records before serving it.
        servable_options: how every version runs (session options, batching, metrics).
        allow_version_labels_for_unavailable_models: TF Serving's flag of that name: a new
            label may name a version that is not loaded yet. Without it TF Serving refuses
            every label in the config it starts with, since nothing is loaded at that point.
        on_availability_change: called after any version of any model loads or unloads.
    """

    def __init__(
        self,
        *,
        enable_model_warmup: bool = True,
        servable_options: ServableOptions | None = None,
        allow_version_labels_for_unavailable_models: bool = False,
        on_availability_change: Callable[[], None] | None = None,
    ):
        self._enable_model_warmup = enable_model_warmup
        self._servable_options = servable_options
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._on_availability_change = on_availability_change
        self._lock = threading.Lock()  # guards _managers and _labels for request threads
        self._config_lock = threading.Lock()  # one reload at a time
        self._managers: dict[str, ModelManager] = {}
        self._labels: LabelMap = {}
        self._config = model_config.ModelServerConfig()
        self._poll_wait_seconds = 0.0
        self._stop = threading.Event()
        self._config_poller: threading.Thread | None = None

    @property
    def config(self) -> model_config.ModelServerConfig:
        """The config in force."""
        return self._config

    def reload_config(self, config: model_config.ModelServerConfig) -> None:
        """Serves exactly the models `config` lists, with its version policies and labels.

        Loads the versions of new models before returning. The old config stays in force
        when the new one is refused.

        Raises:
            status.ServingError: INVALID_ARGUMENT for a config TF Serving refuses,
                FAILED_PRECONDITION for a label it may not assign (TF Serving's messages).
        """
        with self._config_lock:
            try:
                model_config.validate(config)
            except ValueError as error:
                raise status.invalid_argument(str(error)) from None
            self._check_new_base_paths(config)
            labels = self._checked_labels(config)
            # Labels move before any version is unloaded (as ServerCore::ReloadConfig orders
            # it), so a label never names a version that is already gone; the config in force
            # changes with them.
            with self._lock:
                self._labels = labels
                self._config = config
            self._apply(config)

    def servable(self, model_spec: model_pb2.ModelSpec) -> SavedModelServable:
        """The loaded version a ModelSpec names: by number, by label, or else the newest.

        Raises:
            status.ServingError: INVALID_ARGUMENT without a name or for an unknown label,
                NOT_FOUND for an unknown model or a version that is not loaded.
        """
        if not model_spec.name:
            raise status.invalid_argument("ModelSpec has no name specified.")
        version = self.requested_version(model_spec)
        with self._lock:
            manager = self._managers.get(model_spec.name)
        if manager is None:
            raise servable_not_found(model_spec.name, version)
        try:
            return manager.servable(version)
        except status.ServingError:
            # A reload may have moved the label and unloaded its old version between the two
            # look-ups: the label's new version answers, as it would have a moment later.
            moved = self.requested_version(model_spec)
            if moved == version:
                raise
            return manager.servable(moved)

    def requested_version(self, model_spec: model_pb2.ModelSpec) -> int | None:
        """The version number a ModelSpec pins, a label resolved; None asks for the newest.

        Raises:
            status.ServingError: INVALID_ARGUMENT for a label the config does not define.
        """
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version":
            return model_spec.version.value
        if choice != "version_label":
            return None
        with self._lock:
            version = self._labels.get(model_spec.name, {}).get(model_spec.version_label)
        if version is None:
            raise status.invalid_argument(
                f"Unrecognized servable version label: {model_spec.version_label}"
            )
        return version

    def version_states(self, model_name: str, version: int | None = None) -> list[VersionState]:
        """States of every version of a model (newest first), or of one version.

        Raises:
            status.ServingError: NOT_FOUND, with TF Serving's GetModelStatus messages.
        """
        with self._lock:
            manager = self._managers.get(model_name)
        if manager is None:
            raise versions_not_found(model_name, version)
        return manager.version_states(version)

    def is_available(self) -> bool:
        """Whether every configured model has a version answering."""
        with self._lock:
            managers = list(self._managers.values())
        return bool(managers) and all(manager.is_available() for manager in managers)

    def start_polling(self, file_system_poll_wait_seconds: float) -> None:
        """Polls each model's base path for new versions, now and for models added later."""
        self._poll_wait_seconds = file_system_poll_wait_seconds
        with self._lock:
            managers = list(self._managers.values())
        for manager in managers:
            manager.start_polling(file_system_poll_wait_seconds)

    def start_config_polling(self, path: str, poll_wait_seconds: float) -> None:
        """Re-reads the config file every `poll_wait_seconds` and applies it when it changed.

        TF Serving's `--model_config_file_poll_wait_seconds`: how a Kubernetes ConfigMap
        update moves a label without a restart.
        """
        self._config_poller = threading.Thread(
            target=self._poll_config,
            args=(path, poll_wait_seconds),
            name="config-poller",
            daemon=True,
        )
        self._config_poller.start()

    def close(self) -> None:
        """Stops polling and unloads every model."""
        self._stop.set()
        if self._config_poller is not None:
            self._config_poller.join()
        with self._config_lock, self._lock:
            managers, self._managers = list(self._managers.values()), {}
        for manager in managers:
            manager.close()

    def _check_new_base_paths(self, config: model_config.ModelServerConfig) -> None:
        # TF Serving waits forever for a new model whose base path does not exist (and queues
        # every later reload behind it): refuse the config instead.
        for model in config.model_config_list.config:
            with self._lock:
                known = model.name in self._managers
            if not known and not tf.io.gfile.isdir(model.base_path):
                raise status.invalid_argument(
                    f"model {model.name}: base_path {model.base_path} is not a directory: "
                    "point it at JOB_DIR/export/objrec"
                )

    def _checked_labels(self, config: model_config.ModelServerConfig) -> LabelMap:
        labels: LabelMap = {}
        for model in config.model_config_list.config:
            with self._lock:
                manager = self._managers.get(model.name)
                current = dict(self._labels.get(model.name, {}))
            available = manager.available_versions() if manager else set()
            for label, version in sorted(model.version_labels.items()):
                if not self._may_assign(version, available, current.get(label)):
                    raise status.ServingError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model "
                        f"{model.name}, which is not currently available for inference",
                    )
                labels.setdefault(model.name, {})[label] = version
        return labels

    def _may_assign(self, version: int, available: set[int], current: int | None) -> bool:
        # TF Serving's rule: a label names an AVAILABLE version; with the flag, a new label
        # may name any version, but an existing label never moves to one not yet available,
        # so a label in use always answers.
        if version in available:
            return True
        return self._allow_unavailable_labels and current in (None, version)

    def _apply(self, config: model_config.ModelServerConfig) -> None:
        wanted = {model.name: model for model in config.model_config_list.config}
        with self._lock:
            removed = [self._managers.pop(name) for name in set(self._managers) - set(wanted)]
        for manager in removed:
            logging.info("Unloading model %s: no longer in the config", manager.model_name)
            manager.unload_all()
        for name, model in wanted.items():
            with self._lock:
                manager = self._managers.get(name)
            if manager is None:
                self._add(model)
            else:
                manager.reconfigure(model.base_path, model.model_version_policy)
                manager.refresh()
        self._notify()

    def _add(self, model: model_config.ModelConfig) -> None:
        logging.info("Adding model %s from %s", model.name, model.base_path)
        manager = ModelManager(
            model.name,
            model.base_path,
            version_policy=model.model_version_policy,
            enable_model_warmup=self._enable_model_warmup,
            servable_options=self._servable_options,
            on_availability_change=self._notify,
        )
        manager.refresh()
        with self._lock:
            self._managers[model.name] = manager
        if self._poll_wait_seconds > 0:
            manager.start_polling(self._poll_wait_seconds)

    def _poll_config(self, path: str, poll_wait_seconds: float) -> None:
        while not self._stop.wait(poll_wait_seconds):
            try:
                config = model_config.read_model_server_config(path)
                if config != self._config:
                    logging.info("Config file %s changed: reloading", path)
                    self.reload_config(config)
            except (ValueError, status.ServingError, OSError) as error:
                # As TF Serving: a bad edit is logged and the config in force keeps serving.
                logging.error("Reloading the config file %s failed: %s", path, error)

    def _notify(self) -> None:
        if self._on_availability_change is not None:
            self._on_availability_change()
