"""Share of the serving graph spent decoding, and images/s by batch size, in process and gRPC.

    python benchmarks/serving_decode_benchmark.py [--images 240] [--min_rounds 4] \
        [--max_rounds 40] [--batch_sizes 1,8,16,32] [--num_classes 10]

Builds the trainer's default model (`trainer.model.build_model`: ResNet50 and its head at the
224-pixel input of a dataset stored at 256, weights=None since nothing is downloaded) and
exports it as the trainer does (`objrec.savedmodel.signatures`: stored 256 px `shorter_side`,
the JPEG q90 round trip of storage, the 50 M pixel limit). Two exports of the same weights
differ only in their decode: images of a batch decoded `PARALLEL_DECODES` at once (the
current graph) or one after another (`num_parallel_calls=None`, the previous graph).

Each export is loaded with `SavedModelServable` (the TF1 Session TF Serving also runs), and
for every batch size these are timed, interleaved round by round so machine noise hits all:

    full parallel     `serving_default` on 640x480 JPEG bytes: decode, preprocessing, model
    full sequential   the same, with the previous one-at-a-time decode
    images            the `images` signature on uint8 pixels already at 224x224: the model
    decode parallel   decode and preprocessing alone (`decode_raw_batch` in its own Session)
    decode sequential the same, one at a time
    grpc              PredictionService.Predict over 127.0.0.1 to an in-process ModelServer
                      serving the parallel export, JPEG bytes as the objrec client sends them

The share before the model is (full - images) / full of the medians; the decode-alone share
(decode / full) measures the same part directly. Target: at most 15% at batch 16. The JPEGs
are matplotlib's sample `grace_hopper.jpg`, cropped to 4:3 and resized to 640x480, in a few
variants (mirrored, brighter, darker). Client and server share this process and its cores.
Prints figures only; nothing is asserted. About 4 minutes on 2 idle CPU cores.
"""

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

from objrec import contract  # noqa: E402
from objrec.savedmodel import decode, signatures  # noqa: E402
from preprocessing.config import DEFAULT_JPEG_QUALITY  # noqa: E402
from serving.dev_server.config import ServerConfig  # noqa: E402
from serving.dev_server.servable import SavedModelServable  # noqa: E402
from serving.dev_server.server import ModelServer  # noqa: E402
from trainer import model as trainer_model  # noqa: E402
from trainer import recipes  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serving_benchmark  # noqa: E402

TARGET_SHARE = 0.15
TARGET_BATCH_SIZE = 16
PHOTO_SIZE = (640, 480)
PATHS = (
    "full parallel",
    "full sequential",
    "images",
    "decode parallel",
    "decode sequential",
    "grpc",
)


@dataclasses.dataclass(frozen=True)
class Export:
    """The serving graph as the trainer's defaults export it."""

    image_size: int
    resize_mode: str
    input_size: int
    max_pixels: int
    jpeg_quality: int


def default_export() -> Export:
    """The trainer's defaults for a dataset preprocessed with its own defaults."""
    image_size = contract.DEFAULT_IMAGE_SIZE
    max_pixels = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    return Export(
        image_size=image_size,
        resize_mode=contract.DEFAULT_RESIZE_MODE,
        input_size=recipes.default_input_size(image_size),
        max_pixels=max_pixels["max_pixels"],
        jpeg_quality=DEFAULT_JPEG_QUALITY,
    )


@contextlib.contextmanager
def parallel_decodes(value: int | None) -> Iterator[None]:
    """Graphs traced inside decode `value` images at once (None: the sequential map)."""
    saved = decode.PARALLEL_DECODES
    decode.PARALLEL_DECODES = value
    try:
        yield
    finally:
        decode.PARALLEL_DECODES = saved


def photo_variants() -> list[bytes]:
    """640x480 JPEGs (q90) of the sample photo: as is, mirrored, brighter, darker."""
    image = serving_benchmark.photo(PHOTO_SIZE)
    variants = [
        image,
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        ImageEnhance.Brightness(image).enhance(1.25),
        ImageEnhance.Brightness(image).enhance(0.8),
    ]
    return [serving_benchmark.jpeg_bytes(variant) for variant in variants]


