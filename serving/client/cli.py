"""objrec-predict: label image files through a TF Serving model (the client's command line).

Files or folders, local or gs://, folders searched recursively:

    objrec-predict --server localhost:8500 --model_name objrec photos/ cat.jpg
    objrec-predict --server dns:///objrec-serving.default.svc.cluster.local:8500 \\
        --model_name objrec --top_k 3 --json gs://BUCKET/incoming/
    objrec-predict --server localhost:8500 --status

`python -m serving.client` is the same command.
"""

import argparse
import sys
from collections.abc import Sequence

from objrec import contract
from objrec.flags import DefaultsHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    """The objrec-predict command line."""
    parser = argparse.ArgumentParser(
        prog="objrec-predict",
        description=__doc__.split("\n\n")[0],
        formatter_class=DefaultsHelpFormatter,
        epilog="Exit status: 0 every file labelled; 2 a usage error or a file that got no "
        "label (after every row is printed); 1 the server could not be reached or failed.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="image files or folders (searched recursively), local or gs://",
    )
    parser.add_argument(
        "--server",
        default=f"localhost:{contract.DEFAULT_GRPC_PORT}",
        help="HOST:PORT or dns:///HOST:PORT",
    )
    parser.add_argument(
        "--model_name",
        default=contract.DEFAULT_MODEL_NAME,
        help="the served model (ModelSpec.name)",
    )
    parser.add_argument(
        "--top_k",
        type=int,
        default=None,
        help="classes listed per image (default: all the model exports)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="a progress bar on stderr; auto: when stderr is a terminal and the results are "
        "not shown there (--evaluate, or rows sent to a file) (default: auto)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--batch_size", type=int, default=16, help="images per request")
    parser.add_argument(
        "--max_concurrent_requests", type=int, default=4, help="requests in flight at once"
    )
    pin = parser.add_mutually_exclusive_group()
    pin.add_argument("--model_version", type=int, default=None, help="pin a version")
    pin.add_argument(
        "--model_version_label",
        default=None,
        help="pin the version a label of the server's model config names, e.g. stable",
    )
    parser.add_argument(
        "--signature_name",
        default=contract.SERVING_SIGNATURE,
        help="the SavedModel signature to call",
    )
    parser.add_argument("--ca_file", default=None, help="PEM CA certificates: use TLS")
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="call metadata, e.g. authorization='Bearer TOKEN' (repeatable)",
    )
    parser.add_argument(
        "--evaluate",
        metavar="FOLDER",
        default=None,
        help="score the served model on FOLDER/<class>/<image>: accuracy, per-class "
        "precision and recall, confusion matrix",
    )
    parser.add_argument(
        "--report",
        metavar="PATH",
        default=None,
        help="with --evaluate, also write a self-contained HTML page there (local or gs://): "
        "per-class table, confusion matrix, most confused pairs, most confidently wrong images",
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="print the model's versions and signatures, predict nothing",
    )
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed, checked objrec-predict command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.paths and not args.status and not args.evaluate:
        parser.error("give at least one image file or folder (or --status, or --evaluate)")
    if args.report and not args.evaluate:
        parser.error("--report needs --evaluate FOLDER: it reports on that folder's images")
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top_k {args.top_k}: ask for at least 1 class")
    if args.batch_size < 1 or args.max_concurrent_requests < 1:
        parser.error("--batch_size and --max_concurrent_requests must be at least 1")
    args.metadata = [parse_metadata(parser, item) for item in args.metadata]
    return args


def parse_metadata(parser: argparse.ArgumentParser, item: str) -> tuple[str, str]:
    """`KEY=VALUE` → (lower-case key, value): gRPC metadata keys are lower case."""
    key, separator, value = item.partition("=")
    if not separator or not key:
        parser.error(f"--metadata {item!r}: write KEY=VALUE")
    return key.strip().lower(), value


def run(args: argparse.Namespace) -> int:
    """Does what the parsed command line asks; returns the exit status."""
    # TensorFlow (behind the gRPC and TF Serving protos) loads here, so that --help and usage
    # errors answer at once.
    from serving.client import commands

    return commands.run(args)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `python -m serving.client` and `objrec-predict`."""
    sys.exit(run(parse_args(argv)))


if __name__ == "__main__":
    main()
