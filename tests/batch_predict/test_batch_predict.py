"""objrec-batch-predict: every input one output line, predictions equal to the served graph's."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from batch_predict import config as config_lib
from batch_predict import model_handler
from batch_predict import pipeline as job
from objrec import contract
from preprocessing.errors import PreprocessError
from serving.client import evaluation, library
from tests import REPO, serving_fixtures
from tests.preprocessing.test_dataflow import dataflow_flags, no_network  # noqa: F401
from tests.serving_fixtures import LABELS, encode_jpeg, encode_png, random_pixels, serving_toy


def read_rows(output: pathlib.Path) -> list[dict]:
    lines = []
    for path in sorted(output.glob(f"{job.PREDICTIONS_PREFIX}-*-of-*.jsonl")):
        lines.extend(path.read_text().splitlines())
    return [json.loads(line) for line in lines]


def write_good_images(folder: pathlib.Path, count: int) -> list[pathlib.Path]:
    paths = []
    for index in range(count):
        path = folder / ("nested" if index % 2 else "") / f"good-{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        encode = encode_png if index % 3 else encode_jpeg
        path.write_bytes(encode(random_pixels(index, 10 + index, 14)))
        paths.append(path)
    return paths


def served_top1(version_dir: pathlib.Path, paths) -> dict[str, str]:
    """The SavedModel's own serving_default answer, called directly, one image at a time."""
    serve = tf.saved_model.load(str(version_dir)).signatures[contract.SERVING_SIGNATURE]
    top1 = {}
    for path in paths:
        outputs = serve(image_bytes=tf.constant([pathlib.Path(path).read_bytes()]))
        top1[str(path)] = outputs[contract.OUTPUT_TOP_K_CLASSES][0, 0].numpy().decode()
    return top1


def run_job(*argv: str) -> dict:
    return job.run(list(argv), save_main_session=False)


@pytest.fixture
def model_dir(toy_version, tmp_path) -> pathlib.Path:
    """JOB_DIR/export/objrec with the toy export as version 3."""
    base = tmp_path / "job" / "export" / contract.DEFAULT_MODEL_NAME
    serving_fixtures.copy_version(toy_version, base, 3)
    return base