def write_exports(work_dir: str, export: Export, num_classes: int) -> dict[str, str]:
    """Exports one weights-None model twice; returns {"parallel"|"sequential": base path}."""
    model = trainer_model.build_model(num_classes, export.input_size, "none")
    labels = tuple(f"class_{i}" for i in range(num_classes))
    functions = signatures.ServingFunctions(
        model,
        labels,
        export.image_size,
        export.resize_mode,
        export.input_size,
        export.max_pixels,
        export.jpeg_quality,
    )
    base_paths = {}
    for name, value in (("parallel", decode.PARALLEL_DECODES), ("sequential", None)):
        base_paths[name] = os.path.join(work_dir, name)
        with parallel_decodes(value):
            signatures.write_saved_model(functions, os.path.join(base_paths[name], "1"))
    return base_paths


class DecodeOnly:
    """`decode_raw_batch` alone in its own Session: the part of the graph before the model.

    Traced by tf.function as the export's signatures are (in a plain v1 graph, tensor `==`
    is Python identity and the header checks would not build), then run by a Session.
    """

    def __init__(self, export: Export, value: int | None):
        def decode_batch(image_bytes):
            return decode.decode_raw_batch(
                image_bytes,
                export.image_size,
                export.resize_mode,
                export.input_size,
                export.max_pixels,
                export.jpeg_quality,
            )

        with parallel_decodes(value):
            traced = tf.function(decode_batch).get_concrete_function(
                tf.TensorSpec([None], tf.string)
            )
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(traced.graph.as_graph_def(), name="")
        self._bytes = traced.inputs[0].name
        self._outputs = [tensor.name for tensor in traced.outputs]
        self._session = tf.compat.v1.Session(graph=graph)

    def __call__(self, image_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images, valid) of a batch of encoded files."""
        return self._session.run(self._outputs, {self._bytes: image_bytes})

    def close(self) -> None:
        self._session.close()


def rounds_for(batch_size: int, args: argparse.Namespace) -> int:
    """About `args.images` images per path, within the round limits."""
    return min(args.max_rounds, max(args.min_rounds, math.ceil(args.images / batch_size)))


def time_interleaved(paths: dict[str, Callable[[], object]], rounds: int) -> dict:
    """Seconds per call of each path; one untimed round first, then every round calls each
    path once, its order rotated by one each round so no path always follows the same one."""
    for call in paths.values():
        call()
    names = list(paths)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            paths[name]()
            seconds[name].append(time.perf_counter() - started)
    return seconds


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """Medians of one batch size."""

    batch_size: int
    rounds: int
    seconds: dict[str, list[float]]

    def median(self, path: str) -> float:
        """Median seconds of one call."""
        return float(np.median(self.seconds[path]))

    def ms_per_image(self, path: str) -> float:
        return self.median(path) * 1000.0 / self.batch_size

    def images_per_second(self, path: str) -> float:
        return self.batch_size / self.median(path)

    def share_before_model(self, variant: str) -> float:
        """(full - images) / full: the graph's time before the model."""
        full = self.median(f"full {variant}")
        return (full - self.median("images")) / full

    def decode_share(self, variant: str) -> float:
        """Decode alone over the full graph: the same share, measured directly."""
        return self.median(f"decode {variant}") / self.median(f"full {variant}")


def time_batch_size(
    batch_size: int,
    files: list[bytes],
    servables: dict[str, SavedModelServable],
    decoders: dict[str, DecodeOnly],
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
    rounds: int,
) -> BatchResult:
    """All paths at one batch size, interleaved."""
    encoded = np.array([files[i % len(files)] for i in range(batch_size)], dtype=object)
    # The `images` signature gets the very pixels the decode makes of those files.
    pixels = np.round(decoders["parallel"](encoded)[0]).astype(np.uint8)
    bytes_input = {contract.INPUT_IMAGE_BYTES: encoded}
    request = serving_benchmark.predict_request(
        contract.SERVING_SIGNATURE, contract.INPUT_IMAGE_BYTES, encoded
    )
    paths = {
        "full parallel": lambda: servables["parallel"].run_signature(
            contract.SERVING_SIGNATURE, bytes_input
        ),
        "full sequential": lambda: servables["sequential"].run_signature(
            contract.SERVING_SIGNATURE, bytes_input
        ),
        "images": lambda: servables["parallel"].run_signature(
            contract.PIXELS_SIGNATURE, {contract.INPUT_IMAGES: pixels}
        ),
        "decode parallel": lambda: decoders["parallel"](encoded),
        "decode sequential": lambda: decoders["sequential"](encoded),
        "grpc": lambda: stub.Predict(request, timeout=600),
    }
    return BatchResult(batch_size, rounds, time_interleaved(paths, rounds))


