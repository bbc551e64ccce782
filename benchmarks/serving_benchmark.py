"""Batch-1 latency of the DEVELOPMENT server (serving.dev_server, not TF Serving), request sizes.

    python benchmarks/serving_benchmark.py [--model_base_path JOB_DIR/export/objrec] [--calls 200]

Part 1, latency. Starts an in-process ModelServer on 127.0.0.1 and times batch-1 calls of each
signature three ways, all on the same loaded servable object (one Session):

    direct   servable.run_signature: Session.run on NumPy arrays, no protos (the baseline)
    predict  servable.predict(PredictRequest): + request checks and TensorProto conversion
    grpc     PredictionService.Predict over loopback gRPC (raw stub): + serialization,
             HTTP/2, the server's thread hop

Calls are interleaved (direct, predict, grpc, direct, ...) after a warm-up, so machine noise
hits every path alike. The ratio p50(grpc) / p50(direct) has a target of 1.15 or less. Client
and server share this process (one GIL) and 2 CPU cores: a conservative setting for gRPC.

Part 2, request bytes: serialized PredictRequest sizes of one photo sent as JPEG (the
`serving_default` contract) versus as a float32 tensor, at 224x224 and 1000x750. The photo is
matplotlib's sample `grace_hopper.jpg` (512x600), cropped to 4:3 and resized where needed.

Without `--model_base_path` a tiny real objrec model is trained first (see load_test.py).
Exits 1 when a ratio misses the target.
"""

import argparse
import dataclasses
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import matplotlib.cbook  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from objrec import contract  # noqa: E402
from objrec.savedmodel import tensors  # noqa: E402
from serving.dev_server.config import ServerConfig  # noqa: E402
from serving.dev_server.servable import SavedModelServable  # noqa: E402
from serving.dev_server.server import ModelServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load_test  # noqa: E402

TARGET_RATIO = 1.15
PHOTO_SIZES = ((224, 224), (1000, 750))
JPEG_QUALITY = 90


@dataclasses.dataclass(frozen=True)
class Timings:
    """Per-call seconds of each path, for one signature."""

    signature_name: str
    input_text: str
    seconds: dict[str, list[float]]

    def p(self, path: str, percentile: float) -> float:
        """The `percentile` of `path`'s latencies, in milliseconds."""
        return float(np.percentile(self.seconds[path], percentile)) * 1000.0

    @property
    def ratio(self) -> float:
        """p50 through gRPC over p50 of the direct Session call."""
        return self.p("grpc", 50) / self.p("direct", 50)


def photo(size: tuple[int, int]) -> Image.Image:
    """The sample photo as RGB at `size` (width, height), center-cropped to its aspect first."""
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = Image.open(path).convert("RGB")
    width, height = size
    crop_height = min(image.height, round(image.width * height / width))
    crop_width = min(image.width, round(crop_height * width / height))
    left, top = (image.width - crop_width) // 2, (image.height - crop_height) // 2
    image = image.crop((left, top, left + crop_width, top + crop_height))
    return image.resize(size, Image.Resampling.BICUBIC)


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def predict_request(
    signature_name: str, alias: str, value: np.ndarray
) -> predict_pb2.PredictRequest:
    """A Predict request for one input, written as clients write it.

    Strings in `string_val` (as the objrec client sends image bytes); numbers packed in
    `tensor_content`, as `tf.make_tensor_proto` writes them in TF Serving's example clients.
    """
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(
            name=contract.DEFAULT_MODEL_NAME, signature_name=signature_name
        )
    )
    request.inputs[alias].CopyFrom(tensors.to_compact_tensor_proto(value))
    return request


def benchmark_inputs(servable: SavedModelServable) -> list[tuple[str, str, str, np.ndarray]]:
    """(signature, input alias, description, batch-1 value) for both signatures."""
    image = photo(PHOTO_SIZES[0])
    encoded = np.array([jpeg_bytes(image)], dtype=object)
    pixels_info = servable.signature_defs[contract.PIXELS_SIGNATURE].inputs[contract.INPUT_IMAGES]
    input_size = pixels_info.tensor_shape.dim[1].size
    pixels = np.asarray(image.resize((input_size, input_size)), np.uint8)[np.newaxis]
    return [
        (contract.PIXELS_SIGNATURE, contract.INPUT_IMAGES,
         f"uint8 pixels [1, {input_size}, {input_size}, 3]", pixels),
        (contract.SERVING_SIGNATURE, contract.INPUT_IMAGE_BYTES,
         f"one {PHOTO_SIZES[0][0]}x{PHOTO_SIZES[0][1]} JPEG, {len(encoded[0])} bytes", encoded),
    ]  # fmt: skip


