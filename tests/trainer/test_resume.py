"""A killed training job resumes where it stopped when the same command is rerun."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import REPO

FLAGS = (
    "--weights",
    "none",
    "--input_size",
    "32",
    "--batch_size",
    "4",
    "--head_epochs",
    "2",
    "--fine_tune_epochs",
    "2",
    "--fine_tune_from",
    "conv5_block3",
    "--strategy",
    "one_device",
    "--early_stopping_patience",
    "0",
    "--checkpoint_every_steps",
    "3",
)


def _start(data_dir: str, job_dir: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainer.task",
            "--data_dir",
            data_dir,
            "--job_dir",
            job_dir,
            *FLAGS,
        ],
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_backup(job_dir: str, process: subprocess.Popen, minimum_step: int):
    """Waits until a periodic backup at or past `minimum_step` exists."""
    deadline = time.monotonic() + 240
    backup = os.path.join(job_dir, "backup")
    while time.monotonic() < deadline:
        steps = [
            int(n.split("-")[1].split(".")[0])
            for n in (os.listdir(backup) if os.path.isdir(backup) else [])
            if n.endswith(".index")
        ]
        if steps and max(steps) >= minimum_step:
            return
        assert process.poll() is None, process.communicate()[0][-3000:]
        time.sleep(0.2)
    raise AssertionError("no backup appeared")


def _history(job_dir: str) -> list:
    with open(os.path.join(job_dir, "eval", "history.json")) as file:
        return [(e["phase"], e["epoch"]) for e in json.load(file)]


EXPECTED_EPOCHS = [("head", 0), ("head", 1), ("fine_tune", 0), ("fine_tune", 1)]


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize(("kill_signal", "after_step"), [(signal.SIGKILL, 5), (signal.SIGTERM, 14)])
def test_killed_job_resumes_with_the_same_epochs(tiny_dataset, tmp_path, kill_signal, after_step):
    # 48 train images / 4 per step = 12 steps per epoch: step 5 is mid-epoch in the head
    # phase; step 14 is in the head phase's second epoch.
    job_dir = str(tmp_path / "job")
    process = _start(tiny_dataset, job_dir)
    _wait_for_backup(job_dir, process, after_step)
    process.send_signal(kill_signal)
    output = process.communicate(timeout=120)[0]
    if kill_signal == signal.SIGTERM:
        assert process.returncode == 42, output[-3000:]
        assert "preemption checkpoint saved" in output
    else:
        assert process.returncode == -signal.SIGKILL
    rerun = _start(tiny_dataset, job_dir)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output[-3000:]
    assert "resumed from" in output
    assert _history(job_dir) == EXPECTED_EPOCHS
    assert os.listdir(os.path.join(job_dir, "export", "objrec")) == ["1"]
