"""Images/s of objrec-batch-predict against objrec-predict through the local server.

    python benchmarks/batch_predict_benchmark.py [--model_base_path JOB_DIR/export/objrec]
                                                 [--images 2000] [--rounds 2]

The same images (Fashion-MNIST PNGs from the Debian package) and the same exported model,
side by side in one run, rounds interleaved so that machine noise hits both alike:

    batch     `objrec-batch-predict --input FOLDER` (Beam in process, RunInference calling
              serving_default in batches of --batch_size); its wall time includes starting
              Beam and loading the model
    predict   `objrec-predict --json FOLDER` against `objrec-serve`, started and warmed up
              beforehand (not timed): the client's gRPC batches through the server
    cold      the same from nothing, as a user classifies a folder without a server running:
              a fresh `objrec-serve` started until it serves, then `objrec-predict`

The batch job and the client run as the console scripts a user types, the server as
`python -m serving.dev_server` (objrec-serve's module, load_test.ServerProcess). Prints
images/s of each round and the ratio of the best rounds (target: batch >= 1x predict). Each
round also runs the batch job on STARTUP_IMAGES images: its wall time is the job's fixed
start-up (imports, model load, first call), and the difference gives the batch job's rate once
started; from the two, the folder size at which the batch job draws level. The target is
against the warm client; the cold row is what each costs a user who starts from nothing.
Without --model_base_path a tiny real objrec model is trained first (load_test.tiny_export,
32 px).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load_test  # noqa: E402

from objrec.testing import free_port  # noqa: E402
from preprocessing import sample_data  # noqa: E402

BIN = os.path.dirname(sys.executable)
TARGET_RATIO = 1.0
STARTUP_IMAGES = 10


def timed(argv: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def cold_predict(model: str, predict_flags: list[str], images: str, log: str) -> float:
    """Seconds from starting a fresh server to objrec-predict's last answer."""
    server = load_test.ServerProcess(model, free_port(), log)
    start = time.monotonic()
    try:
        server.start(timeout=300)
        subprocess.run([os.path.join(BIN, "objrec-predict"), "--server", f"127.0.0.1:{server.port}",
                        *predict_flags, images], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)  # fmt: skip
        return time.monotonic() - start
    finally:
        server.stop()


def break_even(startup: float, started_rate: float, predict_rate: float) -> str:
    """The folder size from which the batch job, start-up included, beats the warm client:
    startup + n / started_rate = n / predict_rate."""
    if started_rate <= predict_rate:
        return "once started, the batch job is not faster than the warm client: no break-even"
    images = startup / (1 / predict_rate - 1 / started_rate)
    return (
        f"break-even: from about {images:,.0f} images the batch job ({startup:.1f} s start-up, "
        f"then {started_rate:.1f} images/s) is ahead of the warm client ({predict_rate:.1f} "
        "images/s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", default=None, help="default: train a tiny model")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32, help="both commands' batch")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="objrec-batch-benchmark-")
    model = args.model_base_path or load_test.tiny_export(work)
    images = os.path.join(work, "photos")  # tiny_export's own images are in work/images
    sample_data.write_sample_folder(images, per_class=args.images // 10, source="test")
    count = sum(len(files) for _, _, files in os.walk(images))
    few = os.path.join(work, "few")
    os.makedirs(few)
    first_class = os.path.join(images, sample_data.CLASS_NAMES[0])
    for name in sorted(os.listdir(first_class))[:STARTUP_IMAGES]:
        os.link(os.path.join(first_class, name), os.path.join(few, name))
    model = os.path.abspath(model)
    log = os.path.join(work, "servers.log")
    server = load_test.ServerProcess(model, free_port(), log)
    address = f"127.0.0.1:{server.port}"
    predict_flags = ["--json", "--batch_size", str(args.batch_size)]
    try:
        server.start(timeout=300)
        predict = [os.path.join(BIN, "objrec-predict"), "--server", address, *predict_flags]
        timed([*predict, os.path.join(images, sample_data.CLASS_NAMES[0])])  # warm-up
        rates = {"batch": [], "predict": [], "started": [], "cold": []}
        startups = []
        print(f"{count} images; model {model}")
        for round_index in range(args.rounds):
            output = os.path.join(work, f"predicted-{round_index}")
            batch = [os.path.join(BIN, "objrec-batch-predict"), "--model_dir", model,
                     "--input", images, "--output", output,
                     "--batch_size", str(args.batch_size)]  # fmt: skip
            startup = timed([*batch[:3], "--input", few, "--output", f"{output}-few"])
            startups.append(startup)
            for name, argv in (("batch", batch), ("predict", [*predict, images])):
                seconds = timed(argv)
                rates[name].append(count / seconds)
                print(f"round {round_index + 1} {name:<8} {seconds:7.1f} s "
                      f"{count / seconds:8.1f} images/s", flush=True)  # fmt: skip
                if name == "batch":
                    started = (count - STARTUP_IMAGES) / max(seconds - startup, 1e-3)
                    rates["started"].append(started)
                    print(
                        f"round {round_index + 1} batch start-up {startup:.1f} s "
                        f"({STARTUP_IMAGES} images); once started {started:.1f} images/s"
                    )
            seconds = cold_predict(model, predict_flags, images, log)
            rates["cold"].append(count / seconds)
            shown = f"{seconds:7.1f} s {count / seconds:8.1f} images/s"
            print(f"round {round_index + 1} cold     {shown} (server start included)", flush=True)
    finally:
        server.stop()
    ratio = max(rates["batch"]) / max(rates["predict"])
    print(break_even(min(startups), max(rates["started"]), max(rates["predict"])))
    print(
        f"best: batch {max(rates['batch']):.1f} images/s, predict "
        f"{max(rates['predict']):.1f} images/s; ratio {ratio:.2f}x (target >= {TARGET_RATIO}x); "
        f"batch once started {max(rates['started']):.1f} images/s, "
        f"{max(rates['started']) / max(rates['predict']):.2f}x; from nothing: batch against "
        f"server start and predict {max(rates['batch']) / max(rates['cold']):.2f}x"
    )
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
