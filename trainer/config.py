"""Training configuration: one frozen dataclass; command-line flags override its fields."""

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

from objrec import contract


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. The resolved config is written to the job directory."""

    data_dir: str
    job_dir: str
    input_size: int = 224
    batch_size: int = 32  # global: split evenly across replicas
    head_epochs: int = 5
    fine_tune_epochs: int = 10
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5
    # First backbone layer (a name or a stage prefix such as `conv4_block1`) that fine-tuning
    # unfreezes, with everything after it; `all` unfreezes the whole backbone.
    fine_tune_from: str = "conv5_block1"
    weights: str = "imagenet"  # imagenet | none | PATH to a ResNet50 (no top) weights file
    dropout: float = 0.2
    warmup_epochs: float = 1.0
    rotation_degrees: float = 10.0
    # Scale augmentation: a random crop keeps this fraction of the image area or more.
    min_crop_area: float = 0.25
    label_smoothing: float = 0.0
    early_stopping_patience: int = 3
    strategy: str = "auto"  # auto | one_device | mirrored | multi_worker
    mixed_precision: str = "auto"  # auto | off | float16 | bfloat16
    jit_compile: bool = False
    shuffle_buffer: int = 2048
    cache: bool = False
    class_weights: bool = False  # weigh the loss by inverse class frequency (imbalanced data)
    checkpoint_every_steps: int = 100
    backup_dir: str = ""  # preemption backup; default JOB_DIR/backup (Vertex: AIP_CHECKPOINT_DIR)
    log_dir: str = ""  # TensorBoard; default JOB_DIR/logs (Vertex: AIP_TENSORBOARD_LOG_DIR)
    max_pixels: int = 50_000_000  # the exported model's limit per image (declared size)
    seed: int = 42
    model_name: str = contract.DEFAULT_MODEL_NAME

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


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field, defaults taken from the dataclass."""
    parser = argparse.ArgumentParser(description="Fine-tune ResNet50 on an objrec dataset.")
    for field in dataclasses.fields(TrainConfig):
        flag = f"--{field.name}"
        if field.default is dataclasses.MISSING:
            parser.add_argument(flag, required=True)
        elif field.type in (bool, "bool"):
            parser.add_argument(
                flag, type=_parse_bool, default=field.default, nargs="?", const=True
            )
        else:
            kind = {int: int, float: float, "int": int, "float": float}.get(field.type, str)
            parser.add_argument(flag, type=kind, default=field.default)
    return parser


# Vertex AI custom training names its directories in the environment; explicit flags win.
VERTEX_ENVIRONMENT = {
    "job_dir": "AIP_MODEL_DIR",
    "backup_dir": "AIP_CHECKPOINT_DIR",
    "log_dir": "AIP_TENSORBOARD_LOG_DIR",
}


def apply_vertex_environment(values: dict, environ: Mapping[str, str]) -> dict:
    """Fills job_dir, backup_dir and log_dir from Vertex AI's AIP_* variables when unset."""
    for field, variable in VERTEX_ENVIRONMENT.items():
        if not values.get(field) and environ.get(variable):
            values[field] = environ[variable]
    return values


def parse_flags(argv: Sequence[str] | None = None) -> TrainConfig:
    """Builds the config from command-line flags (and Vertex AI's environment)."""
    parser = build_parser()
    for action in parser._actions:
        if action.dest == "job_dir":
            action.required = False
            action.default = ""
    values = vars(parser.parse_args(argv))
    values = apply_vertex_environment(values, os.environ)
    if not values["job_dir"]:
        parser.error("--job_dir is required (or set AIP_MODEL_DIR)")
    return TrainConfig(**values)
