"""Training recipes: from scratch or pretrained, input size from the dataset, --weights JOB_DIR."""

import dataclasses
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from objrec import contract
from trainer import config as config_lib
from trainer import flags as train_flags
from trainer import model as model_lib
from trainer import recipes, train


def resolved(*flags: str, image_size: int = 32) -> config_lib.TrainConfig:
    config = train_flags.parse_flags(["--data_dir", "d", "--job_dir", "j", *flags])
    return recipes.resolve(config, image_size)


def test_from_scratch_trains_every_layer_from_the_first_step():
    config = resolved("--weights", "none")
    assert [(p.name, p.epochs) for p in train.plan_phases(config)] == [("fine_tune", 20)]
    model = model_lib.build_model(3, config.input_size, "none")
    variables = model_lib.set_phase_trainable(model, "fine_tune", config.fine_tune_from)
    assert len(variables) == len(model.trainable_variables) == 214
    assert {v.path for v in variables} >= {"conv1_conv/kernel", "probabilities/kernel"}
    assert config.label_smoothing == 0.1 and config.weight_decay > 0
    assert config.random_erasing > 0 and config.crop_augmentation == "pad_crop"
    model_lib.set_batchnorm_momentum(model, config.batchnorm_momentum)
    momenta = {layer.momentum for layer in model_lib.backbone_of(model).layers
               if isinstance(layer, keras.layers.BatchNormalization)}  # fmt: skip
    assert momenta == {0.9}


def test_batchnorm_momentum_sets_how_fast_the_moving_statistics_follow():
    """One training step on a batch of mean 50: the moving mean moves by 1 - momentum."""
    model = model_lib.build_model(3, 32, "none")
    model_lib.set_batchnorm_momentum(model, 0.9)
    model(np.full((2, 32, 32, 3), 50.0, np.float32), training=True)
    first_bn = next(layer for layer in model_lib.backbone_of(model).layers
                    if isinstance(layer, keras.layers.BatchNormalization))  # fmt: skip
    model_lib.set_batchnorm_momentum(model, 0.99)
    moved_fast = float(np.abs(first_bn.moving_mean.numpy()).max())
    model(np.full((2, 32, 32, 3), 50.0, np.float32), training=True)
    moved_slow = float(np.abs(first_bn.moving_mean.numpy()).max()) - moved_fast
    assert moved_fast > 5 * abs(moved_slow) > 0


def first_batchnorm(model: keras.Model) -> keras.layers.BatchNormalization:
    return next(layer for layer in model_lib.backbone_of(model).layers
                if isinstance(layer, keras.layers.BatchNormalization))  # fmt: skip


@pytest.mark.parametrize("weights", ["none", "job"])
def test_train_batchnorm_chooses_batch_or_kept_statistics(weights, trained_job):
    """Fine-tuning every layer: frozen BatchNorm keeps its statistics, scale and shift while
    the convolutions train (Keras 3 ignores a backbone called with training=False)."""
    weights = trained_job["job_dir"] if weights == "job" else weights
    frozen_model = model_lib.build_model(3, 32, weights)
    variables = model_lib.set_phase_trainable(frozen_model, "fine_tune", "all", False)
    assert len(variables) == 214 - 2 * 53  # 53 BatchNorm layers' gamma and beta
    before = first_batchnorm(frozen_model).moving_mean.numpy()
    frozen_model(np.full((2, 32, 32, 3), 50.0, np.float32), training=True)
    np.testing.assert_array_equal(first_batchnorm(frozen_model).moving_mean.numpy(), before)

    model = model_lib.build_model(3, 32, weights)
    assert len(model_lib.set_phase_trainable(model, "fine_tune", "all", True)) == 214
    model(np.full((2, 32, 32, 3), 50.0, np.float32), training=True)
    assert np.abs(first_batchnorm(model).moving_mean.numpy() - before).max() > 1e-3


def test_the_recipes_freeze_batchnorm_only_for_a_pretrained_backbone():
    assert resolved("--weights", "none").train_batchnorm is True
    assert resolved("--weights", "runs/a").train_batchnorm is True
    assert resolved("--weights", "imagenet").train_batchnorm is False
    assert resolved("--weights", "imagenet", "--train_batchnorm").train_batchnorm is True
    assert resolved("--weights", "runs/a", "--train_batchnorm", "false").train_batchnorm is False


def test_a_pretrained_backbone_gets_the_two_phases(tmp_path):
    config = resolved("--weights", "imagenet", image_size=256)
    phases = train.plan_phases(config)
    assert [(p.name, p.epochs, p.learning_rate) for p in phases] == [
        ("head", 5, 1e-3),
        ("fine_tune", 10, 1e-5),
    ]
    assert config.fine_tune_from == "conv5_block1"
    assert config.crop_augmentation == "resized_crop" and config.weight_decay == 0.0


@pytest.mark.parametrize(("train_examples", "epochs"), [(257, 100), (1000, 26), (50_000, 10)])
def test_a_previous_job_fine_tunes_every_layer_for_enough_steps(train_examples, epochs):
    flags = train_flags.parse_flags(["--data_dir", "d", "--job_dir", "j", "--weights", "runs/a"])
    config = recipes.resolve(flags, 32, train_examples)
    assert recipes.recipe_name(config) == recipes.PREVIOUS_JOB
    phases = train.plan_phases(config)
    assert [(p.name, p.epochs, p.learning_rate) for p in phases] == [
        ("head", 10, 1e-3),
        ("fine_tune", epochs, 1e-4),
    ]
    assert config.fine_tune_from == "all" and config.early_stopping_patience == 0
    assert config.label_smoothing == 0.1 and config.random_erasing == 0.25
    explicit = recipes.resolve(dataclasses.replace(flags, fine_tune_epochs=3), 32, 257)
    assert explicit.fine_tune_epochs == 3


