"""The load test script, scaled down: concurrent clients ride out a server restart, no errors."""

import os
import pathlib
import subprocess
import sys

import pytest

from objrec import contract
from tests import REPO


@pytest.mark.slow
@pytest.mark.multiprocess
def test_load_test_carries_every_request_through_a_restart(trained_job):
    model_base_path = pathlib.Path(trained_job["job_dir"]) / contract.EXPORT_DIR / "objrec"
    command = [
        sys.executable, str(REPO / "benchmarks" / "load_test.py"),
        "--model_base_path", str(model_base_path),
        "--clients", "4", "--requests", "60", "--restarts", "1", "--max_seconds", "120",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert "requests: 60 ok, 0 failed" in result.stdout
    assert "restart 1: SIGTERM after 30 requests, exit code 0" in result.stdout
    assert "latency (all): 60 requests, p50" in result.stdout
