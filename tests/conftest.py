"""Shared test set-up: two logical CPU devices, and one tiny trained job per session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# MirroredStrategy tests need two devices; logical devices must exist before TF initialises.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

from tests import dataset_fixtures  # noqa: E402

TINY_TRAINING_FLAGS = (
    "--weights",
    "none",
    "--input_size",
    "32",
    "--batch_size",
    "8",
    "--head_epochs",
    "1",
    "--fine_tune_epochs",
    "1",
    "--fine_tune_from",
    "conv5_block3",
    "--seed",
    "1",
    "--strategy",
    "one_device",
)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """A 3-class dataset of 32x32 JPEG records: 48 train, 12 validation, 12 test."""
    data_dir = str(tmp_path_factory.mktemp("dataset"))
    return dataset_fixtures.write_dataset(data_dir, {"train": 48, "validation": 12, "test": 12})


@pytest.fixture(scope="session")
def trained_job(tiny_dataset, tmp_path_factory) -> dict:
    """The tiny model trained once per session: its job dir, summary and config."""
    from trainer import config as config_lib
    from trainer import train

    job_dir = str(tmp_path_factory.mktemp("job"))
    config = config_lib.parse_flags(
        ["--data_dir", tiny_dataset, "--job_dir", job_dir, *TINY_TRAINING_FLAGS]
    )
    summary = train.train_and_evaluate(config)
    return {"job_dir": job_dir, "summary": summary, "config": config}
