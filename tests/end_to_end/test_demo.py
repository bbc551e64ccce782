"""scripts/demo.sh, the README's first command, at its smallest: it completes, prints the
served accuracy, exits 0, and shows none of TensorFlow's or Beam's start-up noise."""

import os
import re
import subprocess

import pytest

from objrec import testing
from tests import REPO

NOISE = re.compile(
    r"^([IWE]\d{4} |WARNING: All log messages before absl|INFO:apache_beam|Traceback)", re.M
)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_demo_completes_and_prints_the_served_accuracy(tmp_path):
    environment = dict(os.environ, DEMO_DIR=str(tmp_path / "demo"), PER_CLASS="12", EPOCHS="1",
                       PORT=str(testing.free_port()))  # fmt: skip
    result = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=environment,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    shown = result.stdout + result.stderr
    assert result.returncode == 0, shown[-3000:]
    assert re.search(r"heldout: accuracy \d\.\d{4} on 1000 images", shown)
    assert "== done" in shown
    assert NOISE.findall(shown) == []
    assert (tmp_path / "demo" / "job" / "eval" / "report.html").is_file()
