"""The README's "Using it on your own images" commands, run as a user runs them.

Three changes, each because this machine differs from a user's, not the commands: the training
step gets tiny flags (the ImageNet weights cannot be downloaded here, and a test trains for
seconds), ports 8500/8501 become free ones, and TensorBoard, which serves until stopped, is
asked for its page and stopped.
"""

import re
import subprocess

import pytest

from objrec import testing
from preprocessing import sample_data
from tests import REPO, serving_fixtures

TINY_TRAINING = ("--weights none --input_size 32 --batch_size 16 --head_epochs 0 "
                 "--fine_tune_epochs 1 --strategy one_device")  # fmt: skip


def readme_block(heading: str) -> str:
    """The first ```bash block after `heading` in README.md."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def as_run_here(block: str, grpc_port: int, rest_port: int, board_port: int) -> str:
    script = block.replace("source .venv/bin/activate", f"source {REPO}/.venv/bin/activate")
    script = script.replace("8500", str(grpc_port)).replace("8501", str(rest_port))
    script = re.sub(r"^(objrec-train .*)$", rf"\1 {TINY_TRAINING}", script, flags=re.M)
    board = f"localhost:{board_port}"
    asked = (
        f"tensorboard --logdir work/job/logs --port {board_port} &\n"
        f"for _ in $(seq 120); do curl -sf {board} >/dev/null && break; sleep 1; done\n"
        f"curl -sf {board} -o board.html\ngrep -q TensorBoard board.html\n"
    )
    script = script.replace("tensorboard --logdir work/job/logs\n", asked)
    return "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_readme_commands_run_as_written(tmp_path):
    sample_data.write_sample_folder(str(tmp_path / "photos"), per_class=6)
    sample_data.write_sample_folder(str(tmp_path / "some" / "labelled"), 2, source="test")
    (tmp_path / "some" / "photos").mkdir(parents=True)
    bag = next((tmp_path / "photos" / "Bag").iterdir())
    (tmp_path / "some" / "photos" / "cat.jpg").write_bytes(bag.read_bytes())  # a PNG named .jpg
    ports = [testing.free_port() for _ in range(3)]
    script = as_run_here(readme_block("## Using it on your own images"), *ports)
    assert script.count(TINY_TRAINING) == 1 and "board.html" in script
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "cat.jpg" in result.stdout  # objrec-predict's row
    assert "accuracy" in result.stdout  # the --evaluate report
    assert '"predictions"' in result.stdout  # the REST answer
    assert (tmp_path / "work" / "served-report.html").is_file()
    assert "Wrote work/predicted: 1 predictions of 1 inputs" in result.stdout  # batch prediction
    assert (tmp_path / "work" / "job" / "eval" / "report.html").is_file()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_local_server_commands_run_as_written(tmp_path, toy_version):
    """The README's objrec-serve with the manifests' config files, from the repository root:
    batching on, and the Prometheus page counts the prediction it served."""
    serving_fixtures.copy_version(toy_version, tmp_path / "work" / "job" / "export" / "objrec", 1)
    (tmp_path / "k8s").symlink_to(REPO / "k8s")
    photos = tmp_path / "some" / "photos"
    photos.mkdir(parents=True)
    (photos / "cat.png").write_bytes(serving_fixtures.sample_images()[0])
    block = readme_block("## The local model server")
    script = as_run_here("source .venv/bin/activate\n" + block, *free_ports())
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "cat.png" in result.stdout
    assert ':tensorflow:serving:request_count{model_name="objrec",status="OK"} 1' in result.stdout


def free_ports() -> list[int]:
    return [testing.free_port() for _ in range(3)]
