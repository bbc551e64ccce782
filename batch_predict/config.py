"""The batch prediction job's flags: a frozen dataclass, parsed before Beam or TensorFlow load.

Beam's own flags (`--runner`, Dataflow's, `--dry_run`) pass through to PipelineOptions.
"""

import argparse
import dataclasses

from objrec import contract
from objrec.flags import DefaultsHelpFormatter

# TF Serving's own bound on one request (the servers' --max_message_bytes default): a file
# larger than a request could carry is answered `valid: false` without being read.
DEFAULT_MAX_FILE_BYTES = contract.DEFAULT_MAX_MESSAGE_BYTES
# The development server's (and TF Serving's batching's) bound on the images of one call.
MAX_BATCH_SIZE = 1024

DESCRIPTION = (
    "objrec-batch-predict: the exported model over a folder, a gs:// prefix or a manifest "
    "(Apache Beam), one JSON line per input, and summary.json."
)


@dataclasses.dataclass(frozen=True)
class BatchPredictConfig:
    """Every setting of a batch prediction job."""

    model_dir: str
    input: str
    output: str
    top_k: int = 1
    batch_size: int = 32
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES

    def __post_init__(self):
        if not 1 <= self.top_k <= contract.MAX_TOP_K:
            raise ValueError(f"--top_k {self.top_k}: give 1 to {contract.MAX_TOP_K}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"--batch_size {self.batch_size}: give 1 to {MAX_BATCH_SIZE}")
        if self.max_file_bytes < 1:
            raise ValueError(f"--max_file_bytes {self.max_file_bytes}: give a positive size")


def build_parser() -> argparse.ArgumentParser:
    """The job's own flags (Beam's pass through)."""
    parser = argparse.ArgumentParser(
        prog="objrec-batch-predict",
        description=DESCRIPTION,
        epilog="Every other flag goes to Beam: --runner, --project, --region, --temp_location, "
        "--setup_file, --sdk_container_image, --dry_run, ...",
        formatter_class=DefaultsHelpFormatter,
    )
    defaults = BatchPredictConfig(model_dir="", input="", output="")
    parser.add_argument(
        "--model_dir",
        required=True,
        help="JOB_DIR/export/<model> (its newest version) or one version directory; local or "
        "gs://.",
    )
    parser.add_argument(
        "--input",
        required=True,
        help="A folder or gs:// prefix (every file under it), or a manifest .csv/.jsonl of "
        "uri[,label] (relative URIs from the manifest's folder). With labels, summary.json "
        "has the accuracy.",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="New or empty directory (or gs://) for predictions-*.jsonl and summary.json.",
    )
    parser.add_argument(
        "--top_k", type=int, default=defaults.top_k, help="Classes and scores per image."
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=defaults.batch_size,
        help=f"Most images per model call (Beam's BatchElements; at most {MAX_BATCH_SIZE}).",
    )
    parser.add_argument(
        "--max_file_bytes",
        type=int,
        default=defaults.max_file_bytes,
        help="Larger files get valid: false unread (default: a TF Serving request's limit).",
    )
    return parser


def flag_names() -> list[str]:
    return [field.name for field in dataclasses.fields(BatchPredictConfig)]


def parse_args(argv: list[str] | None) -> tuple[BatchPredictConfig, list[str]]:
    """The job's config, and the remaining arguments for Beam's PipelineOptions."""
    parser = build_parser()
    known, beam_args = parser.parse_known_args(argv)
    try:
        return BatchPredictConfig(**vars(known)), beam_args
    except ValueError as error:
        parser.error(str(error))
