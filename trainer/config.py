"""Training configuration: one frozen dataclass; command-line flags override its fields."""

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence

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
    label_smoothing: float = 0.0
    early_stopping_patience: int = 3
    strategy: str = "auto"  # auto | one_device | mirrored | multi_worker
    mixed_precision: str = "auto"  # auto | off | float16 | bfloat16
    jit_compile: bool = False
    shuffle_buffer: int = 2048
    cache: bool = False
    checkpoint_every_steps: int = 100
    max_pixels: int = 50_000_000  # the exported model's limit per image (declared size)
    seed: int = 42
    model_name: str = contract.DEFAULT_MODEL_NAME

    @property
    def pretrained(self) -> bool:
        return self.weights.lower() != "none"

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


def apply_vertex_environment(values: dict, environ: os._Environ | dict) -> dict:
    """Vertex AI names the job directory with `AIP_MODEL_DIR`; an explicit flag still wins."""
    if not values.get("job_dir") and environ.get("AIP_MODEL_DIR"):
        values["job_dir"] = environ["AIP_MODEL_DIR"]
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
