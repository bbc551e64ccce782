"""What objrec-predict does once its command line is parsed: predict, evaluate, status."""

import argparse
import sys
from collections.abc import Sequence

import grpc

from serving.client import evaluation, image_files, progress, report
from serving.client.library import PredictionClient


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
    client: PredictionClient,
    paths: Sequence[str],
    top_k: int | None,
    as_json: bool,
    progress_mode: str = "off",
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
    shown = progress.wanted(progress_mode, results_on_terminal=sys.stdout.isatty())
    with progress.progress_bar(len(files), "predicting", shown) as advance:
        for start in range(0, len(files), chunk_size):
            rows = predict_files(client, files[start : start + chunk_size], top_k)
            if start == 0:  # after the first answer, so an error is not preceded by a header
                print(formatter.header(), end="")
            for row in rows:
                print(formatter.row(row), flush=True)
                failed += row.problem is not None
            advance(len(rows))
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
                shown = progress.wanted(args.progress, results_on_terminal=False)
                text = evaluation.evaluate_folder(
                    client, args.evaluate, args.json, shown, report_path=args.report
                )
                print(text, end="")
            elif predict_paths(client, args.paths, args.top_k, args.json, args.progress):
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
