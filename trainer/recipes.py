"""The training recipes: which settings suit a pretrained backbone and which one from scratch.

A pretrained backbone (ImageNet, a weights file) keeps the seed's transfer recipe: the head
alone over the frozen backbone, then fine-tuning of the last stage at a low rate, BatchNorm in
inference mode throughout (frozen: its statistics, scale and shift kept). A backbone a previous
objrec job trained (domain pretraining) has the same two phases, but fine-tunes every layer,
BatchNorm included, at 1e-4 with the from-scratch regularisation: on the transfer benchmark
(250 training photos) ImageNet's recipe (conv5 at 1e-5, 10 epochs, early stopping) scored
71.5% served, every layer at 1e-4 for 100 epochs 90.5%, and with the regularisation 92.9%.

Small training sets get more epochs: an epoch of 250 images is 8 steps, and 20 of them leave a
network from scratch far from trained (89.5% against 92.8% after 100 epochs on the transfer
benchmark's target). The from-scratch and previous-job recipes run at least about
MIN_FINE_TUNE_STEPS steps of fine-tuning, up to MAX_FINE_TUNE_EPOCHS epochs; larger sets keep
the table's epochs (6,000 photos: 20 epochs of 168 steps).

A backbone from scratch has nothing to protect: the whole network trains from the first step
at Adam's usual rate, longer, with the
regularisation a network of 23 M weights needs on a few thousand images (weight decay, label
smoothing, random erasing) and an early-stopping patience that lets the cosine schedule finish.
Its weight decay is 0.5: Keras's AdamW shrinks a weight by learning rate x decay each step, so
over the few thousand steps of a small job 0.05 hardly acts (seed scale, served: 0.05 87.8%,
0.5 88.3%, 1.0 88.3%, 2.0 87.3%).

Fields left None in the TrainConfig take the recipe's value; explicit flags win. The input size
follows the dataset: stored images above 64 pixels get evaluation's 7/8 centre crop (256 -> 224,
as ImageNet models are evaluated); smaller ones (Fashion-MNIST, CIFAR) are used whole, scaled
up to 64 pixels, with pad-and-crop augmentation. ResNet50's stem divides its input by 4 and its
stages by 8 more, so a 32-pixel input leaves conv5 a single 1 x 1 position; at 64 pixels it has
2 x 2. On 2 CPU cores an image costs about 2.7x as much to train at 64 as at 32 pixels (60
against 165 images/s, bfloat16, batches of 32 and 64), yet 32 pixels for twice the epochs
scored no better at seed scale (88.2% against 88.1-88.3% served).
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
        "mixup_alpha": 0.0,
        "cutmix_alpha": 0.0,
        "mix_probability": 1.0,
        "batchnorm_momentum": 0.99,
        "train_batchnorm": False,
        "ema_momentum": 0.0,
        "early_stopping_patience": 3,
    },
    PREVIOUS_JOB: {
        "head_epochs": 10,
        "fine_tune_epochs": 10,  # at least: see MIN_FINE_TUNE_STEPS
        "learning_rate": 1e-3,
        "fine_tune_learning_rate": 1e-4,
        "fine_tune_from": "all",
        "weight_decay": 0.05,
        "rotation_degrees": 10.0,
        "random_erasing": 0.25,
        "label_smoothing": 0.1,
        "mixup_alpha": 0.0,
        "cutmix_alpha": 0.0,
        "mix_probability": 1.0,
        "batchnorm_momentum": 0.99,
        "train_batchnorm": True,
        "ema_momentum": 0.0,
        "early_stopping_patience": 0,
    },
    FROM_SCRATCH: {
        "head_epochs": 0,
        "fine_tune_epochs": 20,
        "learning_rate": 1e-3,
        "fine_tune_learning_rate": 1e-3,
        "fine_tune_from": "all",
        "weight_decay": 0.5,
        "rotation_degrees": 0.0,
        "random_erasing": 0.25,
        "label_smoothing": 0.1,
        "mixup_alpha": 0.0,
        "cutmix_alpha": 0.0,
        "mix_probability": 1.0,
        "batchnorm_momentum": 0.9,
        "train_batchnorm": True,
        "ema_momentum": 0.0,
        "early_stopping_patience": 8,
    },
}

# The recipes whose fine-tuning runs at least this many steps on a small training set (their
# table's epochs otherwise), in at most MAX_FINE_TUNE_EPOCHS epochs.
STEP_FLOOR_RECIPES = (PREVIOUS_JOB, FROM_SCRATCH)
MIN_FINE_TUNE_STEPS = 800
MAX_FINE_TUNE_EPOCHS = 100

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


def fine_tune_epochs(table_epochs: int, train_examples: int, batch_size: int) -> int:
    """`table_epochs`, or more on a small training set: enough for MIN_FINE_TUNE_STEPS steps,
    up to MAX_FINE_TUNE_EPOCHS. Unknown size (0): the table's epochs."""
    if train_examples <= 0:
        return table_epochs
    steps_per_epoch = max(1, train_examples // batch_size)
    for_steps = min(MAX_FINE_TUNE_EPOCHS, -(-MIN_FINE_TUNE_STEPS // steps_per_epoch))
    return max(table_epochs, for_steps)


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
    if "fine_tune_epochs" in filled and name in STEP_FLOOR_RECIPES:
        filled["fine_tune_epochs"] = fine_tune_epochs(
            filled["fine_tune_epochs"], train_examples, config.batch_size
        )
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
    for name, values in RECIPES.items():
        settings = " ".join(f"--{key} {value}" for key, value in values.items())
        lines.append(f"  {name}: {settings}")
        lines.append({PRETRAINED: "    (--weights imagenet or a .weights.h5 file)",
                      PREVIOUS_JOB: "    (--weights JOB_DIR: a previous objrec job's backbone)",
                      FROM_SCRATCH: "    (--weights none)"}[name])  # fmt: skip
    lines.append(
        f"  every recipe: --input_size {SMALL_IMAGE_SIZE} for images stored at up to "
        f"{SMALL_IMAGE_SIZE} px (scaled up), else 7/8 of the stored size (256 -> 224); "
        "--crop_augmentation pad_crop up to "
        f"{SMALL_IMAGE_SIZE} px input, else resized_crop; previous_job and from_scratch: more "
        f"--fine_tune_epochs on a small training set, for at least {MIN_FINE_TUNE_STEPS} steps "
        f"(at most {MAX_FINE_TUNE_EPOCHS} epochs)"
    )
    return "\n".join(lines)
