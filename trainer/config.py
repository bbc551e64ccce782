"""Training configuration: one frozen dataclass; command-line flags override its fields.

A field whose default is None is filled by `trainer.recipes` once the dataset and the backbone
are known: the pretrained recipe (the seed's two phases) or the from-scratch one, and an input
size that follows the dataset's stored image size. Every such field is still a flag of its own,
and an explicit flag always wins.
"""

import dataclasses
import json
import os

from objrec import contract


def _flag(default, help_text: str, kind=None, choices=None):
    """A dataclass field whose metadata holds its flag's help, type and choices."""
    metadata = {"help": help_text, "type": kind, "choices": choices}
    return dataclasses.field(default=default, metadata=metadata)


CROP_AUGMENTATIONS = ("pad_crop", "resized_crop", "none")


STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


PRECISIONS = ("auto", "off", "float16", "bfloat16")
CONVOLUTIONS = ("auto", "matmul", "keras")
BATCHNORMS = ("fused", "keras")
VERBOSITIES = ("auto", "0", "1", "2")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. The resolved config is written to the job directory."""

    data_dir: str = _flag(None, "Dataset directory written by objrec-preprocess (or gs://).")
    job_dir: str = _flag(
        "",
        "Where checkpoints, eval/, logs/ and export/ go (on Vertex AI: the parent of "
        "AIP_MODEL_DIR, the job's base output directory).",
    )
    weights: str = _flag(
        "imagenet",
        "Backbone start: imagenet, none (train from scratch), a ResNet50 (no top) "
        ".weights.h5 file, or a previous objrec job directory.",
    )
    input_size: int | None = _flag(
        None,
        "Model input in pixels: from the dataset's stored size, see recipes below.",
        int,
    )
    batch_size: int = _flag(32, "Global batch, split evenly across replicas.", int)
    head_epochs: int | None = _flag(None, "Epochs of the head alone, backbone frozen.", int)
    fine_tune_epochs: int | None = _flag(
        None, "Epochs of the backbone from --fine_tune_from on.", int
    )
    learning_rate: float | None = _flag(None, "Adam's peak rate of the head phase.", float)
    fine_tune_learning_rate: float | None = _flag(
        None, "Adam's peak rate of the fine-tuning phase.", float
    )
    fine_tune_from: str | None = _flag(
        None, "First backbone layer (name or stage prefix such as conv4_block1) fine-tuned, or all."
    )
    weight_decay: float | None = _flag(
        None, "Decoupled weight decay of Adam (AdamW), not on BatchNorm or biases.", float
    )
    dropout: float = _flag(0.2, "Dropout before the classification layer.", float)
    warmup_epochs: float = _flag(1.0, "Linear warmup of each phase before cosine decay.", float)
    crop_augmentation: str | None = _flag(
        None,
        "pad_crop (small images: pad 1/8, random crop), resized_crop (photos: random area "
        "and aspect) or none.",
        choices=CROP_AUGMENTATIONS,
    )
    rotation_degrees: float | None = _flag(None, "Random rotation up to this angle.", float)
    min_crop_area: float = _flag(
        0.25, "resized_crop keeps at least this fraction of the image area.", float
    )
    random_erasing: float | None = _flag(
        None, "Probability of erasing a random rectangle of each training image.", float
    )
    label_smoothing: float | None = _flag(None, "Label smoothing of the cross-entropy.", float)
    mixup_alpha: float | None = _flag(
        None,
        "Mixup: a batch's images and labels averaged with the reversed batch's, the weight "
        "drawn from Beta(alpha, alpha); 0 is off.",
        float,
    )
    cutmix_alpha: float | None = _flag(
        None,
        "CutMix: a rectangle of the reversed batch's images pasted in, labels weighted by its "
        "area, drawn from Beta(alpha, alpha); 0 is off. With mixup too, each batch picks one.",
        float,
    )
    mix_probability: float | None = _flag(
        None, "Probability that a batch is mixed (mixup or CutMix).", float
    )
    batchnorm_momentum: float | None = _flag(
        None,
        "Momentum of BatchNorm's moving statistics when it trains (from scratch); Keras's 0.99 "
        "suits thousands of steps, 0.9 (PyTorch's) a few hundred.",
        float,
    )
    train_batchnorm: bool | None = _flag(
        None,
        "BatchNorm trains with its layer, normalising by each batch and updating its moving "
        "statistics; false freezes it in every phase (inference mode, as a pretrained "
        "backbone needs on small batches).",
        bool,
    )
    ema_momentum: float | None = _flag(
        None,
        "Exponential moving average of the weights, updated every step with this momentum; "
        "the average is what is validated, kept and exported. 0 is off.",
        float,
    )
    test_time_flip: bool = _flag(
        False,
        "Evaluation and the exported model answer the mean of each image's and its mirror "
        "image's probabilities (training flips too), at twice the compute per request; at "
        "seed scale +0.1 to +0.2 points served, so off.",
        bool,
    )
    early_stopping_patience: int | None = _flag(
        None, "Epochs without a better validation loss before a phase stops; 0 never.", int
    )
    strategy: str = _flag("auto", "tf.distribute strategy.", choices=STRATEGIES)
    mixed_precision: str = _flag(
        "auto",
        "auto: float16 on GPUs, bfloat16 on CPUs with bfloat16 instructions, else float32.",
        choices=PRECISIONS,
    )
    convolutions: str = _flag(
        "auto",
        "How training convolves: matmul computes 1x1 convolutions, and the kernel gradients of "
        "3x3 ones over small maps, as matrix products (1.5x the images/s at 32 and 64 px on "
        "2 CPU cores); keras keeps Keras's convolutions; auto is matmul on CPUs, keras on GPUs. "
        "The exported model is the same either way.",
        choices=CONVOLUTIONS,
    )
    batchnorm: str = _flag(
        "fused",
        "How training normalises: fused runs BatchNormalization as TensorFlow's fused kernel "
        "(1.2x to 1.4x the images/s on 2 CPU cores), keras as Keras's separate ops. The "
        "arithmetic and the exported model are the same either way.",
        choices=BATCHNORMS,
    )
    jit_compile: bool = _flag(False, "XLA-compile the train step.", bool)
    steps_per_execution: int = _flag(
        8, "Train steps per call of the compiled loop (fewer host round trips).", int
    )
    shuffle_buffer: int = _flag(2048, "Records in the shuffle buffer.", int)
    cache: bool = _flag(False, "Keep decoded records in memory after the first epoch.", bool)
    class_weights: bool = _flag(
        False, "Weigh the loss by inverse class frequency (imbalanced data).", bool
    )
    checkpoint_every_steps: int = _flag(100, "Steps between preemption backups.", int)
    backup_dir: str = _flag(
        "", "Preemption backup (default JOB_DIR/backup; Vertex: AIP_CHECKPOINT_DIR)."
    )
    log_dir: str = _flag("", "TensorBoard (default JOB_DIR/logs; Vertex: AIP_TENSORBOARD_LOG_DIR).")
    model_dir: str = _flag(
        "",
        "Also copy the exported SavedModel directly into this directory, where Vertex AI's "
        "model upload reads it (default on Vertex: AIP_MODEL_DIR).",
    )
    max_pixels: int = _flag(
        50_000_000, "The exported model's limit of pixels per image (declared size).", int
    )
    seed: int = _flag(42, "Seed of shuffling, augmentation and initialisation.", int)
    verbose: str = _flag(
        "auto",
        "As Keras's fit: 1 a progress bar within each epoch (steps, loss, images/s, ETA) and a "
        "line per epoch, 2 the line per epoch only, 0 warnings only; auto is 1 on a terminal, "
        "else 2.",
        choices=VERBOSITIES,
    )
    model_name: str = _flag(contract.DEFAULT_MODEL_NAME, "Model name of the export.")

    @property
    def pretrained(self) -> bool:
        return self.weights.lower() != "none"

    @property
    def resolved_backup_dir(self) -> str:
        return self.backup_dir or os.path.join(self.job_dir, contract.BACKUP_DIR)

    @property
    def resolved_log_dir(self) -> str:
        return self.log_dir or os.path.join(self.job_dir, contract.LOGS_DIR)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
