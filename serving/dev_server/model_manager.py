"""Which versions of a model are loaded, following TF Serving's file-system source and policy.

Like TF Serving's file-system source for one model: every integer-named directory under the base
path is a version; the model's version policy picks the aspired ones (TF Serving's default is
`latest {num_versions: 1}`, see model_config.py); the base path is polled for new versions; an
old version is unloaded only once an aspired one is available (TF Serving's
AvailabilityPreservingPolicy), so a broken new export never takes a serving model down. As in
TF Serving, there is no fallback to an older version at startup, and a version that failed to
load is not retried until a restart."""

import dataclasses
import logging
import threading
from collections.abc import Callable

import tensorflow as tf

from objrec.savedmodel import versions, warmup
from serving.dev_server import model_config, status
from serving.dev_server.servable import SavedModelServable, ServableOptions

# ModelVersionStatus.State names (tensorflow_serving/apis/get_model_status.proto).
LOADING, AVAILABLE, END = "LOADING", "AVAILABLE", "END"


@dataclasses.dataclass(frozen=True)
class VersionState:
    """Where one version is in its life: LOADING, AVAILABLE or END (unloaded or failed)."""

    version: int
    state: str
    error_message: str = ""


def servable_not_found(model_name: str, version: int | None = None) -> status.ServingError:
    """NOT_FOUND for Predict or metadata, worded as TF Serving's manager words it."""
    request = f"Latest({model_name})" if version is None else f"Specific({model_name}, {version})"
    return status.not_found(f"Servable not found for request: {request}")


def versions_not_found(model_name: str, version: int | None = None) -> status.ServingError:
    """NOT_FOUND for GetModelStatus, worded as TF Serving's GetModelStatusImpl words it."""
    if version is None:
        return status.not_found(f"Could not find any versions of model {model_name}")
    return status.not_found(f"Could not find version {version} of model {model_name}")


