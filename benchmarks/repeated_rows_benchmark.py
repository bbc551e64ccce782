"""Time and memory of preprocessing a manifest whose rows all name one file.

    python benchmarks/repeated_rows_benchmark.py [--rows 1000000]

A careless (or hostile) manifest can list one image a million times. The accounting rule
still holds (one record, every other row a duplicate), and the cost must follow the unique
contents, not the rows: the file is read and decoded once, and no step holds a copy of the
stored JPEG per row. Each job runs in a child process (`objrec-preprocess`, in process Beam)
so that its peak resident memory is its own. Side by side in one run: the same manifest
with `--rows / 100` rows, to show how time and memory grow with the rows.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from PIL import Image

from objrec import contract

BIN = pathlib.Path(sys.executable).parent


def write_manifest(work: pathlib.Path, rows: int) -> pathlib.Path:
    """`rows` rows naming one image, in the train split (a job without a training example
    fails, and a split from the content hash could be any)."""
    image = work / "images" / "cat" / "x.png"
    if not image.exists():
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.effect_noise((32, 32), 64).convert("RGB").save(image)
    manifest = work / f"manifest-{rows}.csv"
    with open(manifest, "w") as file:
        file.write("uri,label,split\n")
        file.writelines(f"{image},cat,train\n" for _ in range(rows))
    return manifest


def run_job(manifest: pathlib.Path, output: pathlib.Path) -> tuple[float, float, dict]:
    """(wall seconds, peak RSS in MiB, metadata.json) of one preprocessing job."""
    start = time.monotonic()
    with subprocess.Popen(
        [str(BIN / "objrec-preprocess"), "--input", str(manifest), "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    if process.returncode:
        raise RuntimeError(f"objrec-preprocess exited {process.returncode} on {manifest}")
    metadata = json.loads((output / "metadata.json").read_text())
    return seconds, usage.ru_maxrss / 1024, metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"{'rows':>10} {'wall':>8} {'peak RSS':>10} {'records':>8} {'duplicates':>11}")
    with tempfile.TemporaryDirectory(prefix="objrec-repeated-") as work:
        work = pathlib.Path(work)
        for rows in (args.rows // 100, args.rows):
            manifest = write_manifest(work, rows)
            seconds, peak_mib, metadata = run_job(manifest, work / f"out-{rows}")
            splits = metadata[contract.META_SPLITS].values()
            records = sum(split[contract.META_NUM_EXAMPLES] for split in splits)
            print(f"{rows:>10,} {seconds:>7.0f}s {peak_mib:>8.0f} MiB {records:>8,} "
                  f"{metadata[contract.META_NUM_DUPLICATES]:>11,}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
