"""Shared test set-up: two logical CPU devices, and one tiny trained job per session."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.task import prefer_onednn_kernels  # noqa: E402

# The kernels objrec-train runs with, here for the in-process training tests.
prefer_onednn_kernels()

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# MirroredStrategy tests need two devices; logical devices must exist before TF initialises.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

from objrec import testing  # noqa: E402
from objrec.testing import TINY_TRAINING_FLAGS  # noqa: E402
from tests import dataset_fixtures, serving_fixtures  # noqa: E402


@pytest.fixture(autouse=True)
def float32_policy_after_each_test():
    """Training sets Keras's global precision policy (bfloat16 on CPUs that compute it); a test
    that stops mid-job (SIGTERM, a refused setup) must not leave it to the next test."""
    yield
    import keras

    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """A 3-class dataset of 32x32 JPEG records: 48 train, 12 validation, 12 test."""
    data_dir = str(tmp_path_factory.mktemp("dataset"))
    return dataset_fixtures.write_dataset(data_dir, {"train": 48, "validation": 12, "test": 12})


@pytest.fixture(scope="session")
def trained_job(tiny_dataset, tmp_path_factory) -> dict:
    """The tiny model trained once per session: its job dir, summary and config."""
    from trainer import flags as train_flags
    from trainer import job

    job_dir = str(tmp_path_factory.mktemp("job"))
    config = train_flags.parse_flags(
        ["--data_dir", tiny_dataset, "--job_dir", job_dir, *TINY_TRAINING_FLAGS]
    )
    summary = job.train_and_evaluate(config)
    return {"job_dir": job_dir, "summary": summary, "config": config}


@pytest.fixture
def gcs_bucket(monkeypatch):
    """A bucket in gcp-storage-emulator on 127.0.0.1, reached by Beam's FileSystems as gs://."""
    from apache_beam.internal.gcp import auth
    from gcp_storage_emulator.server import create_server
    from google.cloud import storage

    port = testing.free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="objrec-test")
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    # Beam looks for Google credentials (4 retries, ~20 s, and the GCE metadata server) before
    # it connects anonymously; the emulator needs none, so start out anonymous.
    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)
    try:
        yield storage.Client.create_anonymous_client().bucket("objrec-test")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def toy_version(tmp_path_factory) -> pathlib.Path:
    """serving_fixtures' toy model (3 classes), exported once per session."""
    return serving_fixtures.shared_toy_export(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="session")
def other_toy_version(tmp_path_factory) -> pathlib.Path:
    """A second toy model, 6 other classes: a version that answers differently."""
    return serving_fixtures.shared_toy_export(
        tmp_path_factory.mktemp("exports"), labels=serving_fixtures.OTHER_LABELS, seed=1
    )
