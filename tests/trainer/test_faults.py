"""Training and export faults: nothing half-published, an intact backup always found,
a dataset with missing shards refused before any work, SIGTERM during export exits 42."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from objrec import contract
from tests import dataset_fixtures
from trainer import checkpoints, export, input_pipeline, job


def test_an_export_cut_short_is_removed_and_the_next_published_whole(trained_job, tmp_path):
    job_dir = tmp_path / "job"
    shutil.copytree(trained_job["job_dir"], job_dir)
    base = job_dir / "export" / "objrec"
    # What a SIGKILL leaves: a version copied without its saved_model.pb, and staging.
    shutil.copytree(base / "1" / "variables", base / "2" / "variables")
    shutil.copytree(base / "1", base / ".tmp-0123abcd")
    assert export.main(["--job_dir", str(job_dir)]) == 0
    assert sorted(os.listdir(base)) == ["1", "2"]
    assert (base / "2" / "saved_model.pb").exists()
    assert (base / "2" / "assets.extra" / contract.WARMUP_FILE).exists()


def test_a_corrupt_newest_backup_falls_back_to_the_older_intact_one(tmp_path):
    value = tf.Variable(0.0)
    checkpoint = tf.train.Checkpoint(value=value)
    backup = checkpoints.Backup(checkpoint, str(tmp_path), tf.distribute.get_strategy())
    for step, number in ((1, 1.0), (2, 2.0)):
        value.assign(number)
        backup.save(step)
    newest_data = tmp_path / "ckpt-2.data-00000-of-00001"
    newest_data.write_bytes(newest_data.read_bytes()[:3])  # cut short, as by a SIGKILL
    value.assign(-1.0)
    assert backup.restore()
    assert float(value.numpy()) == 1.0
    # The corrupt files deleted by hand: the older backup is still found, though the
    # `checkpoint` index file names the deleted one.
    for path in tmp_path.glob("ckpt-2.*"):
        path.unlink()
    value.assign(-1.0)
    assert checkpoints.Backup(checkpoint, str(tmp_path), tf.distribute.get_strategy()).restore()
    assert float(value.numpy()) == 1.0


def test_a_dataset_with_missing_shards_is_refused_before_training(tmp_path):
    data_dir = dataset_fixtures.write_dataset(str(tmp_path / "d"), {"train": 6, "test": 4})
    (tmp_path / "d" / contract.shard_file_name("train", 1, 2)).unlink()
    with pytest.raises(input_pipeline.DatasetError) as error:
        input_pipeline.load_dataset_info(data_dir)
    message = str(error.value)
    assert f"--data_dir {data_dir}: train-00001-of-00002.tfrecord" in message
    assert "is missing" in message and "\n" not in message


def test_sigterm_during_the_export_exits_42_with_nothing_published(trained_job, tmp_path):
    job_dir = tmp_path / "job"
    shutil.copytree(trained_job["job_dir"], job_dir, ignore=shutil.ignore_patterns("export"))
    config = export.load_job_config(str(job_dir), {})
    info = input_pipeline.load_dataset_info(config.data_dir)
    watch = checkpoints.PreemptionWatch()
    watch.received = True  # as its SIGTERM handler sets it
    with pytest.raises(SystemExit) as exit_:
        job.export_and_evaluate(config, info, watch, epochs=[])
    assert exit_.value.code == checkpoints.EXIT_PREEMPTED
    base = job_dir / "export" / "objrec"
    assert [name for name in os.listdir(base) if not name.startswith(".")] == []


def test_training_refuses_the_cpu_when_the_pod_was_given_gpus(tiny_dataset, tmp_path, capsys,
                                                               monkeypatch):  # fmt: skip
    from trainer import task

    monkeypatch.setenv("OBJREC_EXPECTED_GPUS", "4")
    argv = ["--data_dir", tiny_dataset, "--job_dir", str(tmp_path / "job"), "--weights", "none"]
    assert task.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "OBJREC_EXPECTED_GPUS=4 GPUs were requested but TensorFlow sees 0" in error
    assert "LD_LIBRARY_PATH" in error and len(error.splitlines()) == 1


def test_a_vertex_model_dir_gets_the_saved_model_at_its_root(trained_job, tmp_path):
    job_dir = tmp_path / "job"
    shutil.copytree(trained_job["job_dir"], job_dir)
    model_dir = tmp_path / "vertex" / "model"
    assert export.main(["--job_dir", str(job_dir), "--model_dir", str(model_dir)]) == 0
    # What Vertex AI's model upload reads: saved_model.pb and variables/ in the directory itself.
    assert (model_dir / "saved_model.pb").is_file()
    assert (model_dir / "assets.extra" / contract.WARMUP_FILE).is_file()
    # The TF Serving layout stays, with the same model in it.
    published = job_dir / "export" / "objrec" / "2"
    image = dataset_fixtures.jpeg_bytes(
        dataset_fixtures.class_image(1, 40, np.random.default_rng(0))
    )
    answers = [
        tf.saved_model.load(str(path))
        .signatures[contract.SERVING_SIGNATURE](image_bytes=tf.constant([image]))[
            contract.OUTPUT_PROBABILITIES
        ]
        .numpy()
        for path in (model_dir, published)
    ]
    np.testing.assert_array_equal(answers[0], answers[1])
