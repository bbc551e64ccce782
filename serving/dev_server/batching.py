"""Server-side batching as TF Serving's `--enable_batching` does it.

TF Serving wraps each model's Session in a BatchingSession over a SharedBatchScheduler:
concurrent Run calls with the same feeds and fetches wait in one queue, and `num_batch_threads`
threads each take the oldest batch, merge its requests along dimension 0, pad the merged batch
to the next `allowed_batch_sizes` entry (with copies of the first example), run the Session
once and split the outputs back. The queue semantics follow shared_batch_scheduler.h:

- a request joins the open batch when it fits in `max_batch_size`, else a new batch opens;
  when `max_enqueued_batches` batches are already waiting, it is refused with UNAVAILABLE
  "The batch scheduling queue to which this task was submitted is full";
- a batch is taken as soon as a thread is free and it is full, closed (a newer batch opened
  behind it) or has waited `batch_timeout_micros`; with a timeout of 0 it is taken at once,
  so batches form only from requests that arrive while every thread is busy;
- a request larger than `max_batch_size` is refused with INVALID_ARGUMENT (TF Serving splits
  it only with `enable_large_batch_splitting`, which this server refuses).
"""

import collections
import dataclasses
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent import futures

import grpc
import numpy as np

from serving.dev_server import status
from serving.dev_server.metrics import MICROS, ServerMetrics

# SharedBatchScheduler::QueueOptions' defaults, for fields the parameters leave unset.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_MAX_ENQUEUED_BATCHES = 10
DEFAULT_THREAD_POOL_NAME = "batch_threads"