def time_paths(paths: dict[str, Callable[[], object]], calls: int, warmup: int) -> dict:
    """Interleaved timings: each round calls every path once."""
    for _ in range(warmup):
        for call in paths.values():
            call()
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(calls):
        for name, call in paths.items():
            started = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def time_signature(
    server: ModelServer, stub, signature: tuple[str, str, str, np.ndarray], args
) -> Timings:
    """Timings of the three paths for one signature and input."""
    signature_name, alias, text, value = signature
    request = predict_request(signature_name, alias, value)
    servable = server.core.servable(request.model_spec)
    paths = {
        "direct": lambda: servable.run_signature(signature_name, {alias: value}),
        "predict": lambda: servable.predict(request),
        "grpc": lambda: stub.Predict(request, timeout=60),
    }
    return Timings(signature_name, text, time_paths(paths, args.calls, args.warmup))


def request_sizes(size: tuple[int, int]) -> dict[str, int]:
    """Serialized PredictRequest bytes of one photo: JPEG, float32 tensor, uint8 tensor."""
    image = photo(size)
    pixels = np.asarray(image, np.uint8)[np.newaxis]
    encoded = np.array([jpeg_bytes(image)], dtype=object)
    return {
        f"JPEG q{JPEG_QUALITY} (serving_default)": predict_request(
            contract.SERVING_SIGNATURE, contract.INPUT_IMAGE_BYTES, encoded
        ).ByteSize(),
        "float32 tensor": predict_request(
            "", contract.INPUT_IMAGES, pixels.astype(np.float32)
        ).ByteSize(),
        "uint8 tensor": predict_request("", contract.INPUT_IMAGES, pixels).ByteSize(),
    }


def print_timings(all_timings: Sequence[Timings], args) -> None:
    print(
        "objrec serving benchmark - the DEVELOPMENT server (serving.dev_server, Python gRPC), "
        "NOT TF Serving"
    )
    print(
        f"batch 1; {args.calls} calls per path, interleaved, after {args.warmup} warm-up "
        f"rounds; {os.cpu_count()} CPU cores; client and server in one process"
    )
    for timings in all_timings:
        print(f"\nsignature {timings.signature_name!r}, {timings.input_text}:")
        for path in ("direct", "predict", "grpc"):
            print(
                f"  {path:<8} p50 {timings.p(path, 50):8.2f} ms   "
                f"p90 {timings.p(path, 90):8.2f} ms   p99 {timings.p(path, 99):8.2f} ms"
            )
        verdict = "met" if timings.ratio <= TARGET_RATIO else "MISSED"
        overhead = timings.p("grpc", 50) - timings.p("direct", 50)
        print(
            f"  ratio grpc/direct (p50): {timings.ratio:.3f}, +{overhead:.2f} ms "
            f"(target <= {TARGET_RATIO}: {verdict})"
        )


def print_sizes() -> None:
    print("\nserialized PredictRequest bytes, batch 1:")
    for size in PHOTO_SIZES:
        sizes = request_sizes(size)
        jpeg = next(iter(sizes.values()))
        cells = ", ".join(f"{name} {count:,}" for name, count in sizes.items())
        ratio = sizes["float32 tensor"] / jpeg
        print(f"  {size[0]}x{size[1]}: {cells}  (float32 / JPEG = {ratio:.0f}x)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", default=None, help="default: train a tiny model")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per path")
    parser.add_argument("--warmup", type=int, default=20, help="untimed rounds first")
    # 224, the trainer's default: the ratio measures the server's fixed cost (~1.5-2 ms of
    # Python gRPC on 2 shared cores) against a real model call; a 32-pixel toy model (6-8 ms)
    # makes that fixed cost look 3x larger (measured ratios 1.18-1.23 there, 1.06-1.08 here).
    parser.add_argument(
        "--input_size", type=int, default=224, help="of the tiny model trained without a path"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs both parts; returns 1 if a ratio misses the target."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="objrec-bench-") as work_dir:
        model_base_path = args.model_base_path or load_test.tiny_export(work_dir, args.input_size)
        config = ServerConfig(
            model_base_path, port=0, host="127.0.0.1", file_system_poll_wait_seconds=0
        )
        with (
            ModelServer(config) as server,
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        ):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            servable = server.core.servable(model_pb2.ModelSpec(name=config.model_name))
            all_timings = [
                time_signature(server, stub, signature, args)
                for signature in benchmark_inputs(servable)
            ]
    print_timings(all_timings, args)
    print_sizes()
    return 0 if all(timings.ratio <= TARGET_RATIO for timings in all_timings) else 1


if __name__ == "__main__":
    sys.exit(main())