def print_results(results: Sequence[BatchResult], export: Export, files, args) -> None:
    sizes = ", ".join(f"{len(data) // 1000}" for data in files)
    print(
        f"objrec serving decode benchmark: ResNet50 (weights=None), {args.num_classes} classes, "
        f"{export.input_size}-pixel input; export as the trainer writes it (stored "
        f"{export.image_size} px {export.resize_mode}, JPEG q{export.jpeg_quality} round trip, "
        f"max_pixels {export.max_pixels:,}); PARALLEL_DECODES = {decode.PARALLEL_DECODES}"
    )
    print(
        f"inputs: {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEGs of grace_hopper.jpg, {len(files)} "
        f"variants ({sizes} KB); {os.cpu_count()} CPU cores; TensorFlow {tf.__version__}; "
        "medians of interleaved calls; client and server in one process"
    )
    print("\nms per image (median call / batch size):")
    print(f"  {'batch':>5} {'rounds':>6} " + " ".join(f"{path:>17}" for path in PATHS))
    for result in results:
        cells = " ".join(f"{result.ms_per_image(path):17.2f}" for path in PATHS)
        print(f"  {result.batch_size:>5} {result.rounds:>6} {cells}")

    print("\nimages/s:")
    print(
        f"  {'batch':>5} {'in process (full parallel)':>27} {'in process (images)':>20} "
        f"{'gRPC (serving_default)':>23}"
    )
    for result in results:
        print(
            f"  {result.batch_size:>5} {result.images_per_second('full parallel'):27.2f} "
            f"{result.images_per_second('images'):20.2f} {result.images_per_second('grpc'):23.2f}"
        )

    print("\nshare of the full graph before the model, parallel decode vs sequential:")
    print(
        f"  {'batch':>5} {'(full-images)/full par':>23} {'seq':>7} {'decode/full par':>16} "
        f"{'seq':>7} {'decode seq/par':>15} {'full seq/par':>13}"
    )
    for result in results:
        decode_speedup = result.median("decode sequential") / result.median("decode parallel")
        full_speedup = result.median("full sequential") / result.median("full parallel")
        print(
            f"  {result.batch_size:>5} {result.share_before_model('parallel'):23.1%} "
            f"{result.share_before_model('sequential'):7.1%} "
            f"{result.decode_share('parallel'):16.1%} {result.decode_share('sequential'):7.1%} "
            f"{decode_speedup:14.2f}x {full_speedup:12.2f}x"
        )

    target = next((r for r in results if r.batch_size == TARGET_BATCH_SIZE), None)
    if target is not None:
        share = target.share_before_model("parallel")
        verdict = "met" if share <= TARGET_SHARE else "MISSED"
        print(
            f"\nbatch {TARGET_BATCH_SIZE}: full graph {target.ms_per_image('full parallel'):.1f} "
            f"ms/image, model part (images) {target.ms_per_image('images'):.1f} ms/image, "
            f"before the model {share:.1%} (decode alone: {target.decode_share('parallel'):.1%}; "
            f"target <= {TARGET_SHARE:.0%}: {verdict}); sequential decode "
            f"{target.share_before_model('sequential'):.1%} "
            f"(decode alone: {target.decode_share('sequential'):.1%})"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=240, help="images per path per batch size")
    parser.add_argument("--min_rounds", type=int, default=4, help="timed rounds at least")
    parser.add_argument("--max_rounds", type=int, default=40, help="timed rounds at most")
    parser.add_argument(
        "--batch_sizes",
        type=lambda text: [int(size) for size in text.split(",")],
        default=[1, 8, 16, 32],
        help="comma-separated",
    )
    parser.add_argument("--num_classes", type=int, default=10, help="of the model's head")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Exports, loads, times every batch size and prints the figures."""
    args = parse_args(argv)
    export = default_export()
    files = photo_variants()
    with tempfile.TemporaryDirectory(prefix="objrec-decode-bench-") as work_dir:
        base_paths = write_exports(work_dir, export, args.num_classes)
        servables = {
            name: SavedModelServable(contract.DEFAULT_MODEL_NAME, 1, os.path.join(path, "1"))
            for name, path in base_paths.items()
        }
        decoders = {
            "parallel": DecodeOnly(export, decode.PARALLEL_DECODES),
            "sequential": DecodeOnly(export, None),
        }
        config = ServerConfig(model_base_path=base_paths["parallel"], port=0, host="127.0.0.1")
        with (
            ModelServer(config) as server,
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        ):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            results = [
                time_batch_size(size, files, servables, decoders, stub, rounds_for(size, args))
                for size in args.batch_sizes
            ]
        for resource in (*servables.values(), *decoders.values()):
            resource.close()
    print_results(results, export, files, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
