"""Server-side batching (--enable_batching) merges, pads, splits and refuses as TF Serving does.

The scheduler runs a stand-in for Session.run that blocks until the test lets it go, so which
requests share a batch is decided by the state the test waits for, never by timing.
"""

import threading

import grpc
import numpy as np
import pytest

from serving.dev_server import config_files, status
from serving.dev_server.batching import BatchingOptions, BatchScheduler
from serving.dev_server.metrics import ServerMetrics
from tests.serving_fixtures import wait_for

FEED, FETCH = "input:0", "output:0"
PREFIX = ":tensorflow:serving:batching_session:"


class GatedSession:
    """Session.run that doubles its input, recording each batch, blocked until `release`."""

    def __init__(self):
        self.batches: list[np.ndarray] = []
        self.entered = threading.Semaphore(0)
        self._gate = threading.Event()

    def release(self):
        self._gate.set()

    def run(self, fetches, feeds):
        self.batches.append(feeds[FEED])
        self.entered.release()
        assert self._gate.wait(60)
        return [feeds[FEED] * 2 for _ in fetches]


def sample(metrics: ServerMetrics, name: str, labels=None) -> float:
    return metrics.registry.get_sample_value(PREFIX + name, labels or {}) or 0.0


class Caller(threading.Thread):
    """One request on its own thread; keeps its answer or its error."""

    def __init__(self, scheduler, session, values):
        super().__init__(daemon=True)
        self.scheduler, self.session, self.values = scheduler, session, values
        self.result = self.error = None
        self.start()

    def run(self):
        try:
            feeds = {FEED: np.array(self.values, np.float32)}
            self.result = self.scheduler.run(self.session, self.session.run, [FETCH], feeds)
        except Exception as error:  # noqa: BLE001 (kept for the test to assert)
            self.error = error

    def answer(self):
        self.join(60)
        assert not self.is_alive()
        return self.result, self.error


def scheduler_with(metrics=None, **options) -> BatchScheduler:
    return BatchScheduler(BatchingOptions(**{"num_batch_threads": 1, **options}), metrics)


def test_requests_that_arrive_while_the_threads_are_busy_are_merged_and_split_back():
    metrics = ServerMetrics()
    scheduler = scheduler_with(metrics, max_batch_size=8)
    session = GatedSession()
    try:
        first = Caller(scheduler, session, [1.0])
        assert session.entered.acquire(timeout=60)  # the only thread is now busy
        waiting = [Caller(scheduler, session, values) for values in ([2.0], [3.0, 4.0], [5.0])]
        wait_for(lambda: sample(metrics, "input_batch_size_count") == 4, timeout=60)
        session.release()
        assert first.answer()[0][0].tolist() == [2.0]
        answers = [caller.answer() for caller in waiting]
    finally:
        scheduler.close()
    assert [sorted(batch.tolist()) for batch in session.batches] == [[1.0], [2.0, 3.0, 4.0, 5.0]]
    assert [result[0].tolist() for result, _ in answers] == [[4.0], [6.0, 8.0], [10.0]]
    assert sample(metrics, "processed_batch_size_count") == 2
    assert sample(metrics, "processed_batch_size_bucket", {"le": "1.0"}) == 1
    assert sample(metrics, "processed_batch_size_sum") == 5
    assert sample(metrics, "wrapped_run_count") == 2


def test_a_batch_is_padded_to_the_next_allowed_size_with_copies_of_its_first_example():
    metrics = ServerMetrics()
    scheduler = scheduler_with(metrics, max_batch_size=4, allowed_batch_sizes=(2, 4))
    session = GatedSession()
    try:
        first = Caller(scheduler, session, [1.0])
        assert session.entered.acquire(timeout=60)
        waiting = [Caller(scheduler, session, [value]) for value in (7.0, 8.0, 9.0)]
        wait_for(lambda: sample(metrics, "input_batch_size_count") == 4, timeout=60)
        session.release()
        assert first.answer()[0][0].tolist() == [2.0]
        answers = sorted(caller.answer()[0][0].tolist() for caller in waiting)
    finally:
        scheduler.close()
    assert len(session.batches[0]) == 2  # 1 example, run at the allowed size 2
    merged = session.batches[1].tolist()
    assert len(merged) == 4 and merged[3] == merged[0]  # 3 examples + a copy of the first
    assert answers == [[14.0], [16.0], [18.0]]  # the padding row reaches nobody
    assert sample(metrics, "padding_size_sum", {"execution_batch_size": "4"}) == 1


def test_a_full_queue_refuses_with_tf_servings_unavailable_error():
    metrics = ServerMetrics()
    scheduler = scheduler_with(metrics, max_batch_size=2, max_enqueued_batches=1)
    session = GatedSession()
    try:
        running = Caller(scheduler, session, [1.0])
        assert session.entered.acquire(timeout=60)
        queued = Caller(scheduler, session, [2.0, 3.0])  # fills the one batch allowed to wait
        wait_for(lambda: sample(metrics, "input_batch_size_count") == 2, timeout=60)
        _, error = Caller(scheduler, session, [4.0]).answer()
        session.release()
        assert running.answer()[1] is None and queued.answer()[1] is None
    finally:
        scheduler.close()
    assert isinstance(error, status.ServingError)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.message == "The batch scheduling queue to which this task was submitted is full"


def test_a_request_over_max_batch_size_is_invalid_argument():
    scheduler = scheduler_with(max_batch_size=2)
    session = GatedSession()
    session.release()
    try:
        with pytest.raises(status.ServingError) as error:
            scheduler.run(session, session.run, [FETCH], {FEED: np.zeros(3, np.float32)})
    finally:
        scheduler.close()
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.message == "Task size 3 is larger than maximum input batch size 2"
    assert session.batches == []


def test_a_failing_batch_fails_each_of_its_requests_with_the_batchs_error():
    def failing_run(fetches, feeds):
        raise status.invalid_argument("bad image in the batch")

    scheduler = scheduler_with()
    try:
        with pytest.raises(status.ServingError, match="bad image in the batch"):
            scheduler.run("session", failing_run, [FETCH], {FEED: np.zeros(1, np.float32)})
    finally:
        scheduler.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size { value: 8 } allowed_batch_sizes: 4",
         "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; "
         "expected 8"),
        ("max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 4 "
         "allowed_batch_sizes: 8", "allowed_batch_sizes entries must be monotonically increasing"),
        ("enable_large_batch_splitting { value: true }",
         "enable_large_batch_splitting is not implemented by objrec-serve"),
        ("num_batch_threads { value: 0 }", "num_batch_threads must be positive"),
    ],
)  # fmt: skip
def test_parameters_tf_serving_refuses_are_refused_with_its_message(tmp_path, text, message):
    path = tmp_path / "batching.config"
    path.write_text(text)
    parameters = config_files.read_text_proto(
        str(path), config_files.BatchingParameters, "batching_parameters_file"
    )
    with pytest.raises(ValueError, match=message):
        BatchingOptions.from_parameters(parameters)


def test_a_field_tf_serving_does_not_know_is_a_parse_error_naming_the_file(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 8 }\nmax_batch_sise { value: 8 }\n")
    with pytest.raises(ValueError, match=rf"--batching_parameters_file {path} is not a text"):
        config_files.read_batching_parameters(str(path))


def test_unset_parameters_take_tf_servings_defaults():
    options = BatchingOptions.from_parameters(config_files.read_batching_parameters(None))
    assert options.max_batch_size == 1000
    assert options.max_enqueued_batches == 10
    assert options.batch_timeout_micros == 0
    assert options.thread_pool_name == "model_server_batch_threads"
