"""Configuration of the preprocessing job: a frozen dataclass with defaults, and its flags.

Flag names are part of the contract (docs/contracts.md); `add_arguments` defines them and
`config_from_args` turns the parsed flags into a validated `PreprocessConfig`.
"""

import argparse
import dataclasses
import math

from objrec import contract
from objrec.flags import DefaultsHelpFormatter

# (split name, fraction of the examples) in contract.SPLITS order.
SplitFractions = tuple[tuple[str, float], ...]

DEFAULT_SPLIT = "train=0.8,validation=0.1,test=0.1"
DEFAULT_JPEG_QUALITY = 90
# 10,000 x 10,000: a decoded RGB image of that size already takes 300 MB of worker memory.
DEFAULT_MAX_PIXELS = 100_000_000


def parse_split(text: str) -> SplitFractions:
    """Parses `train=0.8,validation=0.1,test=0.1` into fractions in contract.SPLITS order.

    Splits left out get 0. Raises ValueError naming the offending item.
    """
    fractions: dict[str, float] = {}
    for item in text.split(","):
        name, equals, value = item.strip().partition("=")
        if not equals:
            raise ValueError(f"--split item {item!r} is not NAME=FRACTION, e.g. {DEFAULT_SPLIT}")
        if name not in contract.SPLIT_NAMES:
            choices = ", ".join(contract.SPLIT_NAMES)
            raise ValueError(f"--split names {name!r}; the splits are {choices}")
        name = contract.SPLIT_NAMES[name]
        if name in fractions:
            raise ValueError(f"--split names {name!r} twice: {text}")
        fractions[name] = _parse_fraction(name, value)
    total = sum(fractions.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"--split fractions add up to {total:g}, not 1: {text}")
    return tuple((name, fractions.get(name, 0.0)) for name in contract.SPLITS)


def _parse_fraction(name: str, value: str) -> float:
    try:
        fraction = float(value)
    except ValueError:
        raise ValueError(f"--split {name}={value!r} is not a number") from None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"--split {name}={value} is outside [0, 1]")
    return fraction


def format_split(fractions: SplitFractions) -> str:
    """The `--split` text of `fractions`, e.g. `train=0.8,validation=0.1,test=0.1`."""
    return ",".join(f"{name}={fraction:g}" for name, fraction in fractions)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Everything the job needs to know; each field is the flag of the same name."""

    input: str
    output: str
    image_size: int = contract.DEFAULT_IMAGE_SIZE
    resize_mode: str = contract.DEFAULT_RESIZE_MODE
    # None: the default fractions, for every image whose split the input does not name.
    split: SplitFractions | None = None
    num_shards: int = 0
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_images_per_class: int = 1
    strict: bool = False
    progress: str = "auto"  # auto | on | off: the local run's counts on stderr

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"--image_size must be at least 1, got {self.image_size}")
        if self.resize_mode not in contract.RESIZE_MODES:
            modes = "|".join(contract.RESIZE_MODES)
            raise ValueError(f"--resize_mode must be one of {modes}, got {self.resize_mode!r}")
        if self.num_shards < 0:
            raise ValueError(f"--num_shards must be 0 (automatic) or more, got {self.num_shards}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"--jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.max_pixels < 1:
            raise ValueError(f"--max_pixels must be at least 1, got {self.max_pixels}")
        if self.min_images_per_class < 0:
            raise ValueError(
                f"--min_images_per_class must be 0 or more, got {self.min_images_per_class}"
            )

    @property
    def split_fractions(self) -> SplitFractions:
        """The fractions by content hash: `--split`, or the default when it was not given."""
        return parse_split(DEFAULT_SPLIT) if self.split is None else self.split

    def to_json_dict(self) -> dict:
        """The resolved configuration as metadata.json stores it (`split` in flag syntax)."""
        return {**dataclasses.asdict(self), "split": format_split(self.split_fractions)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the job's own flags; Beam's flags stay for `parse_known_args` to pass on."""
    defaults = PreprocessConfig(input="", output="")
    parser.add_argument(
        "--input",
        required=True,
        help="Folder of class folders SRC/<class>/<image>, optionally split into "
        "SRC/{train,validation|val,test}/<class>/<image>; or a manifest .csv/.jsonl with "
        "uri,label[,split]. Local or gs://.",
    )
    parser.add_argument(
        "--output", required=True, help="New or empty dataset directory (or gs://)."
    )
    parser.add_argument(
        "--image_size", type=int, default=defaults.image_size, help="Stored size S in pixels."
    )
    parser.add_argument(
        "--resize_mode",
        choices=contract.RESIZE_MODES,
        default=defaults.resize_mode,
        help="shorter_side: shorter side S; crop: then the central SxS; "
        "pad: longer side S, black borders to SxS; stretch: SxS.",
    )
    parser.add_argument(
        "--split",
        help=f"Fractions by content hash (default {DEFAULT_SPLIT}), for images whose split "
        "the input does not name.",
    )
    parser.add_argument(
        "--num_shards",
        type=int,
        default=defaults.num_shards,
        help="Shards per split; 0 = about 150 MB each. Train gets at least min(16, examples).",
    )
    parser.add_argument(
        "--jpeg_quality",
        type=int,
        default=defaults.jpeg_quality,
        help="quality of the stored JPEGs, 1 to 95",
    )
    parser.add_argument(
        "--max_pixels",
        type=int,
        default=defaults.max_pixels,
        help="Reject images whose header declares more pixels (checked before decoding).",
    )
    parser.add_argument(
        "--min_images_per_class",
        type=int,
        default=defaults.min_images_per_class,
        help="Warn about classes with fewer stored images (fail with --strict).",
    )
    parser.add_argument(
        "--strict", action="store_true", help="Fail when a class has too few images."
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default=defaults.progress,
        help="Counts of files read, decoded, rejected, duplicate and written as a local run "
        "goes, on stderr; auto: when stderr is a terminal (default: %(default)s).",
    )


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    """The validated config of parsed flags; raises ValueError naming the bad flag."""
    fields = {field.name for field in dataclasses.fields(PreprocessConfig)}
    values = {name: value for name, value in vars(args).items() if name in fields}
    split = None if args.split is None else parse_split(args.split)
    return PreprocessConfig(**{**values, "split": split})


DESCRIPTION = "objrec-preprocess: labelled images to a sharded TFRecord dataset (Apache Beam)."


def build_parser() -> argparse.ArgumentParser:
    """The objrec-preprocess command line: the job's own flags (Beam's pass through)."""
    parser = argparse.ArgumentParser(
        prog="objrec-preprocess",
        description=DESCRIPTION,
        epilog="Every other flag goes to Beam: --runner, --project, --region, --temp_location, ...",
        formatter_class=DefaultsHelpFormatter,
    )
    add_arguments(parser)
    return parser


def parse_args(argv: list[str] | None) -> tuple[PreprocessConfig, list[str]]:
    """The job's config, and the remaining arguments for Beam's PipelineOptions."""
    parser = build_parser()
    known, beam_args = parser.parse_known_args(argv)
    try:
        return config_from_args(known), beam_args
    except ValueError as error:
        parser.error(str(error))


def flag_names() -> list[str]:
    """The job's own flags, without dashes (`image_size`, ...): one per config field."""
    return [field.name for field in dataclasses.fields(PreprocessConfig)]
