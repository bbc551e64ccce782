"""eval/report.html: self-contained, with the trainer's own pictures, rendered by a real
headless browser."""

import io
import json
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from objrec import contract, html_report
from tests.html_pages import decoded, parse


@pytest.fixture(scope="module")
def report(trained_job) -> pathlib.Path:
    return pathlib.Path(trained_job["job_dir"]) / contract.EVAL_DIR / contract.REPORT_FILE


def test_the_report_has_every_section_and_no_external_file(report):
    parts = parse(report)
    assert parts.external == []
    for heading in ("objrec training report", "Dataset", "Samples per class", "Training curves",
                    "Per class", "Confusion matrix", "Most confused", "Top losses"):  # fmt: skip
        assert heading in parts.headings


def test_the_report_embeds_the_pictures_the_trainer_drew(report):
    images = dict((alt, decoded(src)) for src, alt in parse(report).images)
    eval_dir = report.parent
    for name in (contract.TRAINING_CURVES_PICTURE, contract.CONFUSION_MATRIX_PICTURE):
        assert images[name] == (eval_dir / name).read_bytes()


def test_the_report_figures_are_those_of_metrics_json(report):
    metrics = json.loads((report.parent / contract.METRICS_FILE).read_text())
    cells = parse(report).cells
    for label in metrics[contract.METRIC_LABELS]:
        precision = metrics[contract.METRIC_PER_CLASS][label][contract.METRIC_PRECISION]
        assert f"{precision:.3f}" in cells
    assert (
        f"{metrics[contract.METRIC_ACCURACY]:.4f} on {metrics[contract.METRIC_NUM_EXAMPLES]} images"
        in " ".join(cells)
    )  # noqa: E501


def test_the_top_losses_are_the_most_confidently_wrong_images(report, trained_job):
    parts = parse(report)
    captions = [alt for _, alt in parts.images if "→" in alt]
    assert 0 < len(captions) <= 12
    p_true = [float(caption.rsplit("p(true) ", 1)[1]) for caption in captions]
    assert p_true == sorted(p_true)  # highest loss first: lowest probability of the truth


def test_most_confused_pairs_are_the_largest_off_diagonal_cells():
    labels = ["cat", "dog", "fox"]
    matrix = [[5, 3, 0], [1, 4, 7], [0, 0, 2]]
    assert html_report.most_confused(labels, matrix) == [
        ("dog", "fox", 7),
        ("cat", "dog", 3),
        ("dog", "cat", 1),
    ]


@pytest.mark.slow
def test_a_headless_browser_renders_the_report(report, tmp_path):
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail("chromium is not installed: run scripts/setup_env.sh")
    screenshot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--screenshot={screenshot}", "--window-size=1200,2400"]  # fmt: skip
    command = [browser, *flags, report.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    pixels = np.asarray(Image.open(io.BytesIO(screenshot.read_bytes())).convert("L"))
    assert pixels.shape == (2400, 1200)
    # Text, tables and the embedded pictures: far more than a blank or an error page.
    assert (pixels < 128).mean() > 0.01 and len(np.unique(pixels)) > 64