@pytest.mark.slow
def test_every_file_is_one_line_and_predictions_equal_the_served_graph(model_dir, tmp_path):
    photos = tmp_path / "photos"
    good = write_good_images(photos, 7)
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + b"garbage" * 20)
    (photos / "empty.png").write_bytes(b"")
    (photos / "truncated.png").write_bytes(good[1].read_bytes()[:40])
    (photos / "huge.png").write_bytes(b"x" * 5000)  # over --max_file_bytes below
    os.mkfifo(photos / "fifo.jpg")  # never opened: the job must not block
    (photos / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    output = tmp_path / "predicted"

    summary = run_job("--model_dir", str(model_dir), "--input", str(photos), "--output",
                      str(output), "--top_k", "2", "--batch_size", "3",
                      "--max_file_bytes", "4000")  # fmt: skip

    rows = {row[job.URI]: row for row in read_rows(output)}
    listed = [str(path) for path in sorted(photos.rglob("*")) if not path.is_dir()]
    assert sorted(rows) == listed, "every listed path is exactly one line"
    assert len(read_rows(output)) == len(listed)
    expected = served_top1(model_dir / "3", good)
    for path in good:
        row = rows[str(path)]
        assert row[job.VALID] is True and len(row[job.TOP_K_CLASSES]) == 2
        assert row[job.TOP_K_CLASSES][0] == expected[str(path)]
        assert row[job.TOP_K_SCORES] == sorted(row[job.TOP_K_SCORES], reverse=True)
        assert set(row[job.TOP_K_CLASSES]) <= set(LABELS)
    reasons = {
        "corrupt.jpg": job.NOT_DECODABLE,
        "truncated.png": job.NOT_DECODABLE,
        "empty.png": "empty_file",
        "huge.png": "file_too_large",
        "fifo.jpg": "not_a_regular_file",
        "dangling.jpg": "broken_link",
    }
    for name, reason in reasons.items():
        row = rows[str(photos / name)]
        assert row[job.VALID] is False and row[job.REASON] == reason and row[job.ERROR]
        assert job.TOP_K_CLASSES not in row
    assert summary == json.loads((output / job.SUMMARY_FILE).read_text())
    assert summary["num_inputs"] == len(listed)
    assert summary["num_valid"] == len(good)
    assert summary["invalid_reasons"] == {
        "broken_link": 1, "empty_file": 1, "file_too_large": 1, "not_a_regular_file": 1,
        job.NOT_DECODABLE: 2,
    }  # fmt: skip
    assert sum(summary["predictions_per_class"].values()) == len(good)
    assert "metrics" not in summary  # no labels in a folder
    assert "Batch prediction" in (output / job.REPORT_FILE).read_text()


@pytest.mark.slow
def test_a_labelled_manifest_scores_as_objrec_predict_evaluate(toy_version, model_dir, tmp_path):
    folder = tmp_path / "heldout"
    rows = ["uri,label"]
    rng = np.random.default_rng(3)
    for label in LABELS:
        for index in range(4):
            path = folder / label / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_png(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)))
            rows.append(f"heldout/{label}/{index}.png,{label}")
    (folder / LABELS[0] / "broken.png").write_bytes(b"not an image")
    rows.append(f"heldout/{LABELS[0]}/broken.png,{LABELS[0]}")
    manifest = tmp_path / "heldout.csv"
    manifest.write_text("\n".join(rows) + "\n")

    summary = run_job("--model_dir", str(model_dir / "3"), "--input", str(manifest),
                      "--output", str(tmp_path / "out"))  # fmt: skip

    with (
        serving_toy(toy_version, tmp_path / "served") as server,
        library.PredictionClient(f"127.0.0.1:{server.port}") as client,
    ):
        evaluated = json.loads(evaluation.evaluate_folder(client, str(folder), as_json=True))
    assert summary["num_labelled"] == summary["num_inputs"] == len(rows) - 1
    assert summary["metrics"] == evaluated
    labelled = {row[job.URI]: row[job.LABEL] for row in read_rows(tmp_path / "out")}
    assert labelled[str(folder / LABELS[1] / "2.png")] == LABELS[1]


@pytest.mark.slow
def test_a_manifest_without_labels_predicts_without_scores(model_dir, tmp_path):
    good = write_good_images(tmp_path / "photos", 2)
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("".join(json.dumps({"uri": str(path)}) + "\n" for path in good))

    summary = run_job("--model_dir", str(model_dir), "--input", str(manifest),
                      "--output", str(tmp_path / "out"))  # fmt: skip

    assert summary["num_inputs"] == summary["num_valid"] == 2
    assert summary["num_labelled"] == 0 and "metrics" not in summary
    assert all(job.LABEL not in row for row in read_rows(tmp_path / "out"))


@pytest.mark.slow
def test_gcs_input_and_output(gcs_bucket, model_dir, tmp_path):  # noqa: F811
    good = write_good_images(tmp_path / "local", 3)
    for path in good:
        gcs_bucket.blob(f"incoming/{path.relative_to(tmp_path / 'local').as_posix()}") \
            .upload_from_filename(str(path))  # fmt: skip
    gcs_bucket.blob("incoming/bad.jpg").upload_from_string(b"not an image")

    summary = run_job("--model_dir", str(model_dir), "--input", "gs://objrec-test/incoming",
                      "--output", "gs://objrec-test/predicted")  # fmt: skip

    assert summary["num_inputs"] == 4 and summary["num_valid"] == 3
    names = {blob.name for blob in gcs_bucket.list_blobs(prefix="predicted/")}
    assert f"predicted/{job.SUMMARY_FILE}" in names
    [shard] = [name for name in names if name.startswith(f"predicted/{job.PREDICTIONS_PREFIX}")]
    lines = gcs_bucket.blob(shard).download_as_text().splitlines()
    uris = sorted(json.loads(line)[job.URI] for line in lines)
    assert uris == sorted(
        ["gs://objrec-test/incoming/bad.jpg"]
        + [
            f"gs://objrec-test/incoming/{p.relative_to(tmp_path / 'local').as_posix()}"
            for p in good
        ]  # fmt: skip
    )