@pytest.mark.parametrize(("train_examples", "epochs"), [(257, 100), (2000, 20), (5400, 20)])
def test_from_scratch_runs_enough_steps_on_a_small_training_set(train_examples, epochs):
    flags = train_flags.parse_flags(["--data_dir", "d", "--job_dir", "j", "--weights", "none"])
    assert recipes.resolve(flags, 32, train_examples).fine_tune_epochs == epochs
    pretrained = dataclasses.replace(flags, weights="imagenet")
    assert recipes.resolve(pretrained, 256, 257).fine_tune_epochs == 10  # the seed's, as it was


def test_the_recipe_follows_what_weights_names():
    def name(weights: str) -> str:
        return recipes.recipe_name(config_lib.TrainConfig(data_dir="d", weights=weights))

    assert name("none") == name("None") == recipes.FROM_SCRATCH
    assert name("imagenet") == name("gs://b/backbone.weights.h5") == recipes.PRETRAINED
    assert name("gs://b/jobs/domain") == name("work/job") == recipes.PREVIOUS_JOB


def test_explicit_flags_override_the_recipe():
    config = resolved(
        *("--weights", "none", "--fine_tune_epochs", "3", "--label_smoothing", "0"),
        *("--crop_augmentation", "resized_crop", "--early_stopping_patience", "0"),
    )
    assert config.fine_tune_epochs == 3
    assert config.label_smoothing == 0.0
    assert config.crop_augmentation == "resized_crop"
    assert config.early_stopping_patience == 0
    assert config.learning_rate == recipes.RECIPES[recipes.FROM_SCRATCH]["learning_rate"]


@pytest.mark.parametrize(("stored", "expected"), [(28, 64), (32, 64), (64, 64), (256, 224),
                                                  (100, 88)])  # fmt: skip
def test_the_input_size_follows_the_stored_size(stored, expected):
    assert resolved("--weights", "none", image_size=stored).input_size == expected
    assert resolved("--weights", "none", "--input_size", "48", image_size=stored).input_size == 48


def test_help_shows_every_flag_with_its_default_and_the_recipes(capsys):
    with pytest.raises(SystemExit):
        train_flags.parse_flags(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "from_scratch: --head_epochs 0 --fine_tune_epochs 20" in text
    assert "pretrained: --head_epochs 5" in text
    assert "previous_job: --head_epochs 10 --fine_tune_epochs 10" in text
    assert "for at least 800 steps (at most 100 epochs)" in text
    assert "(default: recipe)" in text and "(default: 32)" in text


def test_the_job_records_its_recipe(trained_job):
    with open(os.path.join(trained_job["job_dir"], contract.RUN_FILE)) as file:
        record = json.load(file)
    assert record["recipe"] == "from_scratch"
    assert record["backbone"] == "resnet50"
    # Resolved values, not None: a recipe default and an explicit flag.
    assert record["config"]["label_smoothing"] == 0.1
    assert record["config"]["fine_tune_from"] == "conv5_block3"
    assert record["config"]["input_size"] == 32


def test_weights_of_a_job_directory_start_the_backbone(trained_job):
    job_dir = trained_job["job_dir"]
    trained = model_lib.build_model(3, 32, "none")
    tf.train.Checkpoint(model=trained).read(
        os.path.join(job_dir, contract.CHECKPOINTS_DIR, contract.FINAL_WEIGHTS)
    ).assert_existing_objects_matched()
    # Another input size and class count: only the backbone is taken.
    started = model_lib.build_model(5, 48, job_dir)
    expected = model_lib.backbone_of(trained).get_weights()
    loaded = model_lib.backbone_of(started).get_weights()
    assert len(loaded) == len(expected) == 318
    for a, b in zip(expected, loaded, strict=True):
        np.testing.assert_array_equal(a, b)


def one_line_weights_error(weights: str) -> str:
    with pytest.raises(model_lib.WeightsError) as error:
        model_lib.check_weights(weights)
        model_lib.build_model(3, 32, weights)
    message = str(error.value)
    assert message.startswith(f"--weights {weights}: ") and "\n" not in message
    return message


def test_a_job_without_final_weights_is_refused(trained_job, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(os.path.join(trained_job["job_dir"], contract.RUN_FILE), unfinished)
    assert "has no final weights" in one_line_weights_error(str(unfinished))
    assert "rerun its objrec-train command" in one_line_weights_error(str(unfinished))


def test_a_job_of_another_architecture_is_refused(trained_job, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(trained_job["job_dir"], other, ignore=shutil.ignore_patterns("export"))
    record = json.loads((other / contract.RUN_FILE).read_text())
    (other / contract.RUN_FILE).write_text(json.dumps({**record, "backbone": "efficientnetb0"}))
    assert "trained a efficientnetb0 backbone" in one_line_weights_error(str(other))

    # Same run.json, but final weights of a grey-input model: refused at load.
    grey = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Conv2D(64, 7)])
    (other / contract.RUN_FILE).write_text(json.dumps(record))
    tf.train.Checkpoint(model=grey).write(
        str(other / contract.CHECKPOINTS_DIR / contract.FINAL_WEIGHTS)
    )
    assert "do not fit a resnet50" in one_line_weights_error(str(other))


def test_a_directory_that_is_no_job_is_refused(tmp_path):
    assert "not an objrec job directory" in one_line_weights_error(str(tmp_path))