Feeds = dict[str, np.ndarray]
SessionRun = Callable[[Sequence[str], Feeds], list[np.ndarray]]


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """The BatchingParameters fields this server implements, with defaults filled in."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME
    allowed_batch_sizes: tuple[int, ...] = ()

    @classmethod
    def from_parameters(cls, parameters) -> "BatchingOptions":
        """A BatchingParameters message (config_files.py) → options, checked as TF Serving does.

        Raises:
            ValueError: a value TF Serving refuses, or a field this server does not implement.
        """
        if parameters.HasField("enable_large_batch_splitting") and (
            parameters.enable_large_batch_splitting.value
        ):
            raise ValueError(
                "BatchingParameters.enable_large_batch_splitting is not implemented by "
                "objrec-serve: remove it, or keep requests within max_batch_size"
            )
        if parameters.pad_variable_length_inputs:
            raise ValueError(
                "BatchingParameters.pad_variable_length_inputs is not implemented by "
                "objrec-serve: objrec's inputs have no variable-length dimension to pad"
            )
        defaults = cls()
        options = cls(
            max_batch_size=_wrapped(parameters, "max_batch_size", defaults.max_batch_size),
            batch_timeout_micros=_wrapped(parameters, "batch_timeout_micros", 0),
            max_enqueued_batches=_wrapped(
                parameters, "max_enqueued_batches", defaults.max_enqueued_batches
            ),
            num_batch_threads=_wrapped(parameters, "num_batch_threads", defaults.num_batch_threads),
            thread_pool_name=_wrapped(parameters, "thread_pool_name", DEFAULT_THREAD_POOL_NAME),
            allowed_batch_sizes=tuple(parameters.allowed_batch_sizes),
        )
        options.check()
        return options

    def check(self) -> None:
        """TF Serving's checks of the parameters (bundle_factory_util.cc, batching_session.cc).

        Raises:
            ValueError: with TF Serving's message.
        """
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"BatchingParameters.{name} must be positive")
        if self.batch_timeout_micros < 0:
            raise ValueError("BatchingParameters.batch_timeout_micros must be non-negative")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(later <= earlier for earlier, later in itertools.pairwise(sizes)):
                raise ValueError("allowed_batch_sizes entries must be monotonically increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    "Last entry in allowed_batch_sizes must match max_batch_size; last "
                    f"entry was {sizes[-1]}; expected {self.max_batch_size}"
                )

    def execution_size(self, size: int) -> int:
        """The batch size a merged batch of `size` examples runs at (padding included)."""
        for allowed in self.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


def _wrapped(parameters, field: str, default):
    return getattr(parameters, field).value if parameters.HasField(field) else default


@dataclasses.dataclass
class _Task:
    """One Run call waiting in a queue."""

    feeds: Feeds
    size: int
    enqueued_at: float
    result: futures.Future = dataclasses.field(default_factory=futures.Future)


@dataclasses.dataclass
class _Batch:
    tasks: list[_Task] = dataclasses.field(default_factory=list)
    size: int = 0
    opened_at: float = 0.0


class _Queue:
    """The batches of one (session, feeds, fetches): oldest first, the last one open."""

    def __init__(self, run: SessionRun, fetches: tuple[str, ...]):
        self.run = run
        self.fetches = fetches
        self.batches: collections.deque[_Batch] = collections.deque()


class BatchScheduler:
    """Merges concurrent Run calls into batches and runs them on `num_batch_threads` threads.

    One scheduler serves every model of a server (TF Serving's shared scheduler): each
    (session, feed names, fetch names) has its own queue, and the threads serve the queues in
    turn.
    """

    def __init__(self, options: BatchingOptions, metrics: ServerMetrics | None = None):
        options.check()
        self.options = options
        self._metrics = metrics
        self._condition = threading.Condition()
        self._queues: dict[Hashable, _Queue] = {}
        self._closed = False
        self._threads = [
            threading.Thread(
                target=self._work, name=f"{options.thread_pool_name}-{index}", daemon=True
            )
            for index in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def run(
        self, session: Hashable, run: SessionRun, fetches: Sequence[str], feeds: Feeds
    ) -> list[np.ndarray]:
        """Runs `fetches` on `feeds` as part of a batch; blocks until its part is back.

        Inputs without a batch dimension, or whose batch dimensions differ, cannot be merged:
        they run on their own, as TF Serving runs a call that matches no batched signature.

        Raises:
            status.ServingError: INVALID_ARGUMENT for a request over max_batch_size,
                UNAVAILABLE when the queue is full, or the batch's own error.
        """
        size = batch_dimension(feeds)
        if size is None:
            return run(list(fetches), feeds)
        if size > self.options.max_batch_size:
            raise status.invalid_argument(
                f"Task size {size} is larger than maximum input batch size "
                f"{self.options.max_batch_size}"
            )
        ordered = tuple(sorted(set(fetches)))
        task = _Task(feeds=feeds, size=size, enqueued_at=time.monotonic())
        key = (session, tuple(sorted(feeds)), ordered)
        with self._condition:
            if self._closed:
                raise status.ServingError(grpc.StatusCode.UNAVAILABLE, "Server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(run, ordered)
            self._enqueue(queue, task)
            self._condition.notify()
        if self._metrics is not None:
            self._metrics.input_batch_size.observe(size)
        outputs = task.result.result()
        by_name = dict(zip(ordered, outputs, strict=True))
        return [by_name[name] for name in fetches]

    def close(self) -> None:
        """Runs the batches already queued, then stops the threads."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join()

    def _enqueue(self, queue: _Queue, task: _Task) -> None:
        batches = queue.batches
        if not batches or batches[-1].size + task.size > self.options.max_batch_size:
            if len(batches) >= self.options.max_enqueued_batches:
                raise status.ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full",
                )
            batches.append(_Batch(opened_at=task.enqueued_at))
        batch = batches[-1]
        batch.tasks.append(task)
        batch.size += task.size

    def _work(self) -> None:
        while True:
            with self._condition:
                taken = self._take()
                while taken is None:
                    if self._closed and not self._queues:
                        return
                    self._condition.wait(timeout=self._next_timeout())
                    taken = self._take()
            self._process(*taken)

    def _take(self) -> tuple[_Queue, _Batch] | None:
        """The oldest schedulable batch of any queue, removed from it (lock held)."""
        now = time.monotonic()
        timeout = self.options.batch_timeout_micros / MICROS
        for key, queue in list(self._queues.items()):
            batch = queue.batches[0]
            ready = (
                len(queue.batches) > 1
                or batch.size >= self.options.max_batch_size
                or now - batch.opened_at >= timeout
                or self._closed
            )
            if ready:
                queue.batches.popleft()
                if not queue.batches:
                    del self._queues[key]  # no queue outlives its requests (or its session)
                else:
                    # Round robin: the next thread looks at the other queues first.
                    self._queues[key] = self._queues.pop(key)
                return queue, batch
        return None

    def _next_timeout(self) -> float | None:
        """Seconds until the first open batch times out; None waits for a new request."""
        if not self._queues:
            return None
        timeout = self.options.batch_timeout_micros / MICROS
        oldest = min(queue.batches[0].opened_at for queue in self._queues.values())
        return max(0.0, oldest + timeout - time.monotonic())

    def _process(self, queue: _Queue, batch: _Batch) -> None:
        started = time.monotonic()
        execution_size = self.options.execution_size(batch.size)
        if self._metrics is not None:
            self._metrics.processed_batch_size.observe(execution_size)
            self._metrics.padding_size.labels(str(execution_size)).observe(
                execution_size - batch.size
            )
            self._metrics.wrapped_run_count.inc()
            for task in batch.tasks:
                self._metrics.queuing_latency.labels(self.options.thread_pool_name).observe(
                    (started - task.enqueued_at) * MICROS
                )
        try:
            feeds = merge_feeds([task.feeds for task in batch.tasks], execution_size)
            outputs = queue.run(list(queue.fetches), feeds)
            parts = split_outputs(outputs, [task.size for task in batch.tasks], execution_size)
        except Exception as error:  # every request of the batch gets the batch's error
            if not isinstance(error, status.ServingError):
                logging.exception("A batch of %d failed", batch.size)
            for task in batch.tasks:
                task.result.set_exception(error)
            return
        for task, part in zip(batch.tasks, parts, strict=True):
            task.result.set_result(part)