class ModelManager:
    """Loads, serves and unloads the versions of one model under its base path.

    Args:
        model_name: the name requests use.
        model_base_path: directory (local or gs://) of integer version directories.
        version_policy: which versions to keep loaded; None is TF Serving's default, the newest.
        enable_model_warmup: replay each version's warmup records before serving it.
        servable_options: how every version runs (session options, batching, metrics).
        on_availability_change: called after a version is loaded or unloaded.
    """

    def __init__(
        self,
        model_name: str,
        model_base_path: str,
        version_policy: model_config.VersionPolicy | None = None,
        enable_model_warmup: bool = True,
        servable_options: ServableOptions | None = None,
        on_availability_change: Callable[[], None] | None = None,
    ):
        self.model_name = model_name
        self.model_base_path = model_base_path
        self._version_policy = (
            model_config.VersionPolicy() if version_policy is None else version_policy
        )
        self._enable_model_warmup = enable_model_warmup
        self._servable_options = servable_options
        self._on_availability_change = on_availability_change
        self._lock = threading.Lock()  # guards _servables and _states
        self._refresh_lock = threading.Lock()  # one refresh at a time
        self._servables: dict[int, SavedModelServable] = {}
        self._states: dict[int, VersionState] = {}
        self._stop_polling = threading.Event()
        self._poller: threading.Thread | None = None

    def refresh(self) -> None:
        """Loads newly aspired versions, then unloads the ones no longer aspired."""
        with self._refresh_lock:
            on_disk = versions.list_versions(self.model_base_path)
            aspired = model_config.aspired_versions(on_disk, self._version_policy)
            for version in aspired:
                if version not in self._servables and not self._failed(version):
                    self._load(version)
            if any(version in self._servables for version in aspired):
                for version in set(self._servables) - set(aspired):
                    # Requests still running hold their own reference to the servable: its
                    # session closes when the last of them lets go (Session.__del__), not
                    # under them.
                    self._unload(version)
            if not aspired:
                logging.warning(
                    "No versions of servable %s found under base path %s",
                    self.model_name,
                    self.model_base_path,
                )

    def start_polling(self, poll_wait_seconds: float) -> None:
        """Calls `refresh` every `poll_wait_seconds` on a daemon thread until `close`."""
        self._poller = threading.Thread(
            target=self._poll, args=(poll_wait_seconds,), name="version-poller", daemon=True
        )
        self._poller.start()

    def reconfigure(self, model_base_path: str, version_policy: model_config.VersionPolicy) -> None:
        """Takes a reloaded config's base path and policy; the next refresh applies them."""
        with self._refresh_lock:
            self.model_base_path = model_base_path
            self._version_policy = version_policy

    def servable(self, version: int | None = None) -> SavedModelServable:
        """The loaded `version`, or the newest loaded one when None.

        Raises:
            status.ServingError: NOT_FOUND for a version that is not loaded (TF Serving's
                message).
        """
        with self._lock:
            chosen = max(self._servables, default=None) if version is None else version
            if chosen in self._servables:
                return self._servables[chosen]
        raise servable_not_found(self.model_name, version)

    def version_states(self, version: int | None = None) -> list[VersionState]:
        """States of every version seen (newest first), or of one version.

        Raises:
            status.ServingError: NOT_FOUND, with TF Serving's GetModelStatus messages.
        """
        with self._lock:
            states = dict(self._states)
        if version is not None:
            if version not in states:
                raise versions_not_found(self.model_name, version)
            return [states[version]]
        if not states:
            raise versions_not_found(self.model_name)
        return [states[v] for v in sorted(states, reverse=True)]

    def available_versions(self) -> set[int]:
        """The versions in state AVAILABLE: the only ones a version label may name."""
        with self._lock:
            return set(self._servables)

    def is_available(self) -> bool:
        """Whether at least one version is loaded and answering."""
        with self._lock:
            return bool(self._servables)

    def unload_all(self) -> list[SavedModelServable]:
        """Stops polling and unloads every version (a model leaving the config).

        Requests still running keep their servable until they finish, as after any unload.
        """
        self._stop_polling.set()
        if self._poller is not None:
            self._poller.join()
        with self._refresh_lock:
            return [self._unload(version) for version in list(self._servables)]

    def close(self) -> None:
        """Unloads every version and closes its session at once (server shutdown)."""
        for servable in self.unload_all():
            servable.close()

    def _poll(self, poll_wait_seconds: float) -> None:
        while not self._stop_polling.wait(poll_wait_seconds):
            try:
                self.refresh()
            except (OSError, tf.errors.OpError) as error:
                # A base path that is briefly unreadable (network file system) must not kill
                # the poller: keep serving what is loaded and look again next time.
                logging.warning("Polling %s failed: %s", self.model_base_path, error)

    def _load(self, version: int) -> None:
        export_dir = tf.io.gfile.join(self.model_base_path, str(version))
        logging.info("Loading servable: {name: %s version: %d}", self.model_name, version)
        self._set_state(VersionState(version, LOADING))
        try:
            servable = SavedModelServable(
                self.model_name, version, export_dir, self._servable_options
            )
            if self._enable_model_warmup:
                run_warmup(servable)
        except Exception as error:
            # Whatever breaks a load (a corrupt export, a failing warmup request), TF Serving
            # marks the version END with the error and keeps serving what it had; the version
            # is not retried until the server restarts.
            logging.error(
                "Loading servable %s version %d failed: %s", self.model_name, version, error
            )
            self._set_state(VersionState(version, END, str(error)))
            return
        with self._lock:
            self._servables[version] = servable
            self._states[version] = VersionState(version, AVAILABLE)
        logging.info(
            "Successfully loaded servable version {name: %s version: %d}", self.model_name, version
        )
        self._notify()

    def _unload(self, version: int) -> SavedModelServable:
        with self._lock:
            servable = self._servables.pop(version)
            self._states[version] = VersionState(version, END)
        logging.info("Unloaded servable version {name: %s version: %d}", self.model_name, version)
        self._notify()
        return servable

    def _failed(self, version: int) -> bool:
        with self._lock:
            state = self._states.get(version)
        return state is not None and bool(state.error_message)

    def _set_state(self, state: VersionState) -> None:
        with self._lock:
            self._states[state.version] = state

    def _notify(self) -> None:
        if self._on_availability_change is not None:
            self._on_availability_change()


def run_warmup(servable: SavedModelServable) -> int:
    """Replays the version's warmup PredictionLogs; returns how many ran.

    Raises:
        ValueError: a record is not a Predict log, or there are too many.
        status.ServingError: a warmup request fails, which fails the load as in TF Serving.
    """
    count = 0
    for log in warmup.read_warmup_file(servable.export_dir):
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"Unsupported log_type for warmup: {log.WhichOneof('log_type')}")
        servable.predict(log.predict_log.request)
        count += 1
    if count:
        logging.info(
            "Finished reading warmup data for model at %s. Number of warmup records read: %d.",
            servable.export_dir,
            count,
        )
    return count
