"""The training recipes: which settings suit a pretrained backbone and which one from scratch.

A pretrained backbone (ImageNet, a weights file) keeps the seed's transfer recipe: the head
alone over the frozen backbone, then fine-tuning of the last stage at a low rate, BatchNorm in
inference mode throughout. A backbone a previous objrec job trained (domain pretraining) has
the same two phases with BatchNorm in inference mode, but fine-tunes every layer at 1e-4, for
a number of steps rather than epochs: the few images such a job usually gets (50 a class) make
an epoch a handful of steps, and ImageNet's recipe (conv5 at 1e-5, 10 epochs, early stopping)
then barely moves the model (71.5% against 90.5% served on the transfer benchmark).

A backbone from scratch has nothing to protect: the whole network trains from the first step
at Adam's usual rate, longer, with the
regularisation a network of 23 M weights needs on a few thousand images (weight decay, label
smoothing, random erasing) and an early-stopping patience that lets the cosine schedule finish.

Fields left None in the TrainConfig take the recipe's value; explicit flags win. The input size
follows the dataset: stored images above 64 pixels get evaluation's 7/8 centre crop (256 -> 224,
as ImageNet models are evaluated); smaller ones (Fashion-MNIST, CIFAR) are used whole, scaled
up to 64 pixels, with pad-and-crop augmentation. ResNet50's stem divides its input by 4 and its
stages by 8 more, so a 32-pixel input leaves conv5 a single 1 x 1 position; at 64 pixels it has
2 x 2, and on 2 CPU cores a step costs only 1.4x as much (86 against 60 images/s), since small
inputs are bound by per-layer overhead rather than arithmetic.
"""

import dataclasses
import logging

from trainer.config import TrainConfig

PRETRAINED = "pretrained"
PREVIOUS_JOB = "previous_job"
FROM_SCRATCH = "from_scratch"

RECIPES = {
    PRETRAINED: {
        "head_epochs": 5,
        "fine_tune_epochs": 10,
        "learning_rate": 1e-3,
        "fine_tune_learning_rate": 1e-5,
        "fine_tune_from": "conv5_block1",
        "weight_decay": 0.0,
        "rotation_degrees": 10.0,
        "random_erasing": 0.0,
        "label_smoothing": 0.0,
        "batchnorm_momentum": 0.99,
        "ema_momentum": 0.0,
        "early_stopping_patience": 3,
    },
    PREVIOUS_JOB: {
        "head_epochs": 10,
        "fine_tune_epochs": None,  # from FINE_TUNE_STEPS and the training set's size
        "learning_rate": 1e-3,
        "fine_tune_learning_rate": 1e-4,
        "fine_tune_from": "all",
        "weight_decay": 0.0,
        "rotation_degrees": 10.0,
        "random_erasing": 0.0,
        "label_smoothing": 0.0,
        "batchnorm_momentum": 0.99,
        "ema_momentum": 0.0,
        "early_stopping_patience": 0,
    },
    FROM_SCRATCH: {
        "head_epochs": 0,
        "fine_tune_epochs": 20,
        "learning_rate": 1e-3,
        "fine_tune_learning_rate": 1e-3,
        "fine_tune_from": "all",
        "weight_decay": 0.05,
        "rotation_degrees": 0.0,
        "random_erasing": 0.25,
        "label_smoothing": 0.1,
        "batchnorm_momentum": 0.9,
        "ema_momentum": 0.0,
        "early_stopping_patience": 8,
    },
}

# previous_job's fine-tuning: this many steps, in 10 to 100 epochs.
FINE_TUNE_STEPS = 800
FINE_TUNE_EPOCHS_RANGE = (10, 100)

# Stored images up to this side are small: used whole, augmented by pad-and-crop.
SMALL_IMAGE_SIZE = 64
# Evaluation's centre crop of larger images: 224 of 256 pixels.
EVAL_CROP_RATIO = 7 / 8


def recipe_name(config: TrainConfig) -> str:
    """from_scratch (--weights none), previous_job (a job directory: anything but imagenet,
    none or a .h5 weights file, as trainer.model checks) or pretrained."""
    weights = config.weights.lower()
    if weights == "none":
        return FROM_SCRATCH
    if weights == "imagenet" or weights.endswith(".h5"):
        return PRETRAINED
    return PREVIOUS_JOB


def steps_based_epochs(train_examples: int, batch_size: int) -> int:
    """Epochs of about FINE_TUNE_STEPS steps over `train_examples`, within the range."""
    steps_per_epoch = max(1, train_examples // batch_size)
    low, high = FINE_TUNE_EPOCHS_RANGE
    return min(high, max(low, -(-FINE_TUNE_STEPS // steps_per_epoch)))


def default_input_size(image_size: int) -> int:
    """The model input for a dataset stored at `image_size`: 32 -> 64, 256 -> 224."""
    if image_size <= SMALL_IMAGE_SIZE:
        return SMALL_IMAGE_SIZE
    return round(image_size * EVAL_CROP_RATIO)


def default_crop_augmentation(input_size: int) -> str:
    return "pad_crop" if input_size <= SMALL_IMAGE_SIZE else "resized_crop"


def resolve(config: TrainConfig, image_size: int, train_examples: int = 0) -> TrainConfig:
    """The config with every recipe field (None) filled for this backbone and dataset."""
    name = recipe_name(config)
    filled = {key: value for key, value in RECIPES[name].items() if getattr(config, key) is None}
    if filled.get("fine_tune_epochs", 0) is None:
        filled["fine_tune_epochs"] = steps_based_epochs(train_examples, config.batch_size)
    input_size = config.input_size or default_input_size(image_size)
    if config.input_size is None:
        filled["input_size"] = input_size
    if config.crop_augmentation is None:
        filled["crop_augmentation"] = default_crop_augmentation(input_size)
    resolved = dataclasses.replace(config, **filled)
    logging.info(
        "recipe %s (from its defaults: %s)",
        name,
        ", ".join(f"{key}={getattr(resolved, key)}" for key in sorted(filled)) or "none",
    )
    return resolved


def describe() -> str:
    """The recipes as --help shows them."""
    lines = []
    low, high = FINE_TUNE_EPOCHS_RANGE
    steps = f"{low}-{high} (about {FINE_TUNE_STEPS} steps)"
    for name, values in RECIPES.items():
        settings = " ".join(
            f"--{key} {steps if value is None else value}" for key, value in values.items()
        )
        lines.append(f"  {name}: {settings}")
        lines.append({PRETRAINED: "    (--weights imagenet or a .weights.h5 file)",
                      PREVIOUS_JOB: "    (--weights JOB_DIR: a previous objrec job's backbone)",
                      FROM_SCRATCH: "    (--weights none)"}[name])  # fmt: skip
    lines.append(
        f"  every recipe: --input_size {SMALL_IMAGE_SIZE} for images stored at up to "
        f"{SMALL_IMAGE_SIZE} px (scaled up), else 7/8 of the stored size (256 -> 224); "
        "--crop_augmentation pad_crop up to "
        f"{SMALL_IMAGE_SIZE} px input, else resized_crop"
    )
    return "\n".join(lines)