@pytest.mark.slow
def test_dataflow_job_builds_offline(gcs_bucket, no_network, model_dir, capsys):  # noqa: F811
    gcs_bucket.blob("model/3/saved_model.pb").upload_from_filename(
        str(model_dir / "3" / "saved_model.pb")
    )
    gcs_bucket.blob("incoming/a.png").upload_from_string(encode_png(random_pixels(1)))
    argv = ["--model_dir", "gs://objrec-test/model", "--input", "gs://objrec-test/incoming",
            "--output", "gs://objrec-test/predicted"]  # fmt: skip

    assert run_job(*argv, *dataflow_flags("gs://objrec-test/tmp")) is None
    assert "Dry run: built the batch prediction job" in capsys.readouterr().out
    assert not list(gcs_bucket.list_blobs(prefix="predicted/"))


def test_dataflow_refuses_local_paths(model_dir, tmp_path):
    with pytest.raises(PreprocessError, match="--input .* is a local path"):
        run_job("--model_dir", "gs://b/m", "--input", str(tmp_path), "--output", "gs://b/o",
                "--runner", "DataflowRunner")  # fmt: skip


def test_model_dir_without_a_version_is_one_clear_error(tmp_path):
    (tmp_path / "export" / "objrec" / "1").mkdir(parents=True)  # no saved_model.pb yet
    for empty in (tmp_path / "export" / "objrec", tmp_path / "nope"):
        with pytest.raises(model_handler.ModelDirError, match="no complete SavedModel version"):
            model_handler.version_dir(str(empty))


def test_newest_complete_version_is_used(model_dir, toy_version):
    serving_fixtures.copy_version(toy_version, model_dir, 11)
    (model_dir / "12").mkdir()  # being written: skipped
    assert model_handler.version_dir(str(model_dir)) == str(model_dir / "11")
    assert model_handler.version_dir(str(model_dir / "3")) == str(model_dir / "3")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--top_k", "9"], "--top_k 9: give 1 to 5"),
        (["--batch_size", "0"], "--batch_size 0: give 1 to 1024"),
        (["--batch_size", "5000"], "--batch_size 5000: give 1 to 1024"),
    ],
)
def test_bad_flags_are_usage_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as exited:
        config_lib.parse_args(["--model_dir", "m", "--input", "i", "--output", "o", *argv])
    assert exited.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.slow
def test_cli_errors_name_the_input_and_exit_2(model_dir, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.jsonl").write_text("{}\n")
    commands = {
        "--output": ["--input", str(model_dir), "--output", str(tmp_path / "out")],
        "--input": ["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o2")],
        "--model_dir": [
            "--model_dir",
            str(tmp_path),
            "--input",
            str(model_dir),
            "--output",
            str(tmp_path / "o3"),
        ],  # fmt: skip
        "--input-spelling": ["--inptu", "x"],
    }
    for name, argv in commands.items():
        full = argv if name == "--model_dir" else ["--model_dir", str(model_dir), *argv]
        if name == "--input-spelling":
            full = ["--model_dir", str(model_dir), "--input", str(model_dir), "--output",
                    str(tmp_path / "o4"), *argv]  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "batch_predict", *full],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 2, (name, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("objrec-batch-predict: error: "), (name, last)
        flag = name.split("-spelling")[0]
        assert flag in last, (name, last)
