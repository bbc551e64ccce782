"""trainer.task: the environment objrec-train sets before TensorFlow loads."""

import os

from trainer import task


def test_training_takes_onednn_kernels_unless_the_user_says_otherwise(monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    task.prefer_onednn_kernels()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    task.prefer_onednn_kernels()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
