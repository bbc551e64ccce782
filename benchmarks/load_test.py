"""Load test of the development server (`serving.dev_server`, not TF Serving), restart included.

    python benchmarks/load_test.py [--model_base_path JOB_DIR/export/objrec] \
        [--clients 8] [--requests 500] [--restarts 1]

Starts `python -m serving.dev_server` on 127.0.0.1 (loopback only) as a subprocess, then runs
`--clients` threads, each with its own PredictionClient (its own channel), sending `--requests`
Predict calls in all, one real image each (Fashion-MNIST test photos, PNG). When half the
requests are done it stops the server with SIGTERM and starts it again on the same port; the
clients' retries (UNAVAILABLE retry policy + wait_for_ready + a deadline per call) must carry
every request through. Prints p50/p99 latency; exits 1 if any request failed or took longer
than its deadline. Bounded: `--requests` calls, at most `--max_seconds` of wall time.

Without `--model_base_path` it first trains and exports a tiny real objrec model (Fashion-MNIST
sample folders → the Beam job → trainer at 32×32 with weights=None; about a minute here).
Measured on 2 CPU cores shared by server and clients: latencies are this machine's, not a
production figure.
"""

import argparse
import dataclasses
import functools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from objrec import contract  # noqa: E402
from objrec.testing import TINY_TRAINING_FLAGS, free_port  # noqa: E402
from serving.client import PredictionClient  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A restart here takes 5-10 s (TensorFlow import, model load): the deadline leaves room.
DEFAULT_TIMEOUT_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One request: when it started, how long it took, why it failed (None: it succeeded)."""

    started: float
    seconds: float
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class Restart:
    """One SIGTERM-and-start: when, how the old server exited, how long until serving again."""

    after_requests: int
    exit_code: int
    sigterm_at: float
    stop_seconds: float
    serving_at: float

    @property
    def down_seconds(self) -> float:
        """From SIGTERM to the new server answering its health check."""
        return self.serving_at - self.sigterm_at

    def overlaps(self, outcome: Outcome) -> bool:
        """Whether a request was running at some point between SIGTERM and serving again."""
        return outcome.started < self.serving_at and outcome.started + outcome.seconds > (
            self.sigterm_at
        )


def tiny_export(work_dir: str, input_size: int = 32) -> str:
    """Trains and exports a tiny real objrec model; returns its model base path.

    80 Fashion-MNIST photos, one epoch per phase, ResNet50 from scratch at `input_size`
    (about 20 s at 32; minutes at 224, where ResNet50 trains at 1.5 images/s here).
    """
    from preprocessing import pipeline, sample_data
    from trainer import flags as train_flags
    from trainer import job

    images = os.path.join(work_dir, "images")
    sample_data.write_sample_folder(images, per_class=8)
    data_dir = os.path.join(work_dir, "dataset")
    stored_size = str(input_size)
    pipeline.run(["--input", images, "--output", data_dir, "--image_size", stored_size])
    job_dir = os.path.join(work_dir, "job")
    flags = ["--data_dir", data_dir, "--job_dir", job_dir, "--input_size", str(input_size)]
    config = train_flags.parse_flags([*TINY_TRAINING_FLAGS, *flags])
    job.train_and_evaluate(config)
    return os.path.join(job_dir, contract.EXPORT_DIR, contract.DEFAULT_MODEL_NAME)


def sample_images(work_dir: str, count: int = 20) -> list[bytes]:
    """Real photos to send: Fashion-MNIST test images as PNG files' bytes."""
    from preprocessing import sample_data

    folder = os.path.join(work_dir, "requests")
    sample_data.write_sample_folder(folder, per_class=max(1, count // 10), source="test")
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)
    images = []
    for path in paths[:count]:
        with open(path, "rb") as file:
            images.append(file.read())
    return images


class ServerProcess:
    """`python -m serving.dev_server` on 127.0.0.1:port, started and stopped like a pod."""

    def __init__(self, model_base_path: str, port: int, log_path: str):
        self.model_base_path = model_base_path
        self.port = port
        self.log_path = log_path
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> float:
        """Starts the server and waits until its health service says SERVING; returns seconds."""
        started = time.perf_counter()
        command = [
            sys.executable, "-m", "serving.dev_server", "--model_base_path", self.model_base_path,
            "--port", str(self.port), "--host", "127.0.0.1", "--grace_period_seconds", "10",
            "--enable_grpc_healthcheck_service",
        ]  # fmt: skip
        with open(self.log_path, "a") as log:
            self._process = subprocess.Popen(
                command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
        wait_until_serving(f"127.0.0.1:{self.port}", self._process, timeout)
        return time.perf_counter() - started

    def stop(self, timeout: float = 60.0) -> tuple[int, float]:
        """SIGTERM, then waits for the graceful exit; returns (exit code, seconds)."""
        started = time.perf_counter()
        if self._process is None:
            return 0, 0.0
        self._process.send_signal(signal.SIGTERM)
        try:
            exit_code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            exit_code = self._process.wait()
        return exit_code, time.perf_counter() - started

    def kill(self) -> None:
        """Kills the server if it is still running (clean-up after a failure)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def wait_until_serving(address: str, process: subprocess.Popen, timeout: float) -> None:
    """Polls the gRPC health service until SERVING.

    Raises:
        RuntimeError: the server exited or was not serving within `timeout`.
    """
    deadline = time.monotonic() + timeout
    request = health_pb2.HealthCheckRequest(service="")
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with code {process.returncode}")
            try:
                status = health.Check(request, timeout=1).status
            except grpc.RpcError:
                status = None  # not listening yet
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.1)
    raise RuntimeError(f"the server at {address} was not serving within {timeout:.0f} s")


class LoadRun:
    """Clients sending requests while a controller restarts the server in between."""

    def __init__(self, server: ServerProcess, images: Sequence[bytes], args: argparse.Namespace):
        self.server = server
        self.images = images
        self.args = args
        self.outcomes: list[Outcome] = []
        self.restarts: list[Restart] = []
        self.restart_error: str | None = None
        self.done = threading.Condition()
        self.stop = threading.Event()

    def run(self) -> float:
        """Runs every client to the end; returns the wall time in seconds."""
        started = time.perf_counter()
        shares = np.array_split(np.arange(self.args.requests), self.args.clients)
        clients = [
            threading.Thread(target=self.client, args=(len(share), index), name=f"client-{index}")
            for index, share in enumerate(shares)
        ]
        controller = threading.Thread(target=self.restart_server, name="controller")
        for thread in (*clients, controller):
            thread.start()
        for thread in clients:
            thread.join(timeout=max(0.0, started + self.args.max_seconds - time.perf_counter()))
        self.stop.set()  # over the time limit: the remaining requests count as failed
        with self.done:
            self.done.notify_all()
        controller.join()
        for thread in clients:
            thread.join()
        return time.perf_counter() - started

    def client(self, count: int, index: int) -> None:
        """One user: its own channel, `count` Predict calls one after another."""
        address = f"127.0.0.1:{self.server.port}"
        with PredictionClient(
            address, timeout=self.args.timeout, batch_size=1, max_concurrent_requests=1
        ) as client:
            for number in range(count):
                if self.stop.is_set():
                    self.record(Outcome(time.perf_counter(), 0.0, "not sent: over --max_seconds"))
                    continue
                image = self.images[(index + number * self.args.clients) % len(self.images)]
                self.record(timed_predict(client, image))

    def record(self, outcome: Outcome) -> None:
        with self.done:
            self.outcomes.append(outcome)
            self.done.notify_all()

    def restart_server(self) -> None:
        """SIGTERM and start again at evenly spaced points of the run."""
        for number in range(1, self.args.restarts + 1):
            threshold = self.args.requests * number // (self.args.restarts + 1)
            with self.done:
                self.done.wait_for(functools.partial(self.reached, threshold))
            if self.stop.is_set():
                return
            sigterm_at = time.perf_counter()
            exit_code, stop_seconds = self.server.stop()
            try:
                self.server.start()
            except RuntimeError as error:
                self.restart_error = str(error)
                self.stop.set()  # nothing will answer: end the run instead of waiting it out
                return
            serving_at = time.perf_counter()
            self.restarts.append(
                Restart(threshold, exit_code, sigterm_at, stop_seconds, serving_at)
            )

    def reached(self, count: int) -> bool:
        """Whether `count` requests are done (or the run is over); call holding `done`."""
        return len(self.outcomes) >= count or self.stop.is_set()


def timed_predict(client: PredictionClient, image: bytes) -> Outcome:
    """One Predict call of one image, timed; a failure or an invalid answer is an error."""
    started = time.perf_counter()
    try:
        (prediction,) = client.predict([image])
    except grpc.RpcError as error:
        seconds = time.perf_counter() - started
        return Outcome(started, seconds, f"{error.code().name}: {error.details()}")
    seconds = time.perf_counter() - started
    if not prediction.valid:
        return Outcome(started, seconds, "the model marked a real photo not valid")
    return Outcome(started, seconds)


def latency_line(name: str, outcomes: Sequence[Outcome]) -> str:
    """`latency (name): N requests, p50 .. ms, p99 .. ms, max .. ms`."""
    if not outcomes:
        return f"latency ({name}): no requests"
    milliseconds = np.array([outcome.seconds for outcome in outcomes]) * 1000.0
    p50, p99 = np.percentile(milliseconds, [50, 99])
    return (
        f"latency ({name}): {len(outcomes)} requests, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {milliseconds.max():.1f} ms"
    )


def print_latencies(run: LoadRun) -> None:
    """Latency of the successful requests: all, those away from restarts, those across one."""
    succeeded = [outcome for outcome in run.outcomes if not outcome.error]
    across = [o for o in succeeded if any(restart.overlaps(o) for restart in run.restarts)]
    away = [o for o in succeeded if not any(restart.overlaps(o) for restart in run.restarts)]
    groups = {"all": succeeded, "away from restarts": away, "across a restart": across}
    for name, outcomes in groups.items():
        print(latency_line(name, outcomes))


def report(run: LoadRun, wall_seconds: float) -> int:
    """Prints the figures; returns the exit code (1 if anything failed)."""
    args = run.args
    failed = [outcome for outcome in run.outcomes if outcome.error]
    print(
        f"objrec load test - development server (serving.dev_server), not TF Serving; "
        f"{os.cpu_count()} CPU cores shared by server and clients"
    )
    print(f"{args.clients} clients, {args.requests} requests, {args.restarts} restart(s)")
    for number, restart in enumerate(run.restarts, start=1):
        print(
            f"restart {number}: SIGTERM after {restart.after_requests} requests, exit code "
            f"{restart.exit_code} in {restart.stop_seconds:.1f} s, serving again after "
            f"{restart.down_seconds:.1f} s"
        )
    ok = len(run.outcomes) - len(failed)
    print(f"requests: {ok} ok, {len(failed)} failed, wall {wall_seconds:.1f} s")
    print_latencies(run)
    for error in sorted({outcome.error for outcome in failed})[:5]:
        print(f"  error: {error}")
    if run.restart_error:
        print(f"  restart failed: {run.restart_error}")
    restarts_ok = len(run.restarts) == args.restarts and all(
        restart.exit_code == 0 for restart in run.restarts
    )
    complete = len(run.outcomes) == args.requests
    return 0 if not failed and restarts_ok and complete else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", default=None, help="default: train a tiny model")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500, help="in all, over every client")
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS)
    parser.add_argument("--max_seconds", type=float, default=600.0, help="wall-time bound")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < args.clients or args.restarts < 0:
        parser.error("need clients >= 1, requests >= clients, restarts >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the load test; returns the exit code."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="objrec-load-") as work_dir:
        model_base_path = args.model_base_path or tiny_export(work_dir)
        images = sample_images(work_dir)
        log_path = os.path.join(work_dir, "server.log")
        server = ServerProcess(model_base_path, free_port(), log_path)
        try:
            print(f"server up in {server.start():.1f} s (log: {log_path})", flush=True)
            run = LoadRun(server, images, args)
            wall_seconds = run.run()
        finally:
            server.stop()
            server.kill()
        exit_code = report(run, wall_seconds)
        if exit_code:
            with open(log_path) as log:
                print("server log (last lines):\n" + "".join(log.readlines()[-30:]))
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