def batch_dimension(feeds: Feeds) -> int | None:
    """The common size of every input's dimension 0, or None when there is none."""
    sizes = {value.shape[0] if value.ndim else None for value in feeds.values()}
    if len(sizes) != 1 or None in sizes:
        return None
    return sizes.pop()


def merge_feeds(all_feeds: Sequence[Feeds], execution_size: int) -> Feeds:
    """The tasks' inputs concatenated along dimension 0, padded with copies of the first
    example up to `execution_size` (TF Serving pads the same way)."""
    merged = {}
    for name in all_feeds[0]:
        values = [feeds[name] for feeds in all_feeds]
        padding = execution_size - sum(len(value) for value in values)
        if padding:
            values.append(np.repeat(values[0][:1], padding, axis=0))
        merged[name] = np.concatenate(values, axis=0)
    return merged


def split_outputs(
    outputs: Sequence[np.ndarray], sizes: Sequence[int], execution_size: int
) -> list[list[np.ndarray]]:
    """Each task's rows of every output; the padding rows are dropped.

    Raises:
        status.ServingError: INTERNAL when an output is not batch-major, so it cannot be split.
    """
    for output in outputs:
        if output.ndim == 0 or output.shape[0] != execution_size:
            raise status.ServingError(
                grpc.StatusCode.INTERNAL,
                f"Batched output tensor has shape {list(output.shape)}, but the batch has "
                f"{execution_size} examples: every output must have the batch as dimension 0 "
                "(or serve without --enable_batching)",
            )
    offsets = np.cumsum([0, *sizes])
    return [[output[start:end] for output in outputs] for start, end in itertools.pairwise(offsets)]
