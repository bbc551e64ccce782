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

import grpc

from objrec import contract
from serving.client import evaluation, image_files, report
from serving.client.library import PredictionClient


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The objrec-predict command line."""
    parser = argparse.ArgumentParser(
        prog="objrec-predict",
        description=__doc__.split("\n\n")[0],
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
    parser.add_argument("--model_name", default=contract.DEFAULT_MODEL_NAME)
    parser.add_argument(
        "--top_k",
        type=int,
        default=None,
        help="classes listed per image (default: all the model exports)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--batch_size", type=int, default=16, help="images per request")
    parser.add_argument("--max_concurrent_requests", type=int, default=4)
    pin = parser.add_mutually_exclusive_group()
    pin.add_argument("--model_version", type=int, default=None, help="pin a version")
    pin.add_argument(
        "--model_version_label",
        default=None,
        help="pin the version a label of the server's model config names, e.g. stable",
    )
    parser.add_argument("--signature_name", default=contract.SERVING_SIGNATURE)
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
        "--status",
        action="store_true",
        help="print the model's versions and signatures, predict nothing",
    )
    args = parser.parse_args(argv)
    if not args.paths and not args.status and not args.evaluate:
        parser.error("give at least one image file or folder (or --status, or --evaluate)")
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


def client_from_args(args: argparse.Namespace) -> PredictionClient:
    """The PredictionClient the command line describes."""
    return PredictionClient(
        args.server,
        args.model_name,
        timeout=args.timeout,
        signature_name=args.signature_name,
        version=args.model_version,
        version_label=args.model_version_label,
        batch_size=args.batch_size,
        max_concurrent_requests=args.max_concurrent_requests,
        ca_file=args.ca_file,
        metadata=args.metadata,
    )


def predict_paths(
    client: PredictionClient, paths: Sequence[str], top_k: int | None, as_json: bool
) -> int:
    """Predicts every image file, printing one row (or JSON line) per file as results arrive.

    Returns:
        How many files got no label (unreadable, too large, not an image).
    """
    files = image_files.find(paths)
    if not files:
        raise FileNotFoundError(f"no image files in {' '.join(paths)}")
    formatter = report.Formatter(as_json, path_width=max(len(path) for path in files))
    # Read a few requests' worth of files at a time: bounded memory on any folder size.
    chunk_size = client.batch_size * 8
    failed = 0
    for start in range(0, len(files), chunk_size):
        rows = predict_files(client, files[start : start + chunk_size], top_k)
        if start == 0:  # after the first answer, so an error is not preceded by a header
            print(formatter.header(), end="")
        for row in rows:
            print(formatter.row(row), flush=True)
            failed += row.problem is not None
    if failed:
        print(
            f"objrec-predict: {failed} of {len(files)} files got no label (see their rows)",
            file=sys.stderr,
        )
    return failed


def predict_files(
    client: PredictionClient, paths: Sequence[str], top_k: int | None
) -> list[report.Row]:
    """Rows for `paths`: a prediction, or why a file could not be sent."""
    loaded = [image_files.read(path, client.request_budget()) for path in paths]
    sendable = [image for image in loaded if image.data is not None]
    predictions = iter(client.predict([image.data for image in sendable], top_k))
    return [
        report.Row(image.path, next(predictions) if image.data is not None else None, image.error)
        for image in loaded
    ]


def print_status(client: PredictionClient, as_json: bool) -> None:
    """Prints the model's version states and signatures."""
    versions = client.model_status()
    metadata = client.model_metadata()
    print(report.status_text(client.model_name, versions, metadata, as_json), end="")


def run(args: argparse.Namespace) -> int:
    """Runs the command; returns the exit code (1: transport or server error, 2: usage, or
    files that got no label: every other file's row is printed first)."""
    try:
        with client_from_args(args) as client:
            if args.status:
                print_status(client, args.json)
            elif args.evaluate:
                print(evaluation.evaluate_folder(client, args.evaluate, args.json), end="")
            elif predict_paths(client, args.paths, args.top_k, args.json):
                return 2
    except grpc.RpcError as error:
        print(f"objrec-predict: {describe_rpc_error(error, args)}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f"objrec-predict: {error}", file=sys.stderr)
        return 2
    return 0


def describe_rpc_error(error: grpc.RpcError, args: argparse.Namespace) -> str:
    """One line naming the server, the gRPC code and what to check."""
    # TensorFlow's messages span lines (op name, node); the CLI promises one line.
    code, details = error.code(), " ".join((error.details() or "").split())
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return (
            f"no answer from {args.server} within {args.timeout:g} s: is the model server "
            "up? (raise --timeout for slow models)"
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return (
            f"{args.server} does not serve that model or version: {details} "
            "(check --model_name and --model_version; --status lists the versions)"
        )
    if "version label" in details:
        return (
            f"{args.server} answered {code.name}: {details} "
            "(check --model_version_label against the server's model config)"
        )
    return f"{args.server} answered {code.name}: {details}"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `python -m serving.client` and `objrec-predict`."""
    sys.exit(run(parse_args(argv)))


if __name__ == "__main__":
    main()
