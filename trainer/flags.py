"""The objrec-train command line: one flag per TrainConfig field, and Vertex AI's environment.

`--help` shows each flag's default, or `recipe` where the recipe in force fills it, followed
by the recipes' table.
"""

import argparse
import dataclasses
import os
import posixpath
from collections.abc import Mapping, Sequence

from objrec.flags import parse_bool
from trainer import recipes
from trainer.config import TrainConfig

RECIPE_EPILOG = """\
recipes (a flag left out takes its recipe's value; an explicit flag wins):
{recipes}
The recipe in force is logged and written to JOB_DIR/run.json."""


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainConfig field, with its help, type, choices and default."""
    parser = argparse.ArgumentParser(
        prog="objrec-train",
        description="Train ResNet50 on an objrec dataset, evaluate it and export a SavedModel.",
        epilog=RECIPE_EPILOG.format(recipes=recipes.describe()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for field in dataclasses.fields(TrainConfig):
        flag, meta = f"--{field.name}", field.metadata
        default = "recipe" if field.default is None else repr(field.default)
        suffix = "" if field.default == "" else f" (default: {default})"
        options = {"help": meta["help"] + suffix, "default": field.default}
        if field.name == "data_dir":
            options.update(required=True, help=meta["help"])
        if meta["type"] is bool:
            options.update(type=parse_bool, nargs="?", const=True, metavar="BOOL")
        elif meta["type"] is not None:
            options["type"] = meta["type"]
        if meta["choices"]:
            options["choices"] = meta["choices"]
        parser.add_argument(flag, **options)
    return parser


# Vertex AI custom training names its directories in the environment (BASE/model,
# BASE/checkpoints, BASE/logs of the job's base output directory); explicit flags win.
VERTEX_ENVIRONMENT = {
    "model_dir": "AIP_MODEL_DIR",
    "backup_dir": "AIP_CHECKPOINT_DIR",
    "log_dir": "AIP_TENSORBOARD_LOG_DIR",
}


def apply_vertex_environment(values: dict, environ: Mapping[str, str]) -> dict:
    """Fills model_dir, backup_dir and log_dir from Vertex AI's AIP_* variables when unset,
    and job_dir with the base output directory AIP_MODEL_DIR is in: the job's files beside
    the SavedModel that Vertex's model upload reads from AIP_MODEL_DIR itself."""
    for field, variable in VERTEX_ENVIRONMENT.items():
        if not values.get(field) and environ.get(variable):
            values[field] = environ[variable]
    if not values.get("job_dir") and environ.get("AIP_MODEL_DIR"):
        values["job_dir"] = posixpath.dirname(environ["AIP_MODEL_DIR"].rstrip("/"))
    return values


def parse_flags(argv: Sequence[str] | None = None) -> TrainConfig:
    """Builds the config from command-line flags (and Vertex AI's environment)."""
    parser = build_parser()
    values = vars(parser.parse_args(argv))
    values = apply_vertex_environment(values, os.environ)
    if not values["job_dir"]:
        parser.error("--job_dir is required (or set AIP_MODEL_DIR)")
    return TrainConfig(**values)
